// NOT run by npm test yet (README.md, known failures 4, 9, 10): rename to sigkill.test.ts once fixed.
// The driver is SIGKILLed at 30 random points across spawn, snapshot and destroy (issue 11). The
// driver runs in a child process built from dist (fixtures/kill-child.mjs); the kill points are
// drawn from a seeded PRNG (the seed is printed; EPHEMERA_REL_SEED replays one). After each kill
// a driver on the same state dir runs reconcile(), then every instance is either complete (record,
// domain, disk) or entirely gone: no orphan RBD image, RBD snapshot, domain, secret, instance file,
// journal entry or half-made Glance image. At the end every instance that survived (it was reported
// running and never destroyed) is booted again, in one batch, and must boot.
import { execFile, spawn } from 'node:child_process';
import { readdir, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readBootCount } from '@ephemera/testkit';
import { loadStack } from '@ephemera/testkit';
import {
  deleteImage,
  leftovers,
  newUuid,
  printReport,
  rbdLs,
  testDriver,
  uploadGuest,
  virshSecrets,
  waitUntil,
  type TestDriver,
} from './support.js';

const exec = promisify(execFile);
const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '..', '..');
const KILLS = 30;
const OPS = ['spawn', 'snapshot', 'destroy'] as const;
type Op = (typeof OPS)[number];

const seed = Number(process.env.EPHEMERA_REL_SEED ?? Date.now() % 2 ** 31);
/** mulberry32: a small seeded PRNG. */
function prng(a: number): () => number {
  return () => {
    a |= 0;
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rand = prng(seed);

let t: TestDriver;
let configPath: string;
let imageId: string;
let secretsBefore: string[];
const snapshotImages = new Set<string>();
const survivors: string[] = [];
const killed: { op: string; at: string; offsetMs: number; outcome: string }[] = [];

interface ChildRun {
  lines: { ev: string; op?: Op; t: number; imageId?: string }[];
  exit: Promise<void>;
  kill(): void;
  output(): string;
}

function runChild(uuid: string, snapName: string): ChildRun {
  const child = spawn(process.execPath, [join(here, 'fixtures', 'kill-child.mjs'), configPath, uuid, imageId, snapName], {
    cwd: repo,
    stdio: ['ignore', 'pipe', 'pipe'],
    // Its own process group: the kill takes the driver AND the commands it started (qemu-img), as a
    // service manager does (systemd KillMode=control-group). Killing only the node process leaves
    // qemu-img running, and it writes its temp file after reconcile removed it (see README.md).
    detached: true,
  });
  const lines: ChildRun['lines'] = [];
  let out = '';
  let buf = '';
  child.stdout!.on('data', (d) => {
    out += String(d);
    buf += String(d);
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      try {
        lines.push({ ...JSON.parse(line), t: performance.now() });
      } catch {
        /* not ours */
      }
    }
  });
  child.stderr!.on('data', (d) => (out += String(d)));
  const exit = new Promise<void>((r) => child.once('exit', () => r()));
  const kill = (): void => {
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ESRCH') throw e; // the child had already finished
    }
  };
  return { lines, exit, kill, output: () => out };
}

/** Durations of each operation from an unkilled run (ms), to place the random kill points. */
const durations: Record<Op, number> = { spawn: 0, snapshot: 0, destroy: 0 };
/** How long a driver process takes to start (spawn to `ready`): the earliest a restarted driver reconciles. */
let restartMs = 1_000;

beforeAll(async () => {
  await exec('npx', ['nx', 'run', '@ephemera/driver:build'], {
    cwd: repo, timeout: 600_000, maxBuffer: 64 << 20,
    env: { ...process.env, NX_DAEMON: 'false', NX_NO_CLOUD: 'true', NX_TUI: 'false' },
  });
  // Snapshots are uploaded (qemu-img convert + Glance upload) unless EPHEMERA_REL_DIRECT_SNAPSHOT=1: a kill during
  // a DIRECT snapshot currently leaves an RBD snapshot and an RBD image behind (see e2e/reliability/README.md).
  // diskBusyMs above osd_client_watch_timeout (30 s): a QEMU destroyed by reconcile leaves its RBD watch
  // until that timeout, and the disk is busy until then.
  t = await testDriver(loadStack(), { timeouts: { diskBusyMs: 40_000 } }, { reconcile: false, directSnapshot: process.env.EPHEMERA_REL_DIRECT_SNAPSHOT === '1' });
  configPath = join(t.stateDir, 'driver.json');
  await writeFile(configPath, JSON.stringify(t.config));
  secretsBefore = await virshSecrets(t.stack);
  imageId = await uploadGuest(t.glance, `rel-kill-${seed}`);
  console.log(`SIGKILL test: seed ${seed} (replay with EPHEMERA_REL_SEED=${seed})`);
}, 900_000);

