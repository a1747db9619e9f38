// RBD: what `image explain` plans is what spawn runs. A qcow2 image in Glance's rbd store, with
// the stack's client.ephemera (read-only on `images`): the plan is `convert-import by rbd-copy ...
// read images/<id>@snap`, so the root disk must be converted from that snapshot, not downloaded
// from Glance.
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { waitForMarker } from '@ephemera/testkit';
import { TINY, deleteImage, newUuid, rbdInfo, testDriver, uploadGuest, type TestDriver } from './support.js';

let t: TestDriver;
let imageId: string | undefined;
const uuid = newUuid();
const marker = `rbd-plan-${uuid.slice(0, 8)}`;

beforeAll(async () => {
  t = await testDriver();
  imageId = await uploadGuest(t.glance, marker, { format: 'qcow2' });
});

afterAll(async () => {
  await t?.driver.destroy(uuid).catch(() => undefined);
  await deleteImage(t?.glance, imageId);
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
      expect(r.rootDisk.plan).toMatchObject({ method: plan.chosen.method, handler: plan.chosen.handler, location: plan.chosen.location });
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
});
