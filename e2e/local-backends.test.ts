// qcow2 and LVM: the same boot and clean-up as on RBD, on local disks.
import { readdir } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitForMarker } from '@ephemera/testkit';
import { TINY, deleteImage, newUuid, testDriver, uploadGuest, virshDomains, type TestDriver } from './support.js';
import { createTestVg, type TestVg } from './lvm-support.js';

describe('qcow2 backend end to end', () => {
  let t: TestDriver;
  let imageId: string | undefined;
  const uuids = [newUuid(), newUuid(), newUuid()];
  const marker = `qcow2-e2e-${uuids[0]!.slice(0, 8)}`;

  beforeAll(async () => {
    t = await testDriver({ images: { type: 'qcow2' } });
    imageId = await uploadGuest(t.glance, marker);
  });
  afterAll(async () => {
    for (const u of uuids) await t?.driver.destroy(u).catch(() => undefined);
    await deleteImage(t?.glance, imageId);
    await t?.close();
  });

  it('boots 3 instances from qcow2 overlays of one cached base; each prints the marker; destroy leaves nothing', async () => {
    const results = await Promise.all(
      uuids.map((uuid) => t.driver.spawn({ instance: uuid, image: imageId!, flavor: { ...TINY, swapMiB: 8 } })),
    );
    for (const r of results) expect(r.instance.backend).toBe('qcow2');
    console.log(
      `qcow2 root disks: ${results.map((r) => `${r.rootDisk.method} ${Math.round(r.rootDisk.durationMs)} ms`).join(', ')}`,
    );
    for (const u of uuids) expect(await waitForMarker(t.driver.consolePath(u), 120_000)).toBe(marker);
    const qcow2 = t.driver.backends.get('qcow2');
    for (const u of uuids) {
      const disks = await qcow2.list({ instance: u });
      expect(disks.map((d) => d.disk.name).sort()).toEqual(['disk', 'disk.swap']);
      const root = disks.find((d) => d.disk.name === 'disk')!;
      expect(root.format).toBe('qcow2');
    }
    for (const u of uuids) await t.driver.destroy(u);
    for (const u of uuids) expect(await qcow2.list({ instance: u })).toEqual([]);
    const left = (await readdir(t.driver.config.instancesPath)).filter((n) => uuids.some((u) => n.startsWith(u)));
    expect(left).toEqual([]);
    const doms = await virshDomains(t.stack);
    for (const u of uuids) expect(doms).not.toContain(t.driver.domainName(u));
    expect(await t.driver.journal.entries()).toEqual([]);
  });
});

describe('LVM backend end to end', () => {
  let t: TestDriver;
  let vg: TestVg;
  let imageId: string | undefined;
  const uuids = [newUuid(), newUuid(), newUuid()];
  const marker = `lvm-e2e-${uuids[0]!.slice(0, 8)}`;

  beforeAll(async () => {
    vg = await createTestVg(256);
    t = await testDriver({ images: { type: 'lvm', lvm: { volumeGroup: vg.vg, devices: [vg.pv] } } });
    imageId = await uploadGuest(t.glance, marker);
  });
  afterAll(async () => {
    for (const u of uuids) await t?.driver.destroy(u).catch(() => undefined);
    await deleteImage(t?.glance, imageId);
    await t?.close();
    await vg?.destroy();
  });

  it('boots 3 instances from LVs; each prints the marker; destroy leaves no LV, mapping or domain', async () => {
    const results = await Promise.all(
      uuids.map((uuid, i) =>
        t.driver.spawn({ instance: uuid, image: imageId!, flavor: { ...TINY, ...(i === 0 ? { swapMiB: 8 } : {}) } }),
      ),
    );
    for (const r of results) {
      expect(r.instance.backend).toBe('lvm');
      expect(r.rootDisk.method).toBe('imported');
      expect(r.rootDisk.reason).toBeTruthy();
    }
    console.log(
      `lvm root disks: ${results.map((r) => `${r.rootDisk.method} ${Math.round(r.rootDisk.durationMs)} ms`).join(', ')}`,
    );
    for (const u of uuids) expect(await waitForMarker(t.driver.consolePath(u), 120_000)).toBe(marker);
    expect((await vg.lvs()).sort()).toEqual(
      [`${uuids[0]}_disk`, `${uuids[0]}_disk.swap`, `${uuids[1]}_disk`, `${uuids[2]}_disk`].sort(),
    );
    for (const u of uuids) await t.driver.destroy(u);
    expect(await vg.lvs()).toEqual([]);
    expect(await vg.mappings()).toEqual([]);
    const doms = await virshDomains(t.stack);
    for (const u of uuids) expect(doms).not.toContain(t.driver.domainName(u));
    expect(await t.driver.list()).toEqual([]);
  });
});
