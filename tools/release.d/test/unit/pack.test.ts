// Issue 20, item 1: every public package packs into a tarball a user can install: dist/ with
// types, the LICENSE, `repository` (with `directory`), `sideEffects`, `files`, a prepack that
// builds; the addons with their prebuilt binary; publint and @arethetypeswrong find nothing.
// The tarballs are made and checked by the release script (`tools/release pack` and `check`),
// in child processes, as a release does.
import { execFile, execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

interface Packed {
  name: string;
  version: string;
  file: string;
  size: number;
  unpackedSize: number;
  files: string[];
}

const repo = fileURLToPath(new URL('../../../../', import.meta.url));
const work = mkdtempSync(join(tmpdir(), 'ephemera-pack-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));
let packed: Packed[] = [];

const ADDONS: Record<string, string> = {
  '@ephemera/ceph-rbd-napi': 'ceph_rbd_napi.node',
  '@ephemera/libvirt-napi': 'ephemera_libvirt.node',
};

function manifestIn(tarball: string): Record<string, unknown> {
  return JSON.parse(
    execFileSync('tar', ['-xzOf', tarball, 'package/package.json'], { encoding: 'utf8', timeout: 30_000 }),
  );
}

/** `tools/release check DIR`: resolves with its stderr, rejects with it on findings. */
function check(dir: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('bash', [join(repo, 'tools/release'), 'check', dir], { timeout: 300_000 }, (err, _out, stderr) =>
      err ? reject(new Error(`tools/release check: ${err.message}\n${stderr}`)) : resolve(String(stderr)),
    );
  });
}

beforeAll(async () => {
  const out = await new Promise<string>((resolve, reject) => {
    execFile(
      'bash',
      [join(repo, 'tools/release'), 'pack', '--out', join(work, 'tarballs')],
      { timeout: 900_000, maxBuffer: 64 << 20 },
      (err, stdout, stderr) =>
        err ? reject(new Error(`tools/release pack: ${err.message}\n${stderr}`)) : resolve(String(stdout)),
    );
  });
  packed = out
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Packed);
  // The sizes, for the note (`npm test` output).
  for (const p of packed) console.log(`${p.name}@${p.version}: ${(p.size / 1024).toFixed(1)} KiB packed`);
}, 900_000);

