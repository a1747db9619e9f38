// RBD: what `image explain` plans is what spawn runs, with the stack's client.ephemera (read-only
// on `images`). A qcow2 image in Glance's rbd store: the plan is `convert-import by rbd-copy ...
// read images/<id>@snap`, so the root disk is converted from that snapshot, not downloaded from
// Glance. A raw image whose first rbd location's snapshot is gone: the plan clones the second,
// and so does spawn (Nova clones from the first cloneable location).
import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { guestImage, waitForMarker } from '@ephemera/testkit';
import type { Cluster } from '@ephemera/ceph-rbd-napi';
import {
  TINY,
  adminCluster,
  deleteImage,
  newUuid,
  rbdInfo,
  rbdLs,
  testDriver,
  uploadGuest,
  type TestDriver,
} from './support.js';

let t: TestDriver;
let admin: Cluster | undefined;
let imageId: string | undefined;
let rawId: string | undefined;
const uuid = newUuid();
const uuid2 = newUuid();
const marker = `rbd-plan-${uuid.slice(0, 8)}`;
const marker2 = `rbd-plan-${uuid2.slice(0, 8)}`;
const goneName = `ephemera-e2e-gone-${uuid2}`;
const goodName = `ephemera-e2e-good-${uuid2}`;

beforeAll(async () => {
  t = await testDriver();
  admin = await adminCluster(t.stack);
  imageId = await uploadGuest(t.glance, marker, { format: 'qcow2' });
});

afterAll(async () => {
  for (const u of [uuid, uuid2]) await t?.driver.destroy(u).catch(() => undefined);
  await deleteImage(t?.glance, imageId);
  // Glance removes every rbd image of the record, the one without its snapshot too.
  await deleteImage(t?.glance, rawId);
  // What a failure before the Glance record existed left in the images pool.
  const left = admin
    ? (await rbdLs(t.stack, t.stack.ceph.pools.images)).filter((n) => n === goneName || n === goodName)
    : [];
  if (left.length) {
    const io = await admin!.openIoCtx(t.stack.ceph.pools.images);
    try {
      for (const name of left) {
        const img = await io.open(name);
        for (const sn of await img.listSnapshots()) {
          if (sn.protected) await img.unprotectSnapshot(sn.name);
          await img.removeSnapshot(sn.name);
        }
        await img.close();
        await io.remove(name);
      }
    } finally {
      await io.close();
    }
  }
  await admin?.close();
  await t?.close();
});

describe('RBD plan and execution agree', () => {
  it('spawns a qcow2 image on RBD the way `image explain` says: converted from images/<id>@snap, no Glance download', async () => {
    const plan = await t.driver.plan(imageId!, 'rbd');
    expect(plan.chosen).toMatchObject({ method: 'convert-import', handler: 'rbd-copy' });
    expect(await t.driver.explain(imageId!, 'rbd')).toContain(`read images/${imageId}@snap`);
    const downloads = vi.spyOn(t.driver.glance, 'download');
    try {
      const r = await t.driver.spawn({ instance: { uuid, name: 'e2e-rbd-plan' }, image: imageId!, flavor: TINY });
      // The stored plan is the explained one, and the bytes came from where it says.
      expect(r.rootDisk.plan).toMatchObject({
        method: plan.chosen.method,
        handler: plan.chosen.handler,
        location: plan.chosen.location,
      });
      expect(r.rootDisk.method).toBe('imported');
      expect(r.rootDisk.reason).toContain(`images/${imageId}@snap`);
      expect(downloads).not.toHaveBeenCalled();
    } finally {
      downloads.mockRestore();
    }
    expect(await waitForMarker(t.driver.consolePath(uuid), 120_000)).toBe(marker);
    // A converted import, not a clone: no parent.
    expect((await rbdInfo(t.stack, `${t.stack.ceph.pools.vms}/${uuid}_disk`)).parent).toBeUndefined();
    await t.driver.destroy(uuid);
  });

  it('spawns a raw image whose first rbd location has lost its snapshot from a clone of the second, as planned, saying why the first was skipped', async () => {
    const bytes = await readFile(await guestImage({ marker: marker2 }));
    const pool = t.stack.ceph.pools.images;
    const gone = `rbd://${t.stack.ceph.fsid}/${pool}/${goneName}/snap`;
    const good = `rbd://${t.stack.ceph.fsid}/${pool}/${goodName}/snap`;
    const io = await admin!.openIoCtx(pool);
    try {
      // Two copies in the images pool; Glance checks a new rbd location by opening its snapshot,
      // so the first loses its snapshot only after both were added (in this order).
      for (const name of [goneName, goodName]) {
        await io.create(name, bytes.length);
        const img = await io.open(name);
        try {
          if (name === goodName) await img.write(0, bytes);
          await img.createSnapshot('snap');
          await img.protectSnapshot('snap');
        } finally {
          await img.close();
        }
      }
      rawId = (await t.glance.createImage({ name: `e2e-${marker2}`, disk_format: 'raw', container_format: 'bare' })).id;
      await t.glance.addLocation(rawId, gone);
      await t.glance.addLocation(rawId, good);
      const img = await io.open(goneName);
      try {
        await img.unprotectSnapshot('snap');
        await img.removeSnapshot('snap');
      } finally {
        await img.close();
      }
    } finally {
      await io.close();
    }
    expect((await t.glance.getImage(rawId)).locations?.map((l) => l.url)).toEqual([gone, good]);
    const plan = await t.driver.plan(rawId, 'rbd');
    expect(plan.chosen).toMatchObject({ method: 'clone', handler: 'rbd-clone', location: good });
    expect(plan.declined).toContainEqual(expect.objectContaining({ handler: 'rbd-clone', location: gone }));
    const downloads = vi.spyOn(t.driver.glance, 'download');
    try {
      const r = await t.driver.spawn({ instance: { uuid: uuid2, name: 'e2e-rbd-plan-2' }, image: rawId, flavor: TINY });
      expect(r.rootDisk.method).toBe('cloned');
      expect(r.rootDisk.plan).toMatchObject({ method: 'clone', handler: 'rbd-clone', location: good });
      expect(r.rootDisk.reason).toContain(`skipped ${gone}: `);
      expect(downloads).not.toHaveBeenCalled();
    } finally {
      downloads.mockRestore();
    }
    expect((await rbdInfo(t.stack, `${t.stack.ceph.pools.vms}/${uuid2}_disk`)).parent).toMatchObject({
      pool,
      image: goodName,
      snapshot: 'snap',
    });
    expect(await waitForMarker(t.driver.consolePath(uuid2), 120_000)).toBe(marker2);
    await t.driver.destroy(uuid2);
  });
});
