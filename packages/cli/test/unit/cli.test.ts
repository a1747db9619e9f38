import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { PassThrough } from 'node:stream';
import { describe, expect, it, onTestFinished } from 'vitest';
import { EXIT, run, type CliIo } from '@ephemera/cli';
import { DRIVER_ERROR_CODES } from '@ephemera/driver';
import { GLANCE_ERROR_CODES } from '@ephemera/glance';
import { IMAGE_BACKEND_ERROR_CODES } from '@ephemera/image-backend';
import { LIBVIRT_XML_ERROR_CODES } from '@ephemera/libvirt-xml';
import { EXIT_CODE_BY_ERROR, exitCodeFor } from '../../src/exit-codes.js';
import { FLAVORS, parseFlavor } from '../../src/flavors.js';
import { ProgressBar, bytes } from '../../src/progress.js';

function io(env: Record<string, string> = {}): CliIo & { out: () => string; err: () => string } {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let o = '';
  let e = '';
  stdout.on('data', (d) => (o += String(d)));
  stderr.on('data', (d) => (e += String(d)));
  return { stdout, stderr, env: { EPHEMERA_STACK_DIR: '/nonexistent', ...env }, out: () => o, err: () => e };
}

describe('ephemera CLI (no stack needed)', () => {
  it('--help lists every command, examples and exit codes', async () => {
    const x = io();
    expect(await run(['--help'], x)).toBe(EXIT.OK);
    for (const c of ['stack', 'image', 'boot', 'list', 'console', 'destroy', 'snapshot', 'gc', 'reconcile']) expect(x.out()).toContain(c);
    expect(x.out()).toContain('Examples:');
    expect(x.out()).toContain('Exit codes:');
  });

  it('usage errors exit 2, with a JSON error under --json', async () => {
    const a = io();
    expect(await run(['frobnicate'], a)).toBe(EXIT.USAGE);
    const b = io();
    expect(await run(['boot', '--name', 'x', '--json'], b)).toBe(EXIT.USAGE);
    expect(JSON.parse(b.out()).error.code).toBe('commander.missingMandatoryOptionValue');
    const c = io();
    expect(await run(['boot', '--image', 'i', '--name', 'x', '--flavor', 'nope', '--json'], c)).toBe(EXIT.USAGE);
    expect(JSON.parse(c.out())).toEqual({ error: { code: 'INVALID_ARGUMENT', message: expect.stringContaining('unknown flavor') } });
  });

  it('a bad configuration exits 3 and names the option', async () => {
    const x = io({ EPHEMERA_IMAGES_TYPE: 'zfs' });
    expect(await run(['config', '--no-stack'], x)).toBe(EXIT.CONFIG);
    expect(x.err()).toContain('images.type');
  });

  it('config prints the effective configuration with secrets redacted', async () => {
    const x = io({ EPHEMERA_GLANCE_AUTH: 'token', EPHEMERA_GLANCE_TOKEN: 'sekrit-token' });
    expect(await run(['config', '--no-stack', '--state-dir', '/tmp/eph-x'], x)).toBe(EXIT.OK);
    const c = JSON.parse(x.out());
    expect(c.stateDir).toBe('/tmp/eph-x');
    expect(c.glance.token).toBe('***');
    expect(x.out()).not.toContain('sekrit');
  });

  it('maps driver and backend error codes to exit codes', () => {
    expect(exitCodeFor({ code: 'INSTANCE_NOT_FOUND' })).toBe(EXIT.NOT_FOUND);
    expect(exitCodeFor({ code: 'INSTANCE_EXISTS' })).toBe(EXIT.CONFLICT);
    expect(exitCodeFor({ code: 'IMAGE_UNUSABLE' })).toBe(EXIT.IMAGE_UNUSABLE);
    expect(exitCodeFor({ code: 'ROLLBACK_FAILED' })).toBe(EXIT.PARTIAL);
    expect(exitCodeFor({ code: 'UNSUPPORTED_OPERATION' })).toBe(EXIT.UNSUPPORTED);
    expect(exitCodeFor(new Error('x'))).toBe(EXIT.FAILURE);
  });

  it('parses flavors', () => {
    expect(parseFlavor('e1.nano')).toEqual(FLAVORS['e1.nano']);
    expect(parseFlavor('vcpus=2,ram=128,root=1,ephemeral=2,swap=8')).toEqual({ name: 'custom', vcpus: 2, memoryMiB: 128, rootGiB: 1, ephemeralGiB: 2, swapMiB: 8 });
    expect(() => parseFlavor('vcpus=x')).toThrow(/bad flavor part/);
    expect(() => parseFlavor('ram=64,gpu=1')).toThrow(/bad flavor part/);
  });

  it('progress bar: one line per 10 % without a TTY; bytes()', () => {
    const s = new PassThrough();
    let o = '';
    s.on('data', (d) => (o += String(d)));
    const bar = new ProgressBar('x', s);
    for (let p = 0; p <= 100; p += 1) bar.update(p);
    bar.done();
    expect(o.trim().split('\n')).toHaveLength(11);
    expect(bytes(1536)).toBe('1.5 KiB');
    expect(bytes(undefined)).toBe('?');
  });
});

describe('ephemera config --reference / --schema', () => {
  it('prints the option reference (the generator of docs/configuration.md) and the schema', async () => {
    const a = io();
    expect(await run(['config', '--reference'], a)).toBe(EXIT.OK);
    expect(a.out()).toContain('| `images.rbd.pool` |');
    expect(a.out()).toContain('[libvirt] images_rbd_pool');
    const b = io();
    expect(await run(['config', '--schema'], b)).toBe(EXIT.OK);
    const schema = JSON.parse(b.out());
    expect(schema.find((o: { key: string }) => o.key === 'images.type')).toMatchObject({ env: 'EPHEMERA_IMAGES_TYPE', default: 'rbd' });
  });
});

