// The clone-depth policy through spawn() (issue 21.4): an operator's Glance location that is itself
// a clone of a clone makes each instance disk deeper than its parent. With soft 1 and hard 2, a
// disk of depth 3 is flattened before spawn() returns (with `flatten` progress of the spawn), one
// of depth 2 after it returns, by the background queue; both guests boot from their disk.
import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Cluster, IoCtx } from '@ephemera/ceph-rbd-napi';
import type { DriverProgressEvent } from '@ephemera/driver';
import { guestImage, waitForMarker } from '@ephemera/testkit';
import { TINY, adminCluster, deleteImage, newUuid, testDriver, type TestDriver } from './support.js';

let t: TestDriver;
let admin: Cluster | undefined;
let io: IoCtx | undefined;
const [hardUuid, softUuid] = [newUuid(), newUuid()];
const marker = `clone-depth-${hardUuid.slice(0, 8)}`;
// base <- c1 <- c2 in the images pool, each with a protected snapshot `snap`.
const names = [0, 1, 2].map((i) => `ephemera-e2e-depth-${hardUuid.slice(0, 8)}-${i}`);
const glanceIds: (string | undefined)[] = [];

async function protectSnap(name: string): Promise<void> {
  const img = await io!.open(name);
  try {
    await img.createSnapshot('snap');
    await img.protectSnapshot('snap');
  } finally {
    await img.close();
  }
}

/** A raw Glance image whose only location is `<images pool>/<name>@snap`. */
async function glanceImageAt(name: string): Promise<string> {
  const id = (await t.glance.createImage({ name: `e2e-${name}`, disk_format: 'raw', container_format: 'bare' })).id;
  glanceIds.push(id);
  await t.glance.addLocation(id, `rbd://${t.stack.ceph.fsid}/${t.stack.ceph.pools.images}/${name}/snap`);
  return id;
}

/** Collects the driver's progress events of `uuid` until `stop()`. */
function progressOf(uuid: string): { seen: DriverProgressEvent[]; stop: () => void } {
  const seen: DriverProgressEvent[] = [];
  const listener = (e: DriverProgressEvent): void => {
    if (e.instance === uuid) seen.push(e);
  };
  t.driver.on('progress', listener);
  return { seen, stop: () => t.driver.off('progress', listener) };
}

const depthOf = (uuid: string): Promise<number> =>
  t.driver.backends.get('rbd').cloneDepth!({ instance: uuid, name: 'disk' });

beforeAll(async () => {
  t = await testDriver({ images: { rbd: { cloneDepth: { soft: 1, hard: 2 } } } });
  admin = await adminCluster(t.stack);
  io = await admin.openIoCtx(t.stack.ceph.pools.images);
  const bytes = await readFile(await guestImage({ marker }));
  await io.create(names[0]!, bytes.length);
  const base = await io.open(names[0]!);
  try {
    await base.write(0, bytes);
  } finally {
    await base.close();
  }
  await protectSnap(names[0]!);
  for (const i of [1, 2]) {
    await io.clone({ parent: { image: names[i - 1]!, snap: 'snap' }, dest: { name: names[i]! } });
    await protectSnap(names[i]!);
  }
}, 300_000);

afterAll(async () => {
  for (const u of [hardUuid, softUuid]) await t?.driver.destroy(u).catch(() => undefined);
  await t?.driver.flattenIdle().catch(() => undefined);
  // Glance removes the rbd image of each location (the deepest first: c1 still has c2 as child).
  for (const id of glanceIds.reverse()) await deleteImage(t?.glance, id);
  for (const name of [...names].reverse()) {
    if (!io) break;
    const img = await io.open(name).catch(() => undefined);
    if (!img) continue;
    try {
      await img.unprotectSnapshot('snap').catch(() => undefined);
      await img.removeSnapshot('snap').catch(() => undefined);
    } finally {
      await img.close();
    }
    await io.remove(name).catch(() => undefined);
  }
  await io?.close();
  await admin?.close();
  await t?.close();
}, 300_000);

describe('clone-depth policy through spawn (soft 1, hard 2)', () => {
  it('a disk of depth 3 (past hard) is flattened before spawn returns, with flatten progress; the guest boots', async () => {
    const image = await glanceImageAt(names[2]!);
    const { seen, stop } = progressOf(hardUuid);
    try {
      const r = await t.driver.spawn({ instance: { uuid: hardUuid, name: 'depth-hard' }, image, flavor: TINY });
      expect(r.rootDisk.method).toBe('cloned');
      expect(await depthOf(hardUuid)).toBe(0);
    } finally {
      stop();
    }
    const flatten = seen.filter((e) => e.op === 'spawn' && e.phase === 'flatten');
    expect(flatten.length).toBeGreaterThan(0);
    expect(flatten.at(-1)?.bytesDone).toBe(flatten.at(-1)?.bytesTotal);
    expect(seen.at(-1)).toMatchObject({ phase: 'done', percent: 100 });
    expect(await waitForMarker(t.driver.consolePath(hardUuid), 120_000)).toBe(marker);
  }, 300_000);

  it('a disk of depth 2 (past soft) is cloned as is, then flattened by the background queue; the guest boots', async () => {
    const image = await glanceImageAt(names[1]!);
    const { seen, stop } = progressOf(softUuid);
    try {
      const r = await t.driver.spawn({ instance: { uuid: softUuid, name: 'depth-soft' }, image, flavor: TINY });
      expect(r.rootDisk.method).toBe('cloned');
      // Not flattened inside spawn(): no flatten progress of the spawn itself.
      expect(seen.filter((e) => e.op === 'spawn' && e.phase === 'flatten')).toEqual([]);
      await t.driver.flattenIdle();
      expect(await depthOf(softUuid)).toBe(0);
      const background = seen.filter((e) => e.op === 'flatten');
      expect(background.filter((e) => e.phase === 'flatten').length).toBeGreaterThan(0);
      expect(background.at(-1)).toMatchObject({ phase: 'done', percent: 100 });
    } finally {
      stop();
    }
    expect(await waitForMarker(t.driver.consolePath(softUuid), 120_000)).toBe(marker);
  }, 300_000);
});
