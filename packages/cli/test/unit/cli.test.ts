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
import { QEMU_IMG_ERROR_CODES } from '@ephemera/qemu-img-wrapper';
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
    for (const c of [
      'stack',
      'image',
      'boot',
      'list',
      'console',
      'destroy',
      'snapshot',
      'migrate',
      'evacuate',
      'gc',
      'reconcile',
    ])
      expect(x.out()).toContain(c);
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
    expect(JSON.parse(c.out())).toEqual({
      error: { code: 'INVALID_ARGUMENT', message: expect.stringContaining('unknown flavor') },
    });
  });

  it('a bad configuration exits 3 and names the option', async () => {
    const x = io({ EPHEMERA_IMAGES_TYPE: 'zfs' });
    expect(await run(['config', '--no-stack'], x)).toBe(EXIT.CONFIG);
    expect(x.err()).toContain('images.type');
  });

  it('config shows the host id (from EPHEMERA_HOST_ID, or the default)', async () => {
    const x = io({ EPHEMERA_HOST_ID: 'compute-a' });
    expect(await run(['config', '--no-stack'], x), x.err()).toBe(EXIT.OK);
    expect(JSON.parse(x.out()).host).toEqual({ id: 'compute-a' });
    const y = io({ EPHEMERA_HOST_ID: 'no spaces' });
    expect(await run(['config', '--no-stack'], y)).toBe(EXIT.CONFIG);
    expect(y.err()).toContain('host.id');
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

  it('migrate: usage errors before any driver connects (no destination, unknown host, bad numbers)', async () => {
    const cases: [string[], RegExp][] = [
      [['migrate', 'vm1'], /give the destination: --to <host> or --to-config FILE/],
      [['migrate', 'vm1', '--to', '2'], /no dev stack \(stack.json\) to find hosts in; give --to-config FILE/],
      [['migrate', 'vm1', '--to', '2', '--timeout', '0'], /--timeout must be a positive integer/],
      [['migrate', 'vm1', '--to', '2', '--bandwidth', 'x'], /--bandwidth must be a positive integer/],
    ];
    for (const [args, message] of cases) {
      const x = io();
      expect(await run(args, x)).toBe(EXIT.USAGE);
      expect(x.err()).toMatch(message);
    }
  });

  it('evacuate: usage errors before any driver connects (missing --from/--from-uri, bad ids, bad numbers, no stack)', async () => {
    const U = '5f0c1c8e-3f7a-4d2b-9a51-0e2b7c9d4a11';
    const cases: [string[], RegExp][] = [
      [['evacuate', U, '--from-uri', 'qemu:///x'], /required option '--from <host-id>' not specified/],
      [['evacuate', U, '--from', 'h2'], /required option '--from-uri <uri>' not specified/],
      [['evacuate', 'vm1', '--from', 'h2', '--from-uri', 'qemu:///x'], /not an instance UUID: "vm1"/],
      [['evacuate', U, '--from', 'bad host', '--from-uri', 'qemu:///x'], /--from: not a host id: "bad host"/],
      [
        ['evacuate', U, '--from', 'h2', '--from-uri', 'qemu:///x', '--probe-timeout', '0'],
        /--probe-timeout must be a positive integer/,
      ],
      [
        ['evacuate', U, '--from', 'h2', '--from-uri', '2'],
        /--from-uri "2": no dev stack \(stack.json\) to find hosts in; give a libvirt URI/,
      ],
    ];
    for (const [args, message] of cases) {
      const x = io();
      expect(await run(args, x), args.join(' ')).toBe(EXIT.USAGE);
      expect(x.err()).toMatch(message);
    }
  });

  it('parses flavors', () => {
    expect(parseFlavor('e1.nano')).toEqual(FLAVORS['e1.nano']);
    expect(parseFlavor('vcpus=2,ram=128,root=1,ephemeral=2,swap=8')).toEqual({
      name: 'custom',
      vcpus: 2,
      memoryMiB: 128,
      rootGiB: 1,
      ephemeralGiB: 2,
      swapMiB: 8,
    });
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
    expect(schema.find((o: { key: string }) => o.key === 'images.type')).toMatchObject({
      env: 'EPHEMERA_IMAGES_TYPE',
      default: 'rbd',
    });
  });
});

