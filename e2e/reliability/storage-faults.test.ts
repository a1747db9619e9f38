// Storage faults with real processes (issue 11), on a PRIVATE stack (the shared one is never
// stopped): the OSD stopped mid-import, the monitor unreachable (for a new driver, a dead mon port,
// and at spawn on an already-connected driver), a pool quota reached mid-import, Glance stopped
// mid-download, libvirtd restarted during a spawn.
// After each: a typed error within the configured timeouts, nothing left once the service is
// back (reconcile in the SAME driver: no restart), and the next spawn works.
import { createServer, type Server } from 'node:http';
import { appendFile, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  createDriver,
  isDriverError,
  type DriverError,
  type DriverProgressEvent,
  type StepEvent,
} from '@ephemera/driver';
import { RbdBackend } from '@ephemera/backend-rbd';
import type { SourceImage } from '@ephemera/image-backend';
import { cephCli, guestImage } from '@ephemera/testkit';
import {
  NOTHING,
  TINY,
  deleteImage,
  driverConfig,
  leftovers,
  newUuid,
  printReport,
  rbdLs,
  privateStack,
  testDriver,
  timed,
  uploadGuest,
  virshDomains,
  waitUntil,
  type PrivateStack,
  type ReportRow,
  type TestDriver,
} from './support.js';

/** Ceph connect and per-operation timeout of the driver (`images.rbd.connectTimeoutMs`). */
const CEPH_TIMEOUT_MS = 4_000;
/** Glance request / download idle timeout (`glance.timeoutMs`). */
const GLANCE_TIMEOUT_MS = 8_000;
const MiB = 1024 * 1024;
const DRIVER_OVERRIDES = {
  images: { rbd: { connectTimeoutMs: CEPH_TIMEOUT_MS } },
  glance: { timeoutMs: GLANCE_TIMEOUT_MS, retries: 1 },
  timeouts: { diskBusyMs: 2_000, startMs: 30_000 },
};

let ps: PrivateStack;
let t: TestDriver;
let onRbd: string; // 48 MiB random raw image stored by Glance on the private cluster's RBD
let onHttp: string; // the same bytes behind an http location (Glance proxies them; not on Ceph)
let onSlow: string; // the same, served at ~5 MiB/s
let small: string; // the 1 MiB guest (clone path)
let http: Server;
/** Holds the slow stream at `at` bytes until `released` (see the http server). */
let slowHold: { at: number; released: boolean } | undefined;
const rows: ReportRow[] = [];

/** Names and codes along an error's cause chain (what a caller can branch on). */
function chain(err: unknown): string {
  const out: string[] = [];
  for (
    let e = err as { name?: string; code?: unknown; cause?: unknown } | undefined, i = 0;
    e && i < 8;
    e = e.cause as typeof e, i++
  ) {
    out.push(`${e.name ?? '?'}${e.code !== undefined ? `(${String(e.code)})` : ''}`);
  }
  return out.join(' <- ');
}

/**
 * Starts a spawn that imports `image` in full; runs `fault` once `bytes` were imported. `result`
 * settles within `deadlineMs`: a spawn still running then is reported with the steps it went
 * through (the caller's `finally` must restart the service, or every later test meets it stopped).
 */
function spawnWithFault(
  uuid: string,
  image: string,
  bytes: number,
  fault: () => Promise<unknown>,
  deadlineMs = 240_000,
) {
  let fired: Promise<unknown> | undefined;
  let firedAt = 0;
  const t0 = performance.now();
  const seen: string[] = [];
  let lastBytes = 0;
  const onProgress = (e: DriverProgressEvent): void => {
    if (e.instance !== uuid) return;
    lastBytes = e.bytesDone;
    if (fired || e.bytesDone < bytes) return;
    fired = fault().then((v) => {
      firedAt = performance.now();
      return v;
    });
  };
  const onStep = (e: StepEvent): void => {
    if (e.instance === uuid) seen.push(`${e.step} ${e.status} at ${Math.round(performance.now() - t0)} ms`);
  };
  t.driver.on('progress', onProgress);
  t.driver.on('step', onStep);
  const spawn = timed(t.driver.spawn({ instance: uuid, image, flavor: TINY, forceImport: true })).then((r) => ({
    ...r,
    end: performance.now(),
  }));
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new Error(
            `the spawn did not settle within ${deadlineMs} ms (fault ${fired ? `applied ${firedAt ? Math.round(firedAt - t0) : '(still running)'} ms in` : 'never fired'}; ${lastBytes} bytes imported); steps: ${seen.join(', ')}`,
          ),
        ),
      deadlineMs,
    );
  });
  return {
    result: Promise.race([spawn, deadline]).finally(() => {
      clearTimeout(timer);
      t.driver.off('progress', onProgress);
      t.driver.off('step', onStep);
    }),
    /** Waits for the fault to have been applied; ms from it to the spawn's end. */
    async faultToEnd(end: number): Promise<number> {
      if (!fired) throw new Error('the fault never fired: the import finished before reaching the trigger');
      await fired;
      return end - firedAt;
    },
  };
}