afterAll(async () => {
  await t?.driver.reconcile().catch(() => undefined);
  for (const u of survivors) await t?.driver.destroy(u).catch(() => undefined);
  for (const id of snapshotImages) await deleteImage(t?.glance, id);
  await deleteImage(t?.glance, imageId);
  const byOp = OPS.map((op) => `${op} ${killed.filter((k) => k.op === op).length}`).join(', ');
  printReport(`SIGKILL at random points (seed ${seed})`, [
    { fault: 'driver SIGKILLed (random point)', tries: killed.length, left: problems.length ? problems.join('<br>') : 'nothing', note: `in: ${byOp}; survivors booted: ${survivors.length}` },
  ]);
  await t?.close();
}, 300_000);

/** Violations found after the kills (asserted empty at the end, so one run shows every kind). */
const problems: string[] = [];

/** Every instance is whole or gone; no half-made Glance image; no RBD snapshot left on a survivor. */
async function checkConsistent(uuid: string, snapIds: string[], label: string): Promise<'whole' | 'gone' | 'partial'> {
  const bad = (what: string): void => {
    problems.push(`${label}: ${what}`);
  };
  const l = await leftovers(t, uuid);
  if (l.journal.length) bad(`journal entries left after reconcile: ${l.journal.join(', ')}`);
  const record = l.files.length > 0 && (await t.driver.get(uuid).then(() => true, () => false));
  const parts = { record, domain: l.domains.length === 1, disk: l.rbd.includes(`${uuid}_disk`) };
  const whole = parts.record && parts.domain && parts.disk && l.rbd.length === 1;
  const gone = !parts.record && !parts.domain && l.rbd.length === 0 && l.files.length === 0;
  if (!whole && !gone) bad(`instance is partial: ${JSON.stringify({ ...parts, ...l })}`);
  if (whole) {
    const snaps = JSON.parse((await exec('rbd', ['--conf', t.stack.ceph.users.admin.confPath, '--id', 'admin', 'snap', 'ls', '--format', 'json', `${t.stack.ceph.pools.vms}/${uuid}_disk`])).stdout) as { name: string }[];
    if (snaps.length) bad(`RBD snapshot(s) left on the disk: ${snaps.map((s) => s.name).join(', ')}`);
  }
  const imagesPool = await rbdLs(t.stack, t.stack.ceph.pools.images);
  for (const id of snapIds) {
    const img = await t.glance.getImage(id).catch(() => undefined);
    if (img) {
      snapshotImages.add(id);
      if (img.status !== 'active') bad(`half-made Glance snapshot image ${id} (${img.status})`);
    } else if (imagesPool.some((n) => n.startsWith(id))) bad(`RBD data of deleted snapshot image ${id} left in ${t.stack.ceph.pools.images}`);
  }
  const tmpFiles = await readdir(join(t.stateDir, 'tmp')).catch(() => [] as string[]);
  if (tmpFiles.length) bad(`temp files left in the state dir: ${tmpFiles.join(', ')}`);
  const secrets = await virshSecrets(t.stack);
  if (JSON.stringify(secrets) !== JSON.stringify(secretsBefore)) bad(`libvirt secrets changed: ${secrets.join(', ')}`);
  return whole ? 'whole' : gone ? 'gone' : 'partial';
}