describe('exit codes: one table for every error code of every package', () => {
  const packages: Record<string, readonly string[]> = {
    '@ephemera/driver': DRIVER_ERROR_CODES,
    '@ephemera/glance': GLANCE_ERROR_CODES,
    '@ephemera/image-backend': IMAGE_BACKEND_ERROR_CODES,
    '@ephemera/libvirt-xml': LIBVIRT_XML_ERROR_CODES,
  };
  /** The "Exit codes:" paragraph of a text, up to the next blank line. */
  const section = (text: string): string => /Exit codes:([\s\S]*?)(\n\s*\n|$)/.exec(text)?.[1] ?? '';

  it('every code is in the table and maps to an exit code documented in --help and the README', async () => {
    const h = io();
    expect(await run(['--help'], h)).toBe(EXIT.OK);
    const help = section(h.out());
    const readme = section(readFileSync(resolve(import.meta.dirname, '../../README.md'), 'utf8'));
    const documented = new Set(Object.values(EXIT));
    let walked = 0;
    for (const [pkg, codes] of Object.entries(packages)) {
      expect(codes.length, pkg).toBeGreaterThan(0);
      for (const code of codes) {
        walked++;
        expect(Object.hasOwn(EXIT_CODE_BY_ERROR, code), `${pkg} ${code} is not in the exit-code table`).toBe(true);
        const exit = exitCodeFor(Object.assign(new Error('x'), { code }));
        expect(exit).toBe(EXIT_CODE_BY_ERROR[code]);
        expect(documented.has(exit as (typeof EXIT)[keyof typeof EXIT]), `${code} -> ${exit}`).toBe(true);
        expect(help, `exit ${exit} (${code}) in --help`).toMatch(new RegExp(`(^|[\\s,])${exit} [a-z]`));
        expect(readme, `exit ${exit} (${code}) in the README`).toContain(`\`${exit}\``);
      }
    }
    expect(walked).toBeGreaterThan(40);
  });

  it('Glance connection errors and timeouts are "unreachable service" (3); Glance not found 4, conflict 5', () => {
    expect(exitCodeFor({ code: 'GLANCE_CONNECTION' })).toBe(EXIT.CONFIG);
    expect(exitCodeFor({ code: 'GLANCE_TIMEOUT' })).toBe(EXIT.CONFIG);
    expect(exitCodeFor({ code: 'GLANCE_AUTH' })).toBe(EXIT.CONFIG);
    expect(exitCodeFor({ code: 'GLANCE_NOT_FOUND' })).toBe(EXIT.NOT_FOUND);
    expect(exitCodeFor({ code: 'GLANCE_CONFLICT' })).toBe(EXIT.CONFLICT);
    expect(exitCodeFor({ code: 'GLANCE_NO_PLAN' })).toBe(EXIT.IMAGE_UNUSABLE);
    expect(exitCodeFor({ code: 'BACKEND_UNAVAILABLE' })).toBe(EXIT.CONFIG);
  });

  it('a generic wrapper (SPAWN_FAILED) takes the exit code of an unreachable service or timeout in its cause', () => {
    const glanceDown = Object.assign(new Error('spawn failed'), { code: 'SPAWN_FAILED', cause: Object.assign(new Error('refused'), { code: 'GLANCE_CONNECTION' }) });
    expect(exitCodeFor(glanceDown)).toBe(EXIT.CONFIG);
    const notFoundInside = Object.assign(new Error('spawn failed'), { code: 'SPAWN_FAILED', cause: Object.assign(new Error('x'), { code: 'NOT_FOUND' }) });
    expect(exitCodeFor(notFoundInside)).toBe(EXIT.FAILURE);
    expect(exitCodeFor({ code: 'ENOENT' })).toBe(EXIT.FAILURE);
    expect(exitCodeFor({ code: 42 })).toBe(EXIT.FAILURE);
  });
});

describe('--version and the log level', () => {
  it('--version and -V print the package version, exit 0', async () => {
    const { version } = JSON.parse(readFileSync(resolve(import.meta.dirname, '../../package.json'), 'utf8')) as { version: string };
    for (const flag of ['--version', '-V']) {
      const x = io();
      expect(await run([flag], x)).toBe(EXIT.OK);
      expect(x.out().trim()).toBe(version);
    }
  });

  it('log.level precedence: --log-level > EPHEMERA_LOG_LEVEL > the file > the CLI default (warn)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'eph-cli-'));
    onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'c.json');
    writeFileSync(file, JSON.stringify({ log: { level: 'error' } }));
    const level = async (env: Record<string, string>, ...args: string[]): Promise<string> => {
      const x = io(env);
      expect(await run(['--no-stack', ...args, 'config'], x), x.err()).toBe(EXIT.OK);
      return JSON.parse(x.out()).log.level;
    };
    expect(await level({})).toBe('warn');
    expect(await level({}, '--config', file)).toBe('error');
    expect(await level({ EPHEMERA_CONFIG: file })).toBe('error');
    expect(await level({ EPHEMERA_LOG_LEVEL: 'info' }, '--config', file)).toBe('info');
    expect(await level({ EPHEMERA_LOG_LEVEL: 'info' }, '--config', file, '--log-level', 'debug')).toBe('debug');
  });
});
