// A deferred direct snapshot when Glance's own rbd user cannot read the instances pool (the dev
// stack's `glance`): Glance refuses the clone's location (HTTP 500: it cannot open the parent), so
// the driver flattens first and registers it again; the snapshot is complete and bootable.
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadStack, waitForMarker } from '@ephemera/testkit';
import { TINY, deleteImage, newUuid, rbdInfo, testDriver, uploadGuest, type TestDriver } from './support.js';

let t: TestDriver;
let baseId: string | undefined;
let snapId: string | undefined;
const [a, b] = [newUuid(), newUuid()];
const marker = `flatten-e2e-${a.slice(0, 8)}`;

beforeAll(async () => {
  const admin = loadStack().ceph.users.admin;
  // A snapshot user that may read the instances pool: the snapshot is a clone, deferred.
  t = await testDriver({
    images: { rbd: { snapshotUser: admin.id, snapshotCephConf: admin.confPath, snapshotKeyring: admin.keyringPath } },
  });
  baseId = await uploadGuest(t.glance, marker);
});

afterAll(async () => {
  for (const u of [b, a]) await t?.driver.destroy(u).catch(() => undefined);
  await t?.driver.flattenIdle();
  await deleteImage(t.glance, snapId);
  await deleteImage(t.glance, baseId);
  await t?.close();
});

describe('deferred direct snapshot, Glance without read access to the instances pool', () => {
  it('flattens before registering the location: an active, flat Glance image that boots', async () => {
    await t.driver.spawn({ instance: { uuid: a, name: 'flatten-a' }, image: baseId!, flavor: TINY });
    expect(await waitForMarker(t.driver.consolePath(a), 120_000)).toBe(marker);
    const snap = await t.driver.snapshot(a, `flatten-snap-${a.slice(0, 8)}`);
    snapId = snap.imageId;
    expect(snap.method).toBe('direct');
    expect(snap.flattenPending).toBeUndefined();
    expect((await t.glance.getImage(snapId)).status).toBe('active');
    expect((await rbdInfo(t.stack, `${t.stack.ceph.pools.images}/${snapId}`)).parent).toBeUndefined();
    const u = t.stack.ceph.users.admin;
    const snaps = execFileSync(
      'rbd',
      ['--conf', u.confPath, '--id', u.id, 'snap', 'ls', '--format', 'json', `${t.stack.ceph.pools.vms}/${a}_disk`],
      { timeout: 60_000 },
    ).toString();
    expect(JSON.parse(snaps)).toEqual([]); // the temporary snapshot is gone
    await t.driver.spawn({ instance: { uuid: b, name: 'flatten-b' }, image: snapId, flavor: TINY });
    expect(await waitForMarker(t.driver.consolePath(b), 120_000)).toBe(marker);
  }, 400_000);
});
