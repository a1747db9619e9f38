// Storage faults with real processes (issue 11), on a PRIVATE stack (the shared one is never
// stopped): the OSD stopped mid-import, the monitor unreachable at spawn (and a dead mon port),
// a pool quota reached mid-import, Glance stopped mid-download, libvirtd restarted during a spawn.
// After each: a typed error within the configured timeouts, nothing left once the service is back
// (reconcile), and the next spawn works.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isDriverError, type DriverError, type DriverProgressEvent } from '@ephemera/driver';
import { cephCli } from '@ephemera/testkit';
import {
  NOTHING,
  TINY,
  deleteImage,
  describeLeftovers,
  leftovers,
  newUuid,
  printReport,
  privateStack,
  testDriver,
  timed,
  uploadGuest,
  type PrivateStack,
  type ReportRow,
  type TestDriver,
} from './support.js';

const CONNECT_TIMEOUT_MS = 4_000;
const MiB = 1024 * 1024;

let ps: PrivateStack;
let t: TestDriver;
let bigRaw: string; // 48 MiB of random data: an import that takes a while
let smallRaw: string;
const rows: ReportRow[] = [];

/** Names and codes along an error's cause chain (what a caller can branch on). */
function chain(err: unknown): string[] {
  const out: string[] = [];
  for (let e = err as { name?: string; code?: unknown; cause?: unknown } | undefined, i = 0; e && i < 8; e = e.cause as typeof e, i++) {
    out.push(`${e.name ?? '?'}${e.code !== undefined ? `(${String(e.code)})` : ''}`);
  }
  return out;
}

/** Starts a spawn that forces a full import of `image`; calls `atBytes` once `bytes` were imported. */
function spawnImport(uuid: string, image: string, bytes: number, atBytes: () => Promise<unknown>) {
  let fired: Promise<unknown> | undefined;
  const onProgress = (e: DriverProgressEvent): void => {
    if (e.instance !== uuid || fired) return;
    if (e.bytesDone >= bytes) fired = atBytes();
  };
  t.driver.on('progress', onProgress);
  const p = t.driver.spawn({ instance: uuid, image, flavor: TINY, forceImport: true }).finally(() => t.driver.off('progress', onProgress));
  return { spawn: p, fired: () => fired };
}

async function expectSpawnWorks(image: string, what: string): Promise<void> {
  const uuid = newUuid();
  const r = await t.driver.spawn({ instance: uuid, image, flavor: TINY });
  expect(['running', 'shutoff']).toContain(r.instance.state);
  await t.driver.destroy(uuid);
  expect(await leftovers(t, uuid), `${what}: after the retry's destroy`).toEqual(NOTHING);
}

beforeAll(async () => {
  ps = await privateStack();
  t = await testDriver(ps.info, {
    images: { rbd: { connectTimeoutMs: CONNECT_TIMEOUT_MS } },
    glance: { timeoutMs: 8_000, retries: 1 },
    timeouts: { diskBusyMs: 2_000, startMs: 30_000 },
  });
  bigRaw = await uploadGuest(t.glance, 'rel-faults-big', { size: 48 * MiB, fill: 'random' });
  smallRaw = await uploadGuest(t.glance, 'rel-faults-small');
}, 600_000);

afterAll(async () => {
  printReport('storage faults (private stack)', rows);
  await t?.driver.reconcile().catch(() => undefined);
  await deleteImage(t?.glance, bigRaw);
  await deleteImage(t?.glance, smallRaw);
  await t?.close().catch(() => undefined);
  await ps?.down();
}, 300_000);

describe('storage faults on a private stack', () => {
  it('OSD stopped during an import: typed error within the op timeout, no partial image once the OSD is back, retry succeeds', async () => {
    const uuid = newUuid();
    let stoppedAt = 0;
    const s = spawnImport(uuid, bigRaw, 4 * MiB, async () => {
      await ps.run(['stop', 'osd']);
      stoppedAt = performance.now();
    });
    const r = await timed(s.spawn);
    const afterStop = performance.now() - stoppedAt;
    await s.fired();
    try {
      expect(r.error, 'the spawn must fail').toBeDefined();
      console.log(`OSD stop: spawn failed ${Math.round(afterStop)} ms after the OSD stopped: ${chain(r.error).join(' <- ')}: ${(r.error as Error).message}`);
      expect(isDriverError(r.error)).toBe(true);
      expect(stoppedAt).toBeGreaterThan(0);
      // Within the rados op timeout, plus the rollback's own (timed-out) removal attempts.
      expect(afterStop).toBeLessThan(8 * CONNECT_TIMEOUT_MS);
    } finally {
      await ps.run(['start', 'osd']);
    }
    const actions = (await t.driver.reconcile()).filter((a) => a.instance === uuid);
    console.log(`OSD stop: reconcile after the OSD is back: ${JSON.stringify(actions)}`);
    const left = await leftovers(t, uuid);
    expect(left).toEqual(NOTHING);
    await expectSpawnWorks(bigRaw, 'OSD stop');
    rows.push({ fault: 'OSD stopped mid-import (rbd, 48 MiB raw)', tries: 1, left: describeLeftovers(left), note: `${(r.error as DriverError).code} ${Math.round(afterStop)} ms after the stop; retry ok` });
  });
});