describe('the public packages as tarballs', () => {
  it('packs every non-private package under packages/', () => {
    const dirs = readdirSync(join(repo, 'packages')).filter(
      (d) => !JSON.parse(readFileSync(join(repo, 'packages', d, 'package.json'), 'utf8')).private,
    );
    expect(packed.map((p) => p.name).sort()).toEqual(dirs.map((d) => `@ephemera/${d}`).sort());
    // Dependencies first, so that a publish in this order never refers to a missing version.
    const at = (n: string) => packed.findIndex((p) => p.name === n);
    expect(at('@ephemera/image-backend')).toBeLessThan(at('@ephemera/backend-rbd'));
    expect(at('@ephemera/ceph-rbd-napi')).toBeLessThan(at('@ephemera/backend-rbd'));
    expect(at('@ephemera/backend-rbd')).toBeLessThan(at('@ephemera/driver'));
    expect(at('@ephemera/driver')).toBeLessThan(at('@ephemera/cli'));
  });

  it('each ships dist/ with types, LICENSE, README, repository with directory, sideEffects and files', () => {
    const license = readFileSync(join(repo, 'LICENSE'), 'utf8');
    expect(license).toContain('Apache License');
    for (const p of packed) {
      const dir = p.name.replace('@ephemera/', '');
      expect(p.files, p.name).toEqual(
        expect.arrayContaining(['package.json', 'README.md', 'LICENSE', 'dist/index.js', 'dist/index.d.ts']),
      );
      // Sources and tests stay home.
      expect(
        p.files.filter((f) => /^(src|test|etc)\//.test(f) || f.endsWith('.test.ts')),
        p.name,
      ).toEqual([]);
      expect(execFileSync('tar', ['-xzOf', p.file, 'package/LICENSE'], { encoding: 'utf8' })).toBe(license);
      const m = manifestIn(p.file);
      expect(m.license, p.name).toBe('Apache-2.0');
      expect(m.repository, p.name).toMatchObject({ type: 'git', directory: `packages/${dir}` });
      expect(m.sideEffects, p.name).toBeDefined();
      expect(m.files, p.name).toEqual(expect.arrayContaining(['dist']));
      expect((m.scripts as Record<string, string>).prepack, p.name).toBe('node ../../tools/lib/prepack.mjs');
    }
  });

  it('the addons ship a prebuilt linux-x64 binary and an install script that compiles only without one', () => {
    for (const [name, file] of Object.entries(ADDONS)) {
      const p = packed.find((x) => x.name === name);
      expect(p?.files, name).toEqual(
        expect.arrayContaining([`prebuilds/linux-x64/${file}`, 'scripts/install.cjs', 'binding.gyp']),
      );
      expect((manifestIn(p?.file ?? '').scripts as Record<string, string>).install).toBe('node scripts/install.cjs');
    }
    const others = packed.filter((p) => !(p.name in ADDONS));
    expect(others.flatMap((p) => p.files.filter((f) => f.endsWith('.node')))).toEqual([]);
  });

  it('publint (strict) and @arethetypeswrong (esm-only profile) find nothing in any tarball', async () => {
    await expect(check(join(work, 'tarballs'))).resolves.toContain('publint and attw: no findings');
  }, 300_000);

  it('the checks do find a broken package (types and exports that are not in the tarball)', async () => {
    const pkg = join(work, 'broken');
    mkdirSync(join(pkg, 'dist'), { recursive: true });
    writeFileSync(join(pkg, 'dist', 'index.js'), 'export const x = 1;\n');
    writeFileSync(
      join(pkg, 'package.json'),
      JSON.stringify({
        name: 'broken-pkg',
        version: '1.0.0',
        type: 'module',
        types: './dist/index.d.ts',
        exports: { '.': { types: './dist/index.d.ts', default: './dist/index.js' } },
      }),
    );
    const out = join(work, 'broken-tgz');
    mkdirSync(out);
    execFileSync('npm', ['pack', '--ignore-scripts', '--pack-destination', out], {
      cwd: pkg,
      timeout: 60_000,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    await expect(check(out)).rejects.toThrow(/broken-pkg-1\.0\.0\.tgz:\s+publint error[\s\S]*attw/);
  }, 120_000);

  it("a package's own prepack builds dist/ and copies the LICENSE (npm pack in the package)", () => {
    const out = join(work, 'own');
    mkdirSync(out);
    // A copy of the package in a repository-shaped temp dir: packing in place would rewrite the dist/
    // that other test files are importing at the same time. prepack.mjs finds the repository (LICENSE,
    // tsc) through the tools/ symlink; the copy has no LICENSE, so this pack must make its own.
    const fake = join(work, 'repo');
    const dir = join(fake, 'packages', 'libvirt-xml');
    mkdirSync(dir, { recursive: true });
    for (const f of ['tools', 'node_modules', 'tsconfig.base.json']) symlinkSync(join(repo, f), join(fake, f));
    for (const f of ['src', 'package.json', 'tsconfig.build.json', 'README.md']) {
      cpSync(join(repo, 'packages', 'libvirt-xml', f), join(dir, f), { recursive: true });
    }
    const json = execFileSync('npm', ['pack', '--json', '--pack-destination', out], {
      cwd: dir,
      encoding: 'utf8',
      timeout: 300_000,
      env: { ...process.env, NODE_OPTIONS: '' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const [info] = JSON.parse(json) as { files: { path: string }[]; filename: string }[];
    expect(info?.files.map((f) => f.path)).toEqual(
      expect.arrayContaining(['LICENSE', 'dist/index.js', 'dist/index.d.ts']),
    );
  }, 300_000);
});
