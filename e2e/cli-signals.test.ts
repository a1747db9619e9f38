// `ephemera boot` (the built bin, a real process) interrupted: SIGINT/SIGTERM abort the spawn and
// roll it back, a domain start under way included; a second signal exits at once; a boot killed
// outright shows in `list` until a CLI start (or `reconcile`) rolls it back.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GlanceClient } from '@ephemera/glance';
import { connect, type Connection } from '@ephemera/libvirt-napi';
import { loadStack } from '@ephemera/testkit';
import { deleteImage, newUuid, rbdLs, uploadGuest, virshDomains } from './support.js';

const exec = promisify(execFile);
const repo = resolve(import.meta.dirname, '..');
const bin = join(repo, 'packages/cli/dist/bin.js');
const stack = loadStack();
const glance = new GlanceClient({ url: stack.glance.url });
const FLAVOR = 'vcpus=1,ram=64,root=1,swap=8';
let stateDir: string;
let image: string | undefined;
let conn: Connection;
const children: ChildProcess[] = [];
const uuids: string[] = [];

async function ephemera(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await exec(process.execPath, [bin, '--state-dir', stateDir, ...args], {
      timeout: 300_000,
      maxBuffer: 16 << 20,
    });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

interface Boot {
  child: ChildProcess;
  out: () => { stdout: string; stderr: string };
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>;
}

function startBoot(uuid: string): Boot {
  uuids.push(uuid);
  const child = spawn(
    process.execPath,
    [
      bin,
      '--state-dir',
      stateDir,
      'boot',
      '--image',
      image!,
      '--name',
      `sig-${uuid.slice(0, 8)}`,
      '--uuid',
      uuid,
      '--flavor',
      FLAVOR,
      '--json',
    ],
    {
      cwd: repo,
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  children.push(child);
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += String(d)));
  child.stderr!.on('data', (d) => (stderr += String(d)));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>((res) =>
    child.once('exit', (code, signal) => res({ code, signal, at: Date.now() })),
  );
  return { child, out: () => ({ stdout, stderr }), exited };
}

/** Polls libvirt until the instance's domain is being started (or runs); resolves to the state seen. */
async function whileStarting(uuid: string, boot: Boot): Promise<string> {
  const deadline = Date.now() + 120_000;
  for (;;) {
    if (boot.child.exitCode !== null)
      throw new Error(`boot exited (${boot.child.exitCode}) before its domain started: ${boot.out().stderr}`);
    if (Date.now() > deadline) throw new Error(`domain ${uuid} not starting within 120 s: ${boot.out().stderr}`);
    const st = await (await conn.lookupByUUID(uuid).catch(() => undefined))?.state().catch(() => undefined);
    const seen = st ? `${st.state}/${st.reason}` : '';
    if (seen === 'paused/starting_up' || st?.state === 'running') return seen;
    await new Promise((r) => setTimeout(r, 5));
  }
}

async function journalOf(uuid: string): Promise<string[]> {
  const dir = join(stateDir, 'journal');
  const out: string[] = [];
  for (const f of await readdir(dir).catch(() => [] as string[])) {
    if ((await readFile(join(dir, f), 'utf8').catch(() => '')).includes(`"instance":"${uuid}"`)) out.push(f);
  }
  return out;
}

async function nothingLeft(uuid: string): Promise<void> {
  expect((await virshDomains(stack)).filter((d) => d.includes(uuid))).toEqual([]);
  expect((await rbdLs(stack, stack.ceph.pools.vms)).filter((n) => n.startsWith(uuid))).toEqual([]);
  expect(await journalOf(uuid)).toEqual([]);
  expect(
    JSON.parse((await ephemera('list', '--json')).stdout).filter((i: { uuid: string }) => i.uuid === uuid),
  ).toEqual([]);
}

beforeAll(async () => {
  await exec('npx', ['nx', 'run', '@ephemera/cli:build'], {
    cwd: repo,
    timeout: 600_000,
    maxBuffer: 64 << 20,
    env: { ...process.env, NX_DAEMON: 'false', NX_NO_CLOUD: 'true', NX_TUI: 'false' },
  });
  stateDir = await mkdtemp(join(tmpdir(), 'ephemera-e2e-cli-signals-'));
  image = await uploadGuest(glance, `cli-sig-${newUuid().slice(0, 8)}`);
  conn = await connect(stack.libvirt.uri);
}, 900_000);

afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  if (stateDir) {
    await ephemera('reconcile');
    for (const u of uuids) await ephemera('destroy', u);
  }
  await conn?.close();
  await deleteImage(glance, image);
  if (stateDir) await rm(stateDir, { recursive: true, force: true });
});

