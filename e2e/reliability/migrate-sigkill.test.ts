// Crash safety of live migration (issue 19.4): one counting guest migrates back and forth between
// the two hosts of the stack, each migration driven by two BUILT drivers in child processes
// (fixtures/migrate-child.mjs: the source, and the destination whose calls the parent relays),
// and one of them (source or destination, seeded) is SIGKILLed at a seeded random point of the
// migration. libvirt's peer-to-peer migration is driven by the source libvirtd, so it may still
// finish after the kill. Then the drivers of both hosts reconcile, in a seeded order (sometimes
// twice), and the guest must run on exactly one host, which has its record, and the other host
// must have no domain, no record, no files and no journal entry of it. The seed is printed;
// EPHEMERA_REL_SEED replays a run; EPHEMERA_MIG_TRIALS sets the number of trials (default 10;
// migrate-sigkill.repro.ts runs more).
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createDriver, isDriverError, type Driver, type DriverConfig } from '@ephemera/driver';
import { GlanceClient } from '@ephemera/glance';
import { guestImage, loadStack, stackCommand, type StackInfo } from '@ephemera/testkit';
import { deleteImage, driverConfig, newUuid, printReport, TINY, uploadImage, waitUntil } from './support.js';
import { readJsonLines, seededRandom } from './children.js';

const exec = promisify(execFile);
const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '..', '..');
const TRIALS = Number(process.env.EPHEMERA_MIG_TRIALS ?? 10);
/** Kill points are drawn in [0, KILL_WINDOW_MS) after the source child starts migrating (a migration here takes 1-3 s). */
const KILL_WINDOW_MS = 2_500;
const EARLY_MS = 150;
const { seed, rand } = seededRandom();

interface Host {
  name: 'A' | 'B';
  uri: string;
  config: DriverConfig;
  configPath: string;
  driver: Driver;
}
let stack: StackInfo;
let hosts: [Host, Host];
let glance: GlanceClient;
let imageId: string | undefined;
let stateRoot: string;
const uuid = newUuid();
const outcomes: {
  trial: number;
  victim: string;
  offsetMs: number;
  child: string;
  endedOn: string;
  ms: number;
  phases: string;
}[] = [];

async function domainsOf(uri: string): Promise<string[]> {
  const { stdout } = await exec('virsh', ['-q', '-c', uri, 'list', '--all', '--name'], { timeout: 60_000 });
  return stdout
    .split('\n')
    .map((s) => s.trim())
    .filter(Boolean);
}

/** Whether `h`'s libvirtd has the guest's domain running. */
async function runsOn(h: Host): Promise<boolean> {
  const { stdout } = await exec('virsh', ['-q', '-c', h.uri, 'list', '--state-running', '--uuid'], {
    timeout: 60_000,
  });
  return stdout.split('\n').some((l) => l.trim() === uuid);
}

interface Child {
  proc: ChildProcess;
  lines: { ev: string; code?: string; message?: string }[];
  exited: Promise<void>;
  alive(): boolean;
  output(): string;
}

