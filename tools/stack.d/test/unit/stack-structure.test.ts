// The dev stack's structure (issue 17, item 8): small modules, one per service, node built-ins
// only, and a libvirtd module that can run several instances (one per compute host).
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const ROOT = resolve(fileURLToPath(new URL('../../../..', import.meta.url)));
const TOOLS = join(ROOT, 'tools');
const SOURCE = /\.(mjs|cjs|js|ts|sh|asm)$/;

/** Source files under tools/ (scripts without an extension count when they start with #!). */
function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) {
      if (!['node_modules', 'dist', 'build'].includes(e.name)) out.push(...sourceFiles(p));
    } else if (
      e.isFile() &&
      (SOURCE.test(e.name) || (!e.name.includes('.') && readFileSync(p, 'utf8').startsWith('#!')))
    ) {
      out.push(p);
    }
  }
  return out;
}

const tmp: string[] = [];
afterAll(() => {
  for (const d of tmp) rmSync(d, { recursive: true, force: true });
});

describe('tools/ structure', () => {
  it('has no source file over 600 lines', () => {
    const files = sourceFiles(TOOLS);
    expect(files.map((f) => relative(ROOT, f))).toContain('tools/stack');
    const long = files
      .map((f) => ({ file: relative(ROOT, f), lines: readFileSync(f, 'utf8').split('\n').length - 1 }))
      .filter((x) => x.lines > 600);
    expect(long).toEqual([]);
  });

  it('splits the dev stack by service, and its modules import only node built-ins (it runs before npm ci)', () => {
    const dir = join(TOOLS, 'lib', 'stack');
    const modules = readdirSync(dir)
      .filter((f) => f.endsWith('.mjs'))
      .sort();
    expect(modules).toEqual(expect.arrayContaining(['ceph.mjs', 'glance.mjs', 'libvirtd.mjs', 'stack.mjs']));
    const foreign: string[] = [];
    for (const file of [join(TOOLS, 'lib', 'stack.mjs'), ...modules.map((m) => join(dir, m))]) {
      const text = readFileSync(file, 'utf8');
      for (const m of text.matchAll(
        /^\s*(?:import|export)\b[^'"]*?\bfrom\s+['"]([^'"]+)['"]|\bimport\(\s*['"]([^'"]+)['"]/gm,
      )) {
        const spec = m[1] ?? m[2];
        if (!spec.startsWith('node:') && !spec.startsWith('./') && !spec.startsWith('../'))
          foreign.push(`${relative(ROOT, file)}: ${spec}`);
      }
    }
    expect(foreign).toEqual([]);
  });
});

describe('tools/lib/stack/libvirtd.mjs', () => {
  it('configures several libvirtd instances side by side, each naming only its own paths', async () => {
    const lib = await import(join(TOOLS, 'lib', 'stack', 'libvirtd.mjs'));
    const base = mkdtempSync(join(tmpdir(), 'eph-lv-'));
    tmp.push(base);
    const hosts = ['host-0', 'host-1'].map((h) => lib.libvirtdPaths(join(base, h, 'libvirt'), join(base, h, 'log')));
    for (const h of hosts) lib.writeLibvirtConfig(h);
    expect(new Set(hosts.map((h) => h.uri)).size).toBe(2);
    hosts.forEach((h, i) => {
      const other = hosts[1 - i];
      expect(h.uri).toBe(`qemu+unix:///system?socket=${join(h.root, 'sock', 'libvirt-sock')}`);
      const conf = readFileSync(join(h.root, 'etc', 'libvirtd.conf'), 'utf8');
      expect(conf).toContain(`unix_sock_dir = "${join(h.root, 'sock')}"`);
      expect(conf).toContain(`log_outputs = "3:file:${join(base, `host-${i}`, 'log', 'libvirtd.log')}"`);
      expect(conf).not.toContain(other.root);
      for (const d of ['etc', 'run', 'lib', 'cache', 'log', 'sock'])
        expect(statSync(join(h.root, d)).isDirectory()).toBe(true);
      expect(lib.libvirtdLogs(h)).toEqual([
        join(base, `host-${i}`, 'log', 'libvirtd.log'),
        join(base, `host-${i}`, 'log', 'libvirtd.out'),
      ]);
    });
  });

  it('refuses a root whose socket path is too long for a unix socket, naming EPHEMERA_STACK_DIR', async () => {
    const lib = await import(join(TOOLS, 'lib', 'stack', 'libvirtd.mjs'));
    const base = mkdtempSync(join(tmpdir(), 'eph-lv-'));
    tmp.push(base);
    const root = join(base, 'x'.repeat(100));
    expect(() => lib.writeLibvirtConfig(lib.libvirtdPaths(root))).toThrow(/socket path too long.*EPHEMERA_STACK_DIR/);
  });
});