/** `p`, or a rejection naming `what` once `ms` passed (a hang fails its own test, not the file). */
async function bounded<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

async function reconcileUntilClean(uuid: string, timeoutMs = 120_000): Promise<{ ms: number; rounds: number }> {
  const t0 = performance.now();
  let rounds = 0;
  await waitUntil(
    `nothing left of ${uuid}`,
    async () => {
      rounds++;
      await bounded(t.driver.reconcile(), 120_000, 'reconcile');
      const l = await leftovers(t, uuid);
      return l.rbd.length + l.domains.length + l.files.length + l.journal.length === 0;
    },
    timeoutMs,
    2_000,
  );
  return { ms: performance.now() - t0, rounds };
}

async function spawnWorks(image: string, forceImport = false): Promise<void> {
  const uuid = newUuid();
  const r = await t.driver.spawn({ instance: uuid, image, flavor: TINY, forceImport });
  expect(['running', 'shutoff']).toContain(r.instance.state);
  await t.driver.destroy(uuid);
  expect(await leftovers(t, uuid)).toEqual(NOTHING);
}

beforeAll(async () => {
  ps = await privateStack();
  // A monitor refuses to START when its disk has less than mon_data_avail_crit (5 %) free; CI disks
  // are often that full (this machine: 4.7 %), so the private monitor may ignore it (running ones
  // only warn). The monitor tests stop and start it.
  await appendFile(ps.info.ceph.confPath, '\n[mon]\nmon_data_avail_crit = 0\n');
  t = await testDriver(ps.info, DRIVER_OVERRIDES);
  const bigPath = await guestImage({ marker: 'rel-faults-big', size: 48 * MiB, fill: 'random' });
  const big = await readFile(bigPath);
  onRbd = await uploadGuest(t.glance, 'rel-faults-big', { size: 48 * MiB, fill: 'random' });
  small = await uploadGuest(t.glance, 'rel-faults-small');
  // An http location on loopback (allowed by the stack's Glance): the bytes do not live on Ceph, so
  // stopping the OSD affects only the write side of an import.
  http = createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(big.length) });
    if (req.method === 'HEAD') return res.end();
    if (!req.url?.includes('slow')) return res.end(big);
    // ~5 MiB/s. While `slowHold` is set and not released, past `slowHold.at` bytes only a trickle
    // (4 KiB a tick, so no idle timeout fires) until the test releases it: the quota test holds the
    // stream until the monitor has really flagged the pool full, however slow its usage reports are.
    let off = 0;
    const tick = setInterval(() => {
      if (res.destroyed || off >= big.length) {
        clearInterval(tick);
        if (!res.destroyed) res.end();
        return;
      }
      const held = slowHold && !slowHold.released && off >= slowHold.at;
      const n = held ? 4096 : 256 * 1024;
      res.write(big.subarray(off, off + n));
      off += n;
    }, 50);
  });
  await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
  const img = await t.glance.createImage({ name: 'rel-faults-http', disk_format: 'raw', container_format: 'bare' });
  await t.glance.addLocation(img.id, `http://127.0.0.1:${(http.address() as { port: number }).port}/big.raw`);
  await t.glance.waitForStatus(img.id, ['active'], { timeoutMs: 60_000 });
  onHttp = img.id;
  const slow = await t.glance.createImage({ name: 'rel-faults-slow', disk_format: 'raw', container_format: 'bare' });
  await t.glance.addLocation(slow.id, `http://127.0.0.1:${(http.address() as { port: number }).port}/slow.raw`);
  await t.glance.waitForStatus(slow.id, ['active'], { timeoutMs: 60_000 });
  onSlow = slow.id;
}, 600_000);