function startChild(h: Host, role: 'source' | 'destination'): Child {
  const proc = spawn(process.execPath, [join(here, 'fixtures', 'migrate-child.mjs'), h.configPath, role, uuid], {
    cwd: repo,
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
  const lines: Child['lines'] = [];
  const stdout = readJsonLines(proc.stdout!, (v) => lines.push(v as Child['lines'][number]));
  let err = '';
  proc.stderr!.on('data', (d) => (err += String(d)));
  let done = false;
  const exited = new Promise<void>((r) =>
    proc.once('exit', () => {
      done = true;
      r();
    }),
  );
  return { proc, lines, exited, alive: () => !done, output: () => stdout() + err };
}

/**
 * Sends to a child's IPC channel unless it has closed. A child killed by the test can close its
 * channel before its 'exit' event; the callback takes the EPIPE of that race instead of an
 * unhandled 'error' event on the ChildProcess.
 */
function send(c: Child, m: object): void {
  if (c.proc.connected) c.proc.send(m, () => {});
}

/** Relays the source's destination calls to the destination child; a dead destination answers with an error. */
function relay(src: Child, dst: Child): void {
  const pending = new Set<number>();
  const fail = (id: number): void => {
    if (src.alive()) send(src, { id, err: { message: 'the destination driver died', code: 'MIGRATION_FAILED' } });
  };
  src.proc.on('message', (m: { id: number }) => {
    if (!dst.alive()) return fail(m.id);
    pending.add(m.id);
    send(dst, m);
  });
  dst.proc.on('message', (m: { id: number }) => {
    pending.delete(m.id);
    if (src.alive()) send(src, m);
  });
  void dst.exited.then(() => {
    for (const id of pending) fail(id);
    pending.clear();
  });
}

async function settle(c: Child, ms: number): Promise<void> {
  await Promise.race([c.exited, new Promise((r) => setTimeout(r, ms))]);
  if (c.alive()) {
    c.proc.kill('SIGKILL');
    await c.exited;
  }
}

beforeAll(async () => {
  await exec('npx', ['nx', 'run', '@ephemera/driver:build'], {
    cwd: repo,
    timeout: 600_000,
    maxBuffer: 64 << 20,
    env: { ...process.env, NX_DAEMON: 'false', NX_NO_CLOUD: 'true', NX_TUI: 'false' },
  });
  await stackCommand(['up', '--hosts', '2'], { timeoutMs: 300_000 });
  stack = loadStack();
  stateRoot = await mkdtemp(join(tmpdir(), 'ephemera-migkill-'));
  const make = async (name: 'A' | 'B', uri: string): Promise<Host> => {
    const config = driverConfig(stack, join(stateRoot, name), { libvirt: { uri } });
    const configPath = join(stateRoot, `${name}.json`);
    await writeFile(configPath, JSON.stringify(config));
    return { name, uri, config, configPath, driver: await createDriver({ config, reconcile: false }) };
  };
  hosts = [await make('A', stack.hosts[0]!.libvirtUri), await make('B', stack.hosts[1]!.libvirtUri)];
  glance = new GlanceClient({ url: stack.glance.url });
  const path = await guestImage({ marker: `migkill-${seed}`, mode: 'count' });
  imageId = await uploadImage(glance, `rel-migkill-${seed}`, await readFile(path), 'raw');
  await hosts[0].driver.spawn({ instance: { uuid, name: 'migkill' }, image: imageId, flavor: TINY });
  console.log(`migration SIGKILL test: seed ${seed} (replay with EPHEMERA_REL_SEED=${seed}), ${TRIALS} trials`);
}, 600_000);

afterAll(async () => {
  for (const h of hosts ?? []) {
    await h.driver.reconcile().catch(() => undefined);
    await h.driver.destroy(uuid).catch(() => undefined);
  }
  await deleteImage(glance, imageId);
  for (const h of hosts ?? []) await h.driver.close().catch(() => undefined);
  if (stateRoot) await rm(stateRoot, { recursive: true, force: true });
  const count = (k: string): number => outcomes.filter((o) => o.endedOn === k).length;
  printReport('SIGKILL during live migration', [
    {
      fault: 'source or destination driver SIGKILLed mid-migration, then reconcile on both hosts',
      tries: outcomes.length,
      left: 'see the trials below',
      note: `guest ended on the destination ${count('destination')}, on the source ${count('source')} (seed ${seed})`,
    },
    ...outcomes.map((o) => ({
      fault: `trial ${o.trial}: kill ${o.victim} at ${o.offsetMs} ms`,
      tries: 1,
      left: 'nothing on the other host',
      note: `child said ${o.child}; guest on the ${o.endedOn}; ${o.ms} ms (${o.phases})`,
    })),
  ]);
}, 300_000);

it(`the guest runs on exactly one host after a SIGKILL of either driver mid-migration and reconcile on both (${TRIALS} seeded trials)`, async () => {
  let on = 0;
  for (let trial = 0; trial < TRIALS; trial++) {
    const src = hosts[on]!;
    const dst = hosts[1 - on]!;
    const victim = rand() < 0.5 ? 'source' : 'destination';
    // A third of the kills land in the first 150 ms (the destination's preparation, before
    // libvirt has the migration): the others anywhere in libvirt's part.
    const offsetMs = Math.floor(rand() * (rand() < 1 / 3 ? EARLY_MS : KILL_WINDOW_MS));
    const order = rand() < 0.5 ? [src, dst] : [dst, src];
    const twice = rand() < 0.25;
    const label = `trial ${trial} (seed ${seed}): ${src.name}->${dst.name}, kill ${victim} at ${offsetMs} ms`;

    const t0 = performance.now();
    const d = startChild(dst, 'destination');
    const s = startChild(src, 'source');
    relay(s, d);
    await waitUntil(
      `${label}: children ready`,
      () => s.lines.some((l) => l.ev === 'ready') && d.lines.some((l) => l.ev === 'ready'),
      60_000,
    );
    send(s, { go: true });
    await waitUntil(`${label}: migration begins`, () => s.lines.some((l) => l.ev === 'begin'), 30_000, 1);
    await new Promise((r) => setTimeout(r, offsetMs));
    const killed = victim === 'source' ? s : d;
    if (killed.alive()) killed.proc.kill('SIGKILL');
    await killed.exited;
    // The survivor finishes what it can: the source gets an error from the dead destination; the
    // destination has nothing more to do once the source is gone.
    if (victim === 'source') {
      if (d.alive()) send(d, { close: true });
      await settle(d, 30_000);
    } else await settle(s, 120_000);
    const settledMs = Math.round(performance.now() - t0);
    const said = s.lines.find((l) => l.ev === 'end' || l.ev === 'error');
    const child = said ? (said.ev === 'end' ? 'migrated' : `error ${said.code}`) : 'nothing (killed)';

    for (const h of twice ? [...order, ...order] : order) {
      const actions = (await h.driver.reconcile()).filter((a) => a.instance === uuid);
      expect(
        actions.filter((a) => a.action === 'failed'),
        `${label}: reconcile on ${h.name}`,
      ).toEqual([]);
    }

    const reconciledMs = Math.round(performance.now() - t0);
    const running = [];
    for (const h of hosts) if (await runsOn(h)) running.push(h);
    expect(
      running.map((h) => h.name),
      `${label}: hosts running the guest (child: ${child})`,
    ).toHaveLength(1);
    const home = running[0]!;
    const other = home === hosts[0] ? hosts[1] : hosts[0];
    expect((await home.driver.get(uuid)).state, label).toBe('running');
    expect((await home.driver.get(uuid)).consolePath, label).toBe(home.driver.consolePath(uuid));
    await expect(other.driver.get(uuid), label).rejects.toSatisfy((e) => isDriverError(e, 'INSTANCE_NOT_FOUND'));
    expect(
      (await domainsOf(other.uri)).filter((n) => n.includes(uuid)),
      label,
    ).toEqual([]);
    expect(existsSync(join(other.config.instancesPath, uuid)), label).toBe(false);
    for (const h of hosts)
      expect(
        (await h.driver.journal.entries()).filter((e) => e.instance === uuid).map((e) => e.op),
        `${label}: journal of ${h.name}`,
      ).toEqual([]);
    outcomes.push({
      trial,
      victim,
      offsetMs,
      child,
      endedOn: home === src ? 'source' : 'destination',
      ms: Math.round(performance.now() - t0),
      phases: `children done ${settledMs}, reconciled ${reconciledMs}`,
    });
    on = hosts.indexOf(home);
  }
}, 1_200_000);