describe(`driver SIGKILLed at ${KILLS} random points (seed ${seed})`, () => {
  it('an unkilled run measures each operation', async () => {
    const uuid = newUuid();
    const t0 = performance.now();
    const c = runChild(uuid, `rel-kill-cal-${uuid.slice(0, 8)}`);
    await c.exit;
    restartMs = Math.max(500, (c.lines.find((l) => l.ev === 'ready')?.t ?? t0 + 1_000) - t0);
    const at = (ev: string, op: Op) => c.lines.find((l) => l.ev === ev && l.op === op)?.t;
    for (const op of OPS) {
      const b = at('begin', op);
      const e = at('end', op);
      expect(b !== undefined && e !== undefined, `unkilled child did not finish ${op}: ${c.output()}`).toBe(true);
      durations[op] = e! - b!;
    }
    const snap = c.lines.find((l) => l.ev === 'end' && l.op === 'snapshot')?.imageId;
    if (snap) snapshotImages.add(snap);
    expect(await checkConsistent(uuid, snap ? [snap] : [], 'unkilled run')).toBe('gone');
    expect(problems).toEqual([]);
    console.log(`unkilled run: ${OPS.map((op) => `${op} ${Math.round(durations[op])} ms`).join(', ')}; driver start ${Math.round(restartMs)} ms`);
  });

  it(`after each of ${KILLS} SIGKILLs, reconcile leaves every instance whole or gone`, async () => {
    for (let i = 0; i < KILLS; i++) {
      const target = OPS[i % 3]!;
      const offsetMs = Math.round(rand() * durations[target]);
      const uuid = newUuid();
      const c = runChild(uuid, `rel-kill-${i}-${uuid.slice(0, 8)}`);
      // Wait for the target operation to begin (or the child to end), then kill after the offset.
      let ended = false;
      void c.exit.then(() => (ended = true));
      await waitUntil(`${target} to begin`, () => ended || c.lines.some((l) => l.ev === 'begin' && l.op === target), 120_000, 5);
      if (offsetMs > 0) await new Promise((r) => setTimeout(r, offsetMs));
      c.kill();
      await c.exit;
      // Reconcile no sooner than a restarted driver could (its start-up time): requests the dead
      // process had in flight settle first. (Reconciling within ~100 ms of the kill can orphan the
      // RBD image of a snapshot whose upload Glance is still finishing: README.md, known failure 8.)
      await new Promise((r) => setTimeout(r, restartMs));
      const last = c.lines.at(-1);
      const inOp = last ? (last.ev === 'begin' ? last.op! : last.ev === 'end' ? `after ${last.op}` : 'startup') : 'startup';
      // Journal before reconcile: what the operation had announced.
      const pending = (await t.driver.journal.entries()).filter((e) => e.instance === uuid);
      const lastStep = pending.length ? `${pending[0]!.op}:${pending[0]!.intents.at(-1)?.step ?? 'begin'}${pending[0]!.done.length ? `/${pending[0]!.done.at(-1)}` : ''}` : 'no open op';
      const snapIds = [
        ...pending.flatMap((e) => e.intents.flatMap((x) => (x.resource.kind === 'glance-image' ? [x.resource.id] : []))),
        ...c.lines.flatMap((l) => (l.imageId ? [l.imageId] : [])),
      ];
      const label = `kill ${i + 1} (${inOp}, ${lastStep})`;
      const actions = (await t.driver.reconcile()).filter((a) => a.instance === uuid);
      for (const a of actions.filter((x) => x.action === 'failed')) problems.push(`${label}: reconcile failed: ${a.error}`);
      const outcome = await checkConsistent(uuid, snapIds, label);
      if (outcome === 'whole') survivors.push(uuid);
      // Reported running and never destroyed => it must still be there.
      const reported = c.lines.some((l) => l.ev === 'end' && l.op === 'spawn');
      const destroyBegun = c.lines.some((l) => l.ev === 'begin' && l.op === 'destroy');
      if (reported && !destroyBegun && outcome !== 'whole') problems.push(`${label}: ${uuid} was reported running but is ${outcome}`);
      killed.push({ op: inOp, at: lastStep, offsetMs, outcome });
      console.log(`kill ${i + 1}/${KILLS}: target ${target} +${offsetMs} ms, in ${inOp} (${lastStep}) -> ${outcome}${actions.length ? `; reconcile ${actions.map((a) => `${a.op} ${a.action}`).join(', ')}` : ''}`);
    }
    const inOps = new Set(killed.map((k) => k.op));
    console.log(`kill points by operation in progress: ${[...inOps].map((o) => `${o} ${killed.filter((k) => k.op === o).length}`).join(', ')}`);
    expect(problems, `after the kills (seed ${seed}):\n${problems.join('\n')}`).toEqual([]);
  });

  it('every instance that survived a kill still boots (one batch)', async () => {
    expect(survivors.length).toBeGreaterThan(0);
    const before = new Map<string, number>();
    for (const u of survivors) before.set(u, readBootCount(await t.driver.console(u)) ?? 0);
    await Promise.all(survivors.map(async (u) => {
      const i = await t.driver.get(u);
      if (i.state === 'running') await waitUntil(`${u} to shut off`, async () => (await t.driver.get(u)).state === 'shutoff', 120_000, 200);
      await t.driver.powerOn(u);
    }));
    for (const u of survivors) {
      await waitUntil(`${u} to boot again`, async () => (readBootCount(await t.driver.console(u)) ?? 0) > before.get(u)!, 180_000, 200);
    }
    for (const u of survivors.splice(0)) {
      await t.driver.destroy(u);
      expect(await leftovers(t, u)).toEqual({ rbd: [], domains: [], files: [], journal: [] });
    }
    expect(await readdir(join(t.stateDir, 'journal')).catch(() => [])).toEqual([]);
  });
});