describe('ephemera boot interrupted', () => {
  it('SIGINT while the domain starts: exit 130, the spawn is rolled back (no domain, no disk, no journal entry)', async () => {
    const uuid = newUuid();
    const boot = startBoot(uuid);
    const seen = await whileStarting(uuid, boot);
    boot.child.kill('SIGINT');
    const { code, signal } = await boot.exited;
    const { stdout, stderr } = boot.out();
    console.log(`SIGINT with the domain ${seen}`);
    expect({ code, signal }, stderr).toEqual({ code: 130, signal: null });
    expect(stderr).toContain('SIGINT: aborting and rolling back');
    expect(JSON.parse(stdout).error).toEqual({
      code: 'ABORTED',
      message: expect.stringContaining(`spawn of ${uuid} aborted`),
    });
    await nothingLeft(uuid);
  });

  it('SIGTERM, then a second SIGTERM: exits 143 at once; list shows the interrupted spawn; the next CLI start rolls it back', async () => {
    const uuid = newUuid();
    const boot = startBoot(uuid);
    await whileStarting(uuid, boot);
    boot.child.kill('SIGTERM');
    // The first signal's rollback waits for libvirtd to finish starting the domain; the second
    // one does not wait for anything.
    await new Promise((r) => setTimeout(r, 20));
    const second = Date.now();
    boot.child.kill('SIGTERM');
    const { code, at } = await boot.exited;
    expect(code, boot.out().stderr).toBe(143);
    expect(at - second).toBeLessThan(2_000);
    expect(boot.out().stderr).toContain('SIGTERM again: exiting now');
    // The first rollback had not finished (it never does within 20 ms): the spawn is still
    // journaled, and list shows it.
    expect(await journalOf(uuid)).toHaveLength(1);
    const row = JSON.parse((await ephemera('list', '--json')).stdout).find((i: { uuid: string }) => i.uuid === uuid);
    expect(row).toMatchObject({ uuid, operation: { op: 'spawn', status: 'interrupted', instance: uuid } });
    // A state-changing command reconciles at start (here one that then fails: no such instance).
    const stop = await ephemera('stop', newUuid());
    expect(stop.code).toBe(4);
    await nothingLeft(uuid);
  });

  it('SIGKILL mid-boot: list shows the instance with its interrupted spawn, gc points at reconcile, reconcile rolls it back', async () => {
    const uuid = newUuid();
    const boot = startBoot(uuid);
    // Kill once the root disk exists (the journal names it), before the record is written.
    const deadline = Date.now() + 120_000;
    while (!(await rbdLs(stack, stack.ceph.pools.vms)).includes(`${uuid}_disk`)) {
      if (boot.child.exitCode !== null) throw new Error(`boot exited early: ${boot.out().stderr}`);
      if (Date.now() > deadline) throw new Error('no root disk within 120 s');
      await new Promise((r) => setTimeout(r, 10));
    }
    boot.child.kill('SIGKILL');
    expect((await boot.exited).signal).toBe('SIGKILL');

    const list = await ephemera('list', '--json');
    expect(list.code, list.stderr).toBe(0);
    const row = JSON.parse(list.stdout).find((i: { uuid: string }) => i.uuid === uuid);
    expect(row).toMatchObject({
      uuid,
      name: `sig-${uuid.slice(0, 8)}`,
      imageId: image,
      backend: 'rbd',
      operation: { op: 'spawn', status: 'interrupted', pid: boot.child.pid },
    });
    const text = await ephemera('list');
    expect(text.stdout).toMatch(new RegExp(`${uuid}.*spawn interrupted .*ephemera reconcile`));
    // list is read-only: the disk is still there.
    expect(await rbdLs(stack, stack.ceph.pools.vms)).toContain(`${uuid}_disk`);
    const gc = await ephemera('gc');
    expect(gc.stderr).toContain('run `ephemera reconcile`');

    const r = await ephemera('reconcile', '--json');
    expect(r.code, r.stderr).toBe(0);
    const actions = JSON.parse(r.stdout).filter((a: { instance: string }) => a.instance === uuid);
    expect(actions).toEqual([
      expect.objectContaining({
        op: 'spawn',
        action: 'rolled-back',
        removed: expect.arrayContaining(['disk rbd:disk']),
      }),
    ]);
    await nothingLeft(uuid);
  });
});