afterAll(async () => {
  printReport('storage faults (private stack)', rows);
  if (t) await bounded(t.driver.reconcile(), 60_000, 'reconcile').catch(() => undefined);
  for (const id of [onRbd, onHttp, onSlow, small]) await deleteImage(t?.glance, id);
  await t?.close().catch(() => undefined);
  http?.closeAllConnections();
  http?.close();
  await ps?.down();
}, 300_000);

// Each test stops one service and starts it again; one that failed half-way must not leave it
// stopped for the next ones (their failures would only repeat the first).
beforeEach(async () => {
  const healthy = await ps.run(['status', '--quiet']).then(
    () => true,
    () => false,
  );
  if (healthy) return;
  console.error('private stack not healthy before this test: starting its stopped services');
  for (const svc of ['mon', 'osd', 'mgr', 'glance', 'libvirtd']) await ps.run(['start', svc]);
});

describe('storage faults on a private stack', () => {
  it('OSD stopped during an import: typed error within the op timeout; once the OSD is back, reconcile in the SAME driver removes the partial image; retry succeeds', async () => {
    const uuid = newUuid();
    const s = spawnWithFault(uuid, onHttp, 4 * MiB, () => ps.run(['stop', 'osd']));
    let r: Awaited<typeof s.result>;
    let afterStop: number;
    try {
      r = await s.result;
      afterStop = await s.faultToEnd(r.end);
      console.log(
        `OSD stop: spawn failed ${Math.round(afterStop)} ms after the OSD stopped: ${chain(r.error)}: ${(r.error as Error)?.message}`,
      );
      expect(r.error, 'the spawn must fail').toBeDefined();
      expect(isDriverError(r.error)).toBe(true);
      // The writes fail with ETIMEDOUT after rados_osd_op_timeout; the rollback's removal attempts
      // time out too (the op stays in the journal as rollback-failed).
      expect(afterStop).toBeLessThan(12 * CEPH_TIMEOUT_MS);
      expect(chain(r.error)).toMatch(/BACKEND_UNAVAILABLE|ETIMEDOUT|Timeout/);
      // Its rollback could not finish either: the error says so (the CLI exits 8, "run reconcile").
      expect((r.error as DriverError).code).toBe('ROLLBACK_FAILED');
      expect((r.error as Error).message).toMatch(/rollback left: .*run reconcile/);
    } finally {
      await ps.run(['start', 'osd']);
    }
    // Known failure 1 (fixed): the failed import closed its image, but the exclusive-lock release
    // and the unwatch could not reach the OSD. The OSD keeps the watch ~30 s
    // (osd_client_watch_timeout) after it returns; then the same driver's reconcile removes the
    // disk, clearing the lock its own client left (no driver restart).
    // The spawn's own rollback could not reach the OSD: the partial image is still there.
    const left = await leftovers(t, uuid);
    expect(left.rbd).toEqual([`${uuid}_disk`]);
    expect(left.journal).toEqual(['spawn:rollback-failed']);
    const clean = await reconcileUntilClean(uuid);
    console.log(
      `OSD stop: nothing left ${Math.round(clean.ms)} ms after the OSD was back, same driver (${clean.rounds} reconcile rounds)`,
    );
    await spawnWorks(onHttp, true);
    rows.push({
      fault: 'OSD stopped mid-import (rbd, 48 MiB raw)',
      tries: 1,
      left: 'nothing (reconcile, same driver)',
      note: `${(r.error as DriverError).code} ${Math.round(afterStop!)} ms after the stop; clean ${Math.round(clean.ms / 1000)} s after the OSD was back; retry ok`,
    });
  });

  it('monitor unreachable: a new driver fails within connectTimeout (mon stopped, dead mon port); nothing created', async () => {
    const domainsBefore = await virshDomains(ps.info);
    // A dead port: a ceph.conf for the same user whose mon_host nobody listens on.
    const conf = join(t.stateDir, 'dead-mon.conf');
    const orig = await readFile(ps.info.ceph.users.ephemera.confPath, 'utf8');
    await writeFile(conf, orig.replace(/^\s*mon[ _]host\s*=.*$/m, 'mon_host = [v2:127.0.0.1:9,v1:127.0.0.1:9]'));
    const dead = await timed(
      createDriver({
        config: driverConfig(ps.info, join(t.stateDir, 'dead'), {
          images: { rbd: { cephConf: conf, connectTimeoutMs: CEPH_TIMEOUT_MS } },
        }),
        reconcile: false,
      }),
    );
    console.log(`dead mon port: createDriver failed after ${Math.round(dead.ms)} ms: ${chain(dead.error)}`);
    expect(isDriverError(dead.error, 'INVALID_CONFIG')).toBe(true);
    expect(dead.ms).toBeLessThan(CEPH_TIMEOUT_MS + 3_000);

    await ps.run(['stop', 'mon']);
    let stopped: Awaited<ReturnType<typeof timed>>;
    const nomon = join(t.stateDir, 'nomon');
    try {
      stopped = await timed(
        createDriver({
          config: driverConfig(ps.info, nomon, { images: { rbd: { connectTimeoutMs: CEPH_TIMEOUT_MS } } }),
          reconcile: false,
        }),
      );
      console.log(`mon stopped: createDriver failed after ${Math.round(stopped.ms)} ms: ${chain(stopped.error)}`);
      expect(isDriverError(stopped.error, 'INVALID_CONFIG')).toBe(true);
      expect(stopped.ms).toBeLessThan(CEPH_TIMEOUT_MS + 3_000);
    } finally {
      await ps.run(['start', 'mon']);
    }
    // Nothing was created: no domain, no disk, no journal.
    expect(await virshDomains(ps.info)).toEqual(domainsBefore);
    expect(await rbdLs(ps.info, 'vms')).toEqual([]);
    expect(await readdir(join(nomon, 'journal')).catch(() => [] as string[])).toEqual([]);
    await spawnWorks(small);
    rows.push({
      fault: 'monitor port dead (new driver)',
      tries: 1,
      left: 'nothing',
      note: `INVALID_CONFIG in ${Math.round(dead.ms)} ms (timeout ${CEPH_TIMEOUT_MS})`,
    });
    rows.push({
      fault: 'monitor stopped (new driver)',
      tries: 1,
      left: 'nothing',
      note: `INVALID_CONFIG in ${Math.round(stopped!.ms)} ms`,
    });
  });

  it('monitor stopped at spawn on an already-connected driver: fails within connectTimeout, no hang, nothing created; the next spawn works', async () => {
    const domainsBefore = await virshDomains(ps.info);
    const uuid = newUuid();
    const direct = newUuid();
    // The backend alone, connected before the monitor stops: its createFromImage pings the
    // monitor beside the clone (which works on the cached OSD sessions), so the clone is made and
    // must be removed again before the error.
    const eph = ps.info.ceph.users.ephemera;
    const backend = await RbdBackend.create({
      pool: ps.info.ceph.pools.vms,
      confPath: eph.confPath,
      clientId: eph.id,
      keyringPath: eph.keyringPath,
      secretUuid: ps.info.libvirt.cephSecretUuid,
      connectTimeoutMs: CEPH_TIMEOUT_MS,
    });
    const record = await t.glance.getImage(small);
    const source: SourceImage = {
      id: record.id,
      size: record.size ?? 0,
      diskFormat: record.disk_format ?? 'raw',
      locations: (record.locations ?? []).map((l) => ({ url: l.url, metadata: l.metadata ?? {} })),
      open: () => Promise.reject(new Error('a clone never downloads')),
    };
    // Known failure 2 (fixed): the clone worked on the cached OSD sessions, then virDomainCreate hung
    // while QEMU's librbd waited for a monitor. The driver now calls the backend's checkAvailable()
    // (RBD: a monitor ping bounded by connectTimeoutMs) before Glance, the journal or any disk.
    await ps.run(['stop', 'mon']);
    let r: Awaited<ReturnType<typeof timed>>;
    let b: Awaited<ReturnType<typeof timed>>;
    const phases = new Set<string>();
    const steps: string[] = [];
    const t0 = performance.now();
    const onStep = (e: StepEvent): void => {
      if (e.instance === uuid) steps.push(`${e.step} ${e.status} at ${Math.round(performance.now() - t0)} ms`);
    };
    t.driver.on('step', onStep);
    try {
      r = await timed(t.driver.spawn({ instance: uuid, image: small, flavor: TINY }));
      b = await timed(
        backend.createFromImage({ instance: direct, name: 'disk' }, source, {
          onProgress: (e) => phases.add(e.phase),
        }),
      );
    } finally {
      t.driver.off('step', onStep);
      await ps.run(['start', 'mon']);
      await backend.close();
    }
    console.log(
      `mon stopped, connected backend: createFromImage ${b.error ? `failed after ${Math.round(b.ms)} ms: ${(b.error as Error).message}` : 'succeeded?!'}`,
    );
    expect((b.error as { code?: string } | undefined)?.code).toBe('BACKEND_UNAVAILABLE');
    expect((b.error as Error).message).toMatch(/monitor is unreachable/);
    expect(b.ms).toBeLessThan(CEPH_TIMEOUT_MS + 3_000);
    // The clone did run while the monitor was down (its progress started), and was removed.
    expect([...phases]).toContain('clone');
    expect(await leftovers(t, direct)).toEqual(NOTHING);
    console.log(`mon stopped, connected driver: steps ${steps.join(', ')}`);
    console.log(
      `mon stopped, connected driver: spawn ${r.error ? `failed after ${Math.round(r.ms)} ms: ${chain(r.error)}: ${(r.error as Error).message}` : 'succeeded?!'}`,
    );
    expect(isDriverError(r.error)).toBe(true);
    expect(chain(r.error)).toMatch(/BACKEND_UNAVAILABLE/);
    expect((r.error as Error).message).toMatch(/monitor is unreachable/);
    expect(r.ms).toBeLessThan(CEPH_TIMEOUT_MS + 3_000);
    expect(await leftovers(t, uuid)).toEqual(NOTHING);
    expect(await virshDomains(ps.info)).toEqual(domainsBefore);
    await spawnWorks(small);
    rows.push({
      fault: 'monitor stopped at spawn (connected driver)',
      tries: 1,
      left: 'nothing',
      note: `${(r.error as DriverError).code} (BACKEND_UNAVAILABLE) in ${Math.round(r.ms)} ms (timeout ${CEPH_TIMEOUT_MS}); next spawn ok`,
    });
  });

  it('pool quota reached mid-import: typed error, nothing left, retry succeeds once the quota is lifted', async () => {
    const admin = (args: string[]) => cephCli('admin', ['ceph', ...args], { stack: ps.info });
    const uuid = newUuid();
    await admin(['osd', 'pool', 'set-quota', 'vms', 'max_bytes', String(8 * MiB)]);
    let r: Awaited<ReturnType<typeof timed>>;
    // 16 MiB (twice the quota) go through, then the stream trickles until the pool carries the
    // full_quota flag (the monitor sets it from usage reports, seconds later: how many depends on
    // the load), then the rest of the 48 MiB must hit the full pool.
    slowHold = { at: 16 * MiB, released: false };
    try {
      const spawning = timed(t.driver.spawn({ instance: uuid, image: onSlow, flavor: TINY, forceImport: true }));
      const vmsFlags = async () =>
        (await admin(['osd', 'pool', 'ls', 'detail'])).split('\n').find((l) => l.includes("'vms'")) ?? '';
      await waitUntil(
        'the vms pool to be flagged full_quota',
        async () => /\bfull_quota\b/.test(await vmsFlags()),
        120_000,
        1_000,
      ).finally(() => {
        slowHold!.released = true;
      });
      r = await spawning;
      console.log(
        `pool quota: pool flags at the end: ${(await admin(['osd', 'pool', 'ls', 'detail']))
          .split('\n')
          .filter((l) => l.includes("'vms'"))
          .join(' ')}`,
      );
      console.log(
        `pool quota: spawn ${r.error ? `failed after ${Math.round(r.ms)} ms: ${chain(r.error)}: ${(r.error as Error).message}` : 'succeeded?!'}`,
      );
      expect(r.error, 'a 48 MiB import into a pool with an 8 MiB quota must fail').toBeDefined();
      expect(isDriverError(r.error)).toBe(true);
    } finally {
      slowHold = undefined;
      await admin(['osd', 'pool', 'set-quota', 'vms', 'max_bytes', '0']);
    }
    // Same driver (known failure 1, fixed): its reconcile removes the partial image.
    const clean = await reconcileUntilClean(uuid);
    console.log(
      `pool quota: nothing left ${Math.round(clean.ms)} ms after the quota was lifted, same driver (${clean.rounds} reconcile rounds)`,
    );
    await spawnWorks(onHttp, true);
    rows.push({
      fault: 'pool quota (max_bytes 8 MiB) reached mid-import (48 MiB at ~5 MiB/s)',
      tries: 1,
      left: 'nothing (reconcile, same driver)',
      note: `${(r!.error as DriverError).code} after ${Math.round(r!.ms)} ms; clean after ${Math.round(clean.ms / 1000)} s; retry ok`,
    });
  });

  it('Glance stopped mid-download: typed error within the Glance timeouts, the partial disk is rolled back, retry succeeds', async () => {
    const uuid = newUuid();
    // The slow http location (~5 MiB/s through Glance's proxy): Glance is stopped while it still
    // streams (from RBD, the 48 MiB can be through before the stop lands).
    const s = spawnWithFault(uuid, onSlow, 4 * MiB, () => ps.run(['stop', 'glance']));
    let r: Awaited<typeof s.result>;
    let afterStop: number;
    try {
      r = await s.result;
      afterStop = await s.faultToEnd(r.end);
      console.log(
        `Glance stop: spawn failed ${Math.round(afterStop)} ms after Glance stopped: ${chain(r.error)}: ${(r.error as Error)?.message}`,
      );
      expect(isDriverError(r.error)).toBe(true);
      expect(afterStop).toBeLessThan(GLANCE_TIMEOUT_MS * 4);
      // The OSD is up, so the spawn's own rollback removed everything.
      expect(await leftovers(t, uuid)).toEqual(NOTHING);
    } finally {
      await ps.run(['start', 'glance']);
    }
    await spawnWorks(onRbd, true);
    rows.push({
      fault: 'Glance stopped mid-download (48 MiB through Glance at ~5 MiB/s)',
      tries: 1,
      left: 'nothing',
      note: `${(r.error as DriverError).code} ${Math.round(afterStop!)} ms after the stop; retry ok`,
    });
  });

  it('libvirtd restarted during a spawn (import, domain start): typed error and full rollback (or success); the driver reconnects and the next spawn works', async () => {
    // Known failure 3 (fixed): the driver reconnects on next use, retrying while libvirtd comes back
    // (timeouts.libvirtReconnectMs), so a spawn whose virDomainCreate died with the connection still
    // rolls back completely (journal included).
    const notes: string[] = [];
    for (const [at, image, forceImport] of [
      ['root-disk', onHttp, true],
      ['start', small, false],
    ] as const) {
      const uuid = newUuid();
      let restarted: Promise<{ ms: number; error?: unknown }> | undefined;
      const onStep = (e: StepEvent): void => {
        if (e.instance === uuid && e.step === at && e.status === 'started' && !restarted)
          restarted = timed(ps.run(['restart', 'libvirtd']));
      };
      t.driver.on('step', onStep);
      const r = await timed(t.driver.spawn({ instance: uuid, image, flavor: TINY, forceImport }));
      t.driver.off('step', onStep);
      const restart = await restarted;
      expect(restart, `libvirtd was restarted at ${at}`).toBeDefined();
      expect(restart!.error).toBeUndefined();
      console.log(
        `libvirtd restart at ${at} (${Math.round(restart!.ms)} ms): spawn ${r.error ? `failed after ${Math.round(r.ms)} ms: ${chain(r.error)}: ${(r.error as Error).message}` : `ok after ${Math.round(r.ms)} ms`}`,
      );
      if (r.error) {
        expect(isDriverError(r.error)).toBe(true);
        // Rolled back by the spawn itself: no disk, domain, files, nor journal entry.
        expect(await leftovers(t, uuid)).toEqual(NOTHING);
      } else {
        await t.driver.destroy(uuid);
        expect(await leftovers(t, uuid)).toEqual(NOTHING);
      }
      notes.push(
        `at ${at}: ${r.error ? `${(r.error as DriverError).code}, rolled back` : 'spawn ok'} in ${Math.round(r.ms)} ms`,
      );
    }
    const n = await timed(spawnWorks(small));
    expect(n.error).toBeUndefined();
    rows.push({
      fault: 'libvirtd restarted during a spawn (at root-disk; at start)',
      tries: 2,
      left: 'nothing',
      note: `${notes.join('; ')}; next spawn ok (same driver)`,
    });
  });
});
