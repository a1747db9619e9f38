// A non-raw (qcow2) Glance image boots on RBD through the import path; a running RBD instance is
// snapshotted to Glance and a new instance boots from that snapshot.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readBootCount, readMarker, waitForMarker } from '@ephemera/testkit';
import {
  TINY,
  deleteImage,
  newUuid,
  rbdInfo,
  rbdLs,
  testDriver,
  uploadGuest,
  virshDomains,
  waitShutoff,
  type TestDriver,
} from './support.js';

let t: TestDriver;
const images: string[] = [];
const uuids: string[] = [];

beforeAll(async () => {
  t = await testDriver();
});
afterAll(async () => {
  for (const u of uuids) await t?.driver.destroy(u).catch(() => undefined);
  for (const id of images.reverse()) await deleteImage(t?.glance, id);
  await t?.close();
});

async function leftovers(uuid: string): Promise<{ rbd: string[]; domains: string[] }> {
  return {
    rbd: (await rbdLs(t.stack, t.stack.ceph.pools.vms)).filter((n) => n.startsWith(uuid)),
    domains: (await virshDomains(t.stack)).filter((d) => d === t.driver.domainName(uuid)),
  };
}

describe('qcow2 Glance image on RBD', () => {
  it('is imported (converted to raw), says why it was not cloned, and boots', async () => {
    const marker = `qcow2-on-rbd-${newUuid().slice(0, 8)}`;
    const imageId = await uploadGuest(t.glance, marker, { format: 'qcow2' });
    images.push(imageId);
    const explain = await t.driver.explain(imageId);
    expect(explain).toMatch(/plan: convert-import/);
    expect(explain).toMatch(/declined: rbd-clone/);
    const uuid = newUuid();
    uuids.push(uuid);
    const r = await t.driver.spawn({ instance: uuid, image: imageId, flavor: { ...TINY, rootGiB: 1 } });
    expect(r.rootDisk.method).toBe('imported');
    expect(r.rootDisk.reason).toMatch(/qcow2|raw|format/i);
    expect(r.rootDisk.plan.method).toBe('convert-import');
    expect(r.rootDisk.sizeBytes).toBe(1024 ** 3);
    expect(await waitForMarker(t.driver.consolePath(uuid), 120_000)).toBe(marker);
    const info = await rbdInfo(t.stack, `${t.stack.ceph.pools.vms}/${uuid}_disk`);
    expect(info.parent).toBeUndefined();
    expect(info.size).toBe(1024 ** 3);
    await t.driver.destroy(uuid);
    expect(await leftovers(uuid)).toEqual({ rbd: [], domains: [] });
  });
});

describe('snapshot of an RBD instance', () => {
  it('snapshots to a new Glance image (direct RBD snapshot) and boots a new instance from it', async () => {
    const marker = `snap-src-${newUuid().slice(0, 8)}`;
    const baseId = await uploadGuest(t.glance, marker);
    images.push(baseId);
    const src = newUuid();
    uuids.push(src);
    await t.driver.spawn({ instance: { uuid: src, name: 'snap-src' }, image: baseId, flavor: TINY });
    expect(await waitForMarker(t.driver.consolePath(src), 120_000)).toBe(marker);
    await waitShutoff(t.driver, src);
    // The guest counted its first boot on its own disk: the snapshot carries that.
    const snap = await t.driver.snapshot('snap-src', `e2e-snapshot-${src.slice(0, 8)}`);
    images.push(snap.imageId);
    expect(snap.method).toBe('direct');
    expect(snap.location).toMatch(
      new RegExp(`^rbd://${t.stack.ceph.fsid}/${t.stack.ceph.pools.images}/${snap.imageId}/snap$`),
    );
    const img = await t.glance.getImage(snap.imageId);
    expect(img.status).toBe('active');
    expect(img.instance_uuid).toBe(src);

    const dst = newUuid();
    uuids.push(dst);
    const r = await t.driver.spawn({ instance: dst, image: snap.imageId, flavor: TINY });
    expect(r.rootDisk.method).toBe('cloned');
    expect((await rbdInfo(t.stack, `${t.stack.ceph.pools.vms}/${dst}_disk`)).parent).toMatchObject({
      image: snap.imageId,
      snapshot: 'snap',
    });
    await waitShutoff(t.driver, dst);
    const text = await t.driver.console(dst);
    expect(readMarker(text)).toBe(marker);
    expect(readBootCount(text)).toBe(2);

    await t.driver.destroy(dst);
    await t.driver.destroy(src);
    expect(await leftovers(dst)).toEqual({ rbd: [], domains: [] });
    expect(await leftovers(src)).toEqual({ rbd: [], domains: [] });
  });
});

describe('snapshot of a qcow2 instance (no direct snapshot)', () => {
  it('uploads the disk to a new Glance image, which boots on RBD', async () => {
    const q = await testDriver({ images: { type: 'qcow2', enabled: ['rbd'] } });
    const src = newUuid();
    const dst = newUuid();
    try {
      const marker = `snap-qcow2-${src.slice(0, 8)}`;
      const baseId = await uploadGuest(q.glance, marker);
      images.push(baseId);
      await q.driver.spawn({ instance: src, image: baseId, flavor: TINY });
      await waitShutoff(q.driver, src);
      const snap = await q.driver.snapshot(src, `e2e-upload-snapshot-${src.slice(0, 8)}`);
      images.push(snap.imageId);
      expect(snap.method).toBe('upload');
      expect((await q.glance.getImage(snap.imageId)).status).toBe('active');
      const r = await q.driver.spawn({ instance: dst, image: snap.imageId, flavor: TINY, backend: 'rbd' });
      expect(r.rootDisk.method).toBe('cloned');
      await waitShutoff(q.driver, dst);
      const text = await q.driver.console(dst);
      expect(readMarker(text)).toBe(marker);
      expect(readBootCount(text)).toBe(2);
      await q.driver.destroy(dst);
      await q.driver.destroy(src);
      expect(await q.driver.backends.get('qcow2').list({ instance: src })).toEqual([]);
      expect(await leftovers(dst)).toEqual({ rbd: [], domains: [] });
    } finally {
      await q.driver.destroy(dst).catch(() => undefined);
      await q.driver.destroy(src).catch(() => undefined);
      await q.close();
    }
  });
});
