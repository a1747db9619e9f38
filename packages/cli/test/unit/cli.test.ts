import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { EXIT, run, type CliIo } from '@ephemera/cli';
import { exitCodeFor } from '../../src/exit-codes.js';
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