describe('exit codes: one table for every error code of every package', () => {
  const packages: Record<string, readonly string[]> = {
    '@ephemera/driver': DRIVER_ERROR_CODES,
    '@ephemera/glance': GLANCE_ERROR_CODES,
    '@ephemera/image-backend': IMAGE_BACKEND_ERROR_CODES,
    '@ephemera/libvirt-xml': LIBVIRT_XML_ERROR_CODES,
    '@ephemera/qemu-img-wrapper': QEMU_IMG_ERROR_CODES,
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
    const glanceDown = Object.assign(new Error('spawn failed'), {
      code: 'SPAWN_FAILED',
      cause: Object.assign(new Error('refused'), { code: 'GLANCE_CONNECTION' }),
    });
    expect(exitCodeFor(glanceDown)).toBe(EXIT.CONFIG);
    const notFoundInside = Object.assign(new Error('spawn failed'), {
      code: 'SPAWN_FAILED',
      cause: Object.assign(new Error('x'), { code: 'NOT_FOUND' }),
    });
    expect(exitCodeFor(notFoundInside)).toBe(EXIT.FAILURE);
    expect(exitCodeFor({ code: 'ENOENT' })).toBe(EXIT.FAILURE);
    expect(exitCodeFor({ code: 42 })).toBe(EXIT.FAILURE);
  });
});

describe('--version and the log level', () => {
  it('--version and -V print the package version, exit 0', async () => {
    const { version } = JSON.parse(readFileSync(resolve(import.meta.dirname, '../../package.json'), 'utf8')) as {
      version: string;
    };
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

describe('migrate --to: dev stack hosts', () => {
  it('finds a host of stack.json by id or hostN; an unknown one is a usage error naming the hosts', async () => {
    const { stackHost } = await import('../../src/migrate.js');
    const stack = {
      dir: '/s',
      hosts: [
        { id: 1, libvirtUri: 'qemu:///one', stateDir: '/s/ephemera' },
        { id: 2, libvirtUri: 'qemu:///two', stateDir: '/s/host2/ephemera' },
      ],
    } as unknown as Parameters<typeof stackHost>[0];
    expect(stackHost(stack, '2', '--to')).toMatchObject({ libvirtUri: 'qemu:///two' });
    expect(stackHost(stack, 'host1', '--to')).toMatchObject({ stateDir: '/s/ephemera' });
    expect(() => stackHost(stack, '3', '--to')).toThrow(/--to "3": the dev stack has host\(s\) 1, 2/);
    expect(() => stackHost(stack, 'b', '--from')).toThrow(/--from "b"/);
  });

  it("the destination host's configuration loads the source's backends (a qcow2 instance finds qcow2 there)", async () => {
    const { destinationConfig } = await import('../../src/migrate.js');
    const { loadConfig } = await import('@ephemera/driver');
    const source = loadConfig({
      env: {},
      overrides: { stateDir: '/s/ephemera', images: { type: 'qcow2', enabled: ['rbd'] } },
    }).config;
    const dest = destinationConfig(
      undefined,
      { id: 2, libvirtUri: 'qemu:///two', stateDir: '/s/host2/ephemera' },
      source,
    );
    expect(dest.images.type).toBe('qcow2');
    expect(dest.images.enabled).toEqual(['rbd']);
    expect(dest.libvirt.uri).toBe('qemu:///two');
    expect(dest.stateDir).toBe('/s/host2/ephemera');
    // Its own disks and image cache, under its own state directory.
    expect(dest.instancesPath).toBe('/s/host2/ephemera/instances');
    expect(dest.images.qcow2.basePath).toBe('/s/host2/ephemera/instances/_base');
  });
});
