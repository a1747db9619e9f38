// RBD: three instances boot from copy-on-write clones of one Glance image; each prints its
// marker; each root disk's parent is the image's snapshot; writes stay in their own disk; destroy
// leaves no RBD image, domain or secret behind.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Cluster } from '@ephemera/ceph-rbd-napi';
import {
  BOOT_COUNTER_OFFSET,
  MARKER_OFFSET,
  markerSector,
  readBootCount,
  readMarker,
  waitForMarker,
} from '@ephemera/testkit';
import type { SpawnResult } from '@ephemera/driver';
import {
  TINY,
  adminCluster,
  deleteImage,
  newUuid,
  rbdInfo,
  rbdLs,
  rbdRead,
  rbdWrite,
  testDriver,
  uploadGuest,
  virshDomains,
  virshSecrets,
  waitShutoff,
  type TestDriver,
} from './support.js';

let t: TestDriver;
let admin: Cluster;
let imageId: string | undefined;
let secretsBefore: string[];
const uuids = [newUuid(), newUuid(), newUuid()];
const marker = `rbd-e2e-${uuids[0]!.slice(0, 8)}`;
const results: SpawnResult[] = [];

beforeAll(async () => {
  t = await testDriver();
  admin = await adminCluster(t.stack);
  secretsBefore = await virshSecrets(t.stack);
  imageId = await uploadGuest(t.glance, marker);
});

afterAll(async () => {
  for (const u of uuids) await t?.driver.destroy(u).catch(() => undefined);
  await deleteImage(t.glance, imageId);
  await admin?.close();
  await t?.close();
});

describe('RBD backend end to end', () => {
  it('boots 3 instances in parallel from CoW clones; each prints the marker', async () => {
    const started = performance.now();
    results.push(
      ...(await Promise.all(
        uuids.map((uuid, i) =>
          t.driver.spawn({
            instance: { uuid, name: `e2e-rbd-${i}` },
            image: imageId!,
            flavor: { ...TINY, swapMiB: 16, ephemeralGiB: 1 },
          }),
        ),
      )),
    );
    console.log(
      `3 parallel spawns: ${Math.round(performance.now() - started)} ms; root disks ${results.map((r) => `${r.rootDisk.method} ${Math.round(r.rootDisk.durationMs)} ms`).join(', ')}`,
    );
    for (const r of results) {
      expect(r.rootDisk.method).toBe('cloned');
      expect(r.rootDisk.plan.method).toBe('clone');
      expect(r.instance.disks.map((d) => d.name)).toEqual(['disk', 'disk.local', 'disk.swap']);
      expect(Object.keys(r.timings)).toEqual(
        expect.arrayContaining(['resolve', 'root-disk', 'ephemeral-disk', 'swap-disk', 'define', 'start']),
      );
    }
    for (const u of uuids) expect(await waitForMarker(t.driver.consolePath(u), 120_000)).toBe(marker);
  });

  it("each root disk's parent is the Glance image's snapshot", async () => {
    const pool = t.stack.ceph.pools.vms;
    for (const u of uuids) {
      const info = await rbdInfo(t.stack, `${pool}/${u}_disk`);
      expect(info.parent).toMatchObject({ pool: t.stack.ceph.pools.images, image: imageId, snapshot: 'snap' });
    }
    const names = await rbdLs(t.stack, pool);
    for (const u of uuids)
      expect(names.filter((n) => n.startsWith(u)).sort()).toEqual([`${u}_disk`, `${u}_disk.local`, `${u}_disk.swap`]);
  });

  it("writes in one guest's disk change nothing in the others or in the Glance image", async () => {
    const pool = t.stack.ceph.pools.vms;
    for (const u of uuids) await waitShutoff(t.driver, u);
    // The guest itself wrote its boot counter (sector 2) into its own clone.
    for (const u of uuids)
      expect((await rbdRead(admin, pool, `${u}_disk`, BOOT_COUNTER_OFFSET, 2)).readUInt16LE(0)).toBe(1);
    expect(
      (await rbdRead(admin, t.stack.ceph.pools.images, imageId!, BOOT_COUNTER_OFFSET, 2, 'snap')).readUInt16LE(0),
    ).toBe(0);
    // Now rewrite instance 0's marker and boot everything again.
    const other = `rbd-e2e-changed-${uuids[0]!.slice(0, 8)}`;
    await rbdWrite(admin, pool, `${uuids[0]}_disk`, MARKER_OFFSET, markerSector(other));
    for (const u of uuids) await t.driver.powerOn(u);
    for (const u of uuids) {
      await waitShutoff(t.driver, u);
      const text = await t.driver.console(u);
      expect(readBootCount(text), u).toBe(2);
    }
    expect(readMarker(await t.driver.console(uuids[0]!))).toBe(other);
    for (const u of uuids.slice(1)) expect(readMarker(await t.driver.console(u))).toBe(marker);
    const snapMarker = await rbdRead(admin, t.stack.ceph.pools.images, imageId!, MARKER_OFFSET, marker.length, 'snap');
    expect(snapMarker.toString('latin1')).toBe(marker);
    expect(
      (await rbdRead(admin, t.stack.ceph.pools.images, imageId!, BOOT_COUNTER_OFFSET, 2, 'snap')).readUInt16LE(0),
    ).toBe(0);
  });

  it('lists the instances; destroy leaves no RBD image, domain or secret behind', async () => {
    const listed = await t.driver.list();
    expect(listed.map((i) => i.uuid).sort()).toEqual([...uuids].sort());
    for (const u of uuids) await t.driver.destroy(u);
    const names = await rbdLs(t.stack, t.stack.ceph.pools.vms);
    for (const u of uuids) expect(names.filter((n) => n.startsWith(u))).toEqual([]);
    const doms = await virshDomains(t.stack);
    for (const u of uuids) expect(doms).not.toContain(t.driver.domainName(u));
    expect(await virshSecrets(t.stack)).toEqual(secretsBefore);
    expect(await t.driver.list()).toEqual([]);
    expect(await t.driver.journal.entries()).toEqual([]);
    // the clones are gone, so the Glance image can be deleted
    await t.glance.deleteImage(imageId!);
    imageId = undefined;
  });
});
