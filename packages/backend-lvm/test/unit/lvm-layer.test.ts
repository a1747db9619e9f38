// The internal LVM layer against real lvm2, losetup and a real VG on a loop device over a
// sparse file (no dev stack needed). Everything is detached in afterAll.
import { randomBytes } from 'node:crypto';
import { open } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { zeroDevice } from '../../src/device.js';
import { Lvm, LvmError, detectDeviceMapper } from '../../src/lvm.js';
import { attachLoop, listLoops } from '../../src/loop.js';
import { LvMapper } from '../../src/mapping.js';
import { createTestVg, type TestVg } from '../support/vg-fixture.js';

const MiB = 1024 * 1024;
let tvg: TestVg;
let lvm: Lvm;
let mapper: LvMapper;

async function readAt(path: string, offset: number, length: number): Promise<Buffer> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(length);
    await fh.read(buf, 0, length, offset);
    return buf;
  } finally {
    await fh.close();
  }
}

async function writeAt(path: string, offset: number, data: Buffer): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    await fh.write(data, 0, data.length, offset);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

beforeAll(async () => {
  tvg = await createTestVg({ sizeMiB: 128, extentMiB: 4 });
  lvm = new Lvm({ volumeGroup: tvg.vg, deviceMapper: await detectDeviceMapper(), devices: [tvg.pv] });
  mapper = new LvMapper(lvm);
});

afterAll(async () => {
  await tvg?.destroy();
  const left = (await listLoops()).filter((l) => l.backFile === tvg?.file || l.backFile === tvg?.pv);
  expect(left).toEqual([]);
});

describe('LVM layer on a real VG', () => {
  it('detects device-mapper the way lvm sees it', async () => {
    expect(await detectDeviceMapper()).toBe(tvg.deviceMapper);
  });

  it('reports the VG and its PV', async () => {
    const vg = await lvm.vgInfo();
    expect(vg.name).toBe(tvg.vg);
    expect(vg.extentSize).toBe(4 * MiB);
    expect(vg.freeExtents).toBe(vg.extentCount);
    const pvs = await lvm.pvs();
    expect(pvs.map((p) => p.name)).toEqual([tvg.pv]);
    expect(pvs[0]!.peStart).toBeGreaterThan(0);
  });

  it('creates, lists, extends and removes LVs with typed failures', async () => {
    await lvm.create('u1_disk', 2, { tags: ['ephemera'] });
    await lvm.create('u1_disk.local', 1);
    await expect(lvm.create('u1_disk', 1)).rejects.toMatchObject({ kind: 'lv-exists' });
    await expect(lvm.create('big', 10_000)).rejects.toMatchObject({ kind: 'insufficient-space' });
    const lvs = await lvm.lvs('u1_');
    expect(lvs.map((l) => l.name).sort()).toEqual(['u1_disk', 'u1_disk.local']);
    const disk = lvs.find((l) => l.name === 'u1_disk')!;
    expect(disk.sizeBytes).toBe(8 * MiB);
    expect(disk.tags).toEqual(['ephemera']);
    expect(disk.segmentCount).toBe(1);
    // u1_disk.local sits right after u1_disk: a contiguous extension cannot be satisfied without dm.
    if (!lvm.deviceMapper)
      await expect(lvm.extend('u1_disk', 4)).rejects.toMatchObject({ kind: 'insufficient-contiguous-space' });
    await lvm.extend('u1_disk.local', 3);
    expect((await lvm.lv('u1_disk.local'))!.sizeBytes).toBe(12 * MiB);
    await lvm.remove('u1_disk');
    await lvm.remove('u1_disk.local');
    await expect(lvm.remove('u1_disk')).rejects.toBeInstanceOf(LvmError);
    await expect(lvm.remove('u1_disk')).rejects.toMatchObject({ kind: 'lv-not-found' });
    expect(await lvm.lvs('u1_')).toEqual([]);
  });

  it('an unknown VG is a typed error', async () => {
    const other = new Lvm({ volumeGroup: 'ephemera-no-such-vg', deviceMapper: lvm.deviceMapper, devices: [tvg.pv] });
    await expect(other.vgInfo()).rejects.toMatchObject({ kind: 'vg-not-found' });
  });

  it('maps an LV onto exactly its extents: write through the mapping, read back from the PV byte-equal', async () => {
    await lvm.create('u2_pad', 1);
    await lvm.create('u2_disk', 3);
    const dev = await mapper.map('u2_disk');
    expect(await mapper.map('u2_disk')).toBe(dev); // idempotent
    expect(await mapper.devicePath('u2_disk')).toBe(dev);
    const data = randomBytes(12 * MiB);
    await writeAt(dev, 0, data);
    expect((await readAt(dev, 0, data.length)).equals(data)).toBe(true);
    if (!lvm.deviceMapper) {
      const lv = (await lvm.lv('u2_disk'))!;
      const range = await mapper.rangeOf(lv);
      const pv = (await lvm.pvs())[0]!;
      expect(range.offset).toBe(pv.peStart + lv.segments[0]!.firstExtent * 4 * MiB);
      // The PV's backing file holds the same bytes at that offset.
      expect((await readAt(tvg.file, range.offset, data.length)).equals(data)).toBe(true);
      // The neighbouring LV is untouched.
      const padRange = await mapper.rangeOf((await lvm.lv('u2_pad'))!);
      expect((await readAt(tvg.file, padRange.offset + padRange.bytes - 16, 16)).equals(data.subarray(0, 16))).toBe(
        false,
      );
    }
    await zeroDevice(dev, undefined, { via: 'write' });
    expect((await readAt(dev, 0, 12 * MiB)).equals(Buffer.alloc(12 * MiB))).toBe(true);
    await writeAt(dev, 5 * MiB, randomBytes(MiB));
    await zeroDevice(dev, undefined, { via: 'ioctl' });
    expect((await readAt(dev, 0, 12 * MiB)).equals(Buffer.alloc(12 * MiB))).toBe(true);
    await mapper.unmap('u2_disk');
    await mapper.unmap('u2_disk'); // idempotent
    expect(await mapper.devicePath('u2_disk')).toBeUndefined();
    await lvm.remove('u2_disk');
    await lvm.remove('u2_pad');
    expect(await tvg.mappingLoops()).toEqual([]);
  });

  it('finds and detaches orphaned mappings left by a crash', async () => {
    if (lvm.deviceMapper) return; // loop mappings only exist without device-mapper
    await lvm.create('u3_disk', 2);
    const dev = await mapper.map('u3_disk');
    const range = await mapper.rangeOf((await lvm.lv('u3_disk'))!);
    // Simulate a crash between lvremove and unmap, and a stray loop over the data area.
    await lvm.remove('u3_disk');
    const stray = await attachLoop(tvg.pv, range.offset + 4 * MiB, 4 * MiB);
    const maps = await mapper.mappings();
    expect(
      maps
        .filter((m) => m.lv === undefined)
        .map((m) => m.device)
        .sort(),
    ).toEqual([dev, stray].sort());
    expect((await mapper.detachOrphans()).sort()).toEqual([dev, stray].sort());
    expect(await tvg.mappingLoops()).toEqual([]);
  });

  it('serialises concurrent maps of one LV onto one loop device', async () => {
    await lvm.create('u4_disk', 1);
    const devs = await Promise.all([mapper.map('u4_disk'), mapper.map('u4_disk'), mapper.map('u4_disk')]);
    expect(new Set(devs).size).toBe(1);
    await mapper.unmap('u4_disk');
    await lvm.remove('u4_disk');
    expect(await tvg.mappingLoops()).toEqual([]);
  });
});
