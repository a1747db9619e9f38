// The `ephemera` command (built bin) against the dev stack: upload, explain, boot, list, console,
// snapshot, destroy, gc, reconcile; --json output and exit codes.
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { guestImage, loadStack } from '@ephemera/testkit';
import { deleteImage, newUuid, rbdLs, virshDomains } from './support.js';
import { GlanceClient } from '@ephemera/glance';

const exec = promisify(execFile);
const repo = resolve(import.meta.dirname, '..');
const bin = join(repo, 'packages/cli/dist/bin.js');
let stateDir: string;
const images: string[] = [];
const uuid = newUuid();

async function ephemera(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return ephemeraEnv({}, ...args);
}

/** The CLI with extra environment variables (`undefined` removes one). */
async function ephemeraEnv(
  env: Record<string, string | undefined>,
  ...args: string[]
): Promise<{ code: number; stdout: string; stderr: string }> {
  const fullEnv = { ...process.env, ...env };
  for (const [k, v] of Object.entries(fullEnv)) if (v === undefined) delete fullEnv[k];
  try {
    const { stdout, stderr } = await exec(process.execPath, [bin, '--state-dir', stateDir, ...args], {
      timeout: 300_000,
      maxBuffer: 16 << 20,
      env: fullEnv,
    });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

beforeAll(async () => {
  await exec('npx', ['nx', 'run', '@ephemera/cli:build'], {
    cwd: repo,
    timeout: 600_000,
    maxBuffer: 64 << 20,
    env: { ...process.env, NX_DAEMON: 'false', NX_NO_CLOUD: 'true', NX_TUI: 'false' },
  });
  stateDir = await mkdtemp(join(tmpdir(), 'ephemera-e2e-cli-'));
}, 900_000);

afterAll(async () => {
  await ephemera('destroy', uuid);
  const glance = new GlanceClient({ url: loadStack().glance.url });
  for (const id of images.reverse()) await deleteImage(glance, id);
  await rm(stateDir, { recursive: true, force: true });
});

describe('ephemera CLI on the dev stack', () => {
  it('uploads, explains, boots, lists, shows the console, snapshots and destroys', async () => {
    const marker = `cli-${uuid.slice(0, 8)}`;
    const up = await ephemera('image', 'upload', await guestImage({ marker }), '--name', marker, '--json');
    expect(up.code, up.stderr).toBe(0);
    const image = JSON.parse(up.stdout);
    images.push(image.id);
    expect(image).toMatchObject({ status: 'active', disk_format: 'raw' });

    const explain = await ephemera('image', 'explain', image.id);
    expect(explain.stdout).toMatch(/plan: clone by rbd-clone/);
    const plan = JSON.parse((await ephemera('image', 'explain', image.id, '--backend', 'lvm', '--json')).stdout);
    expect(plan.chosen.method).toBe('download');
    expect(plan.declined.map((d: { handler: string }) => d.handler)).toContain('rbd-clone');

    const boot = await ephemera(
      'boot',
      '--image',
      image.id,
      '--name',
      'cli-vm',
      '--uuid',
      uuid,
      '--flavor',
      'vcpus=1,ram=64,root=1,swap=8',
      '--json',
    );
    expect(boot.code, boot.stderr).toBe(0);
    const r = JSON.parse(boot.stdout);
    expect(r.rootDisk.method).toBe('cloned');
    expect(r.instance.uuid).toBe(uuid);

    const again = await ephemera('boot', '--image', image.id, '--name', 'cli-vm', '--uuid', uuid, '--json');
    expect(again.code).toBe(5);
    expect(JSON.parse(again.stdout).error.code).toBe('INSTANCE_EXISTS');

    const list = JSON.parse((await ephemera('list', '--json')).stdout);
    expect(list.map((i: { name: string }) => i.name)).toEqual(['cli-vm']);
    const deadline = Date.now() + 120_000;
    let console_ = '';
    while (!console_.includes('EPHEMERA-POWEROFF') && Date.now() < deadline) {
      console_ = (await ephemera('console', 'cli-vm')).stdout;
      await new Promise((res) => setTimeout(res, 500));
    }
    expect(console_).toContain(`EPHEMERA-MARKER ${marker}`);

    const snap = await ephemera('snapshot', 'cli-vm', `${marker}-snap`, '--json');
    expect(snap.code, snap.stderr).toBe(0);
    images.push(JSON.parse(snap.stdout).imageId);

    expect((await ephemera('destroy', 'cli-vm')).code).toBe(0);
    expect((await ephemera('show', 'cli-vm')).code).toBe(4);
    expect((await rbdLs(loadStack(), 'vms')).filter((n) => n.startsWith(uuid))).toEqual([]);
    expect((await virshDomains(loadStack())).filter((d) => d.includes(uuid))).toEqual([]);
    expect(JSON.parse((await ephemera('reconcile', '--json')).stdout)).toEqual([]);
    const gc = JSON.parse((await ephemera('gc', '--json')).stdout);
    expect(gc.removed).toEqual([]);
  });

  it('an empty image: upload refused (exit 2, no Glance record), boot of an empty Glance image refused (exit 6), nothing left', async () => {
    const name = `e2e-empty-${uuid.slice(0, 8)}`;
    const empty = join(stateDir, 'empty.img');
    await writeFile(empty, new Uint8Array(0));
    const up = await ephemera('image', 'upload', empty, '--name', name, '--json');
    expect(up.code, up.stdout + up.stderr).toBe(2);
    expect(JSON.parse(up.stdout).error).toMatchObject({
      code: 'INVALID_ARGUMENT',
      message: expect.stringMatching(/empty/),
    });
    const listed = JSON.parse((await ephemera('image', 'list', '--json')).stdout) as { name?: string }[];
    expect(listed.filter((i) => i.name === name)).toEqual([]);

    // An empty image that reached Glance some other way.
    const glance = new GlanceClient({ url: loadStack().glance.url });
    const rec = await glance.createImage({ name, disk_format: 'raw', container_format: 'bare' });
    images.push(rec.id);
    await glance.upload(rec.id, new Uint8Array(0));
    expect(await glance.waitForStatus(rec.id, ['active'], { timeoutMs: 120_000 })).toMatchObject({ size: 0 });
    for (const backend of ['rbd', 'qcow2']) {
      const vm = newUuid();
      const boot = await ephemera(
        'boot',
        '--image',
        rec.id,
        '--name',
        `empty-${backend}`,
        '--uuid',
        vm,
        '--flavor',
        'vcpus=1,ram=64,root=1,swap=8',
        '--backend',
        backend,
        '--json',
      );
      expect(boot.code, `${backend}: ${boot.stdout}${boot.stderr}`).toBe(6);
      expect(JSON.parse(boot.stdout).error).toMatchObject({
        code: 'IMAGE_UNUSABLE',
        message: expect.stringMatching(/empty/),
      });
      expect((await ephemera('show', vm)).code).toBe(4);
      expect((await virshDomains(loadStack())).filter((d) => d.includes(vm))).toEqual([]);
      expect((await rbdLs(loadStack(), loadStack().ceph.pools.vms)).filter((n) => n.includes(vm))).toEqual([]);
    }
  });

  it('exit codes: unknown image 4, bad flavor 2, unknown command 2', async () => {
    expect((await ephemera('boot', '--image', newUuid(), '--name', 'x')).code).toBe(4);
    expect((await ephemera('boot', '--image', 'x', '--name', 'x', '--flavor', 'huge')).code).toBe(2);
    expect((await ephemera('fly')).code).toBe(2);
    expect((await ephemera('image', 'show', newUuid())).code).toBe(4);
  });
});

/** A loopback port nothing listens on (bound, then closed). */
async function closedPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const { port } = srv.address() as { port: number };
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

/** pino lines (JSON objects with a numeric level) in a stderr text. */
function pinoLines(stderr: string): { level: number; msg: string }[] {
  return stderr.split('\n').flatMap((l) => {
    try {
      const o = JSON.parse(l) as { level?: unknown; msg?: string };
      return typeof o.level === 'number' ? [{ level: o.level, msg: o.msg ?? '' }] : [];
    } catch {
      return [];
    }
  });
}

describe('ephemera CLI: version, unreachable services, log level', () => {
  it('--version and -V print the CLI package version and exit 0', async () => {
    const { version } = JSON.parse(await readFile(join(repo, 'packages/cli/package.json'), 'utf8')) as {
      version: string;
    };
    for (const flag of ['--version', '-V']) {
      const r = await ephemera(flag);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout.trim()).toBe(version);
    }
  });

  it('an unreachable Glance exits 3 naming the endpoint and the cause', async () => {
    const port = await closedPort();
    const env = { EPHEMERA_GLANCE_URL: `http://127.0.0.1:${port}`, EPHEMERA_GLANCE_RETRIES: '1' };
    const r = await ephemeraEnv(env, '--no-stack', 'image', 'list');
    expect(r.code, r.stderr).toBe(3);
    expect(r.stderr).toContain(`http://127.0.0.1:${port}`);
    expect(r.stderr).toContain(`connect ECONNREFUSED 127.0.0.1:${port}`);
    expect(r.stderr).not.toContain('fetch failed');
    const j = await ephemeraEnv(env, '--no-stack', 'image', 'show', newUuid(), '--json');
    expect(j.code).toBe(3);
    expect(JSON.parse(j.stdout).error).toMatchObject({
      code: 'GLANCE_CONNECTION',
      message: expect.stringContaining(`connect ECONNREFUSED 127.0.0.1:${port}`),
    });
    // Through the driver too: the spawn's wrapping error keeps the exit code of its cause.
    const boot = await ephemeraEnv(env, 'boot', '--image', newUuid(), '--name', 'x');
    expect(boot.code, boot.stderr).toBe(3);
    expect(boot.stderr).toContain(`Glance http://127.0.0.1:${port} `);
  });

  it('log level precedence: --log-level > EPHEMERA_LOG_LEVEL > file log.level > default warn', async () => {
    const file = join(stateDir, 'log-config.json');
    await writeFile(file, JSON.stringify({ log: { level: 'error' } }));
    const level = async (env: Record<string, string | undefined>, ...args: string[]): Promise<string> => {
      const r = await ephemeraEnv(
        { EPHEMERA_LOG_LEVEL: undefined, EPHEMERA_CONFIG: undefined, ...env },
        ...args,
        'config',
      );
      expect(r.code, r.stderr).toBe(0);
      return (JSON.parse(r.stdout) as { log: { level: string } }).log.level;
    };
    expect(await level({})).toBe('warn');
    expect(await level({}, '--config', file)).toBe('error');
    expect(await level({ EPHEMERA_LOG_LEVEL: 'info' }, '--config', file)).toBe('info');
    expect(await level({ EPHEMERA_LOG_LEVEL: 'info' }, '--config', file, '--log-level', 'trace')).toBe('trace');
  });

  it("debug lines appear with --log-level debug, EPHEMERA_LOG_LEVEL=debug or the file's log.level, and not by default", async () => {
    const file = join(stateDir, 'debug-config.json');
    await writeFile(file, JSON.stringify({ log: { level: 'debug' } }));
    const clean = { EPHEMERA_LOG_LEVEL: undefined, EPHEMERA_CONFIG: undefined };
    for (const [env, args] of [
      [clean, ['--log-level', 'debug']],
      [{ ...clean, EPHEMERA_LOG_LEVEL: 'debug' }, []],
      [clean, ['--config', file]],
    ] as const) {
      const r = await ephemeraEnv(env, ...args, 'list', '--json');
      expect(r.code, r.stderr).toBe(0);
      expect(pinoLines(r.stderr).filter((l) => l.level === 20).length, r.stderr).toBeGreaterThan(0);
    }
    const quiet = await ephemeraEnv(clean, 'list', '--json');
    expect(quiet.code, quiet.stderr).toBe(0);
    expect(pinoLines(quiet.stderr)).toEqual([]);
  });

  it('a failed spawn prints its error once (no pino line repeating it)', async () => {
    const image = newUuid();
    const r = await ephemeraEnv(
      { EPHEMERA_LOG_LEVEL: undefined, EPHEMERA_CONFIG: undefined },
      'boot',
      '--image',
      image,
      '--name',
      'x',
    );
    expect(r.code).toBe(4);
    expect(r.stderr.split(image).length - 1, r.stderr).toBe(1);
    expect(pinoLines(r.stderr)).toEqual([]);
  });
});
