// Live block migration's disk steps, on two real Qcow2Backends (a source host and a destination
// host, each with its own instances directory and image cache) and the real qemu-img: the
// source's description of its disks, the destination's empty copies on its own cached base.
import { randomUUID } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectImageBackendError, patternBytes, type DiskRef } from '@ephemera/image-backend';
import { baseKey } from '../../src/base-cache.js';
import { readQcow2Header } from '../../src/qcow2-header.js';
import { createFixture, type Fixture } from '../support/fixture.js';
import { countingSource } from '../support/images.js';

const MiB = 1024 * 1024;
let src: Fixture;
let dst: Fixture;

beforeAll(async () => {
  src = await createFixture();
  dst = await createFixture();
});
afterAll(async () => {
  await src?.destroy();
  await dst?.destroy();
});

const leftovers = async (f: Fixture): Promise<string[]> =>
  (await readdir(f.backend.instancesDir)).filter((n) => n.startsWith('.'));

describe('block migration: source spec and destination copies', () => {
  it('describes overlays as backed and blank disks as not; the destination fetches the base once and makes same-size copies without owners', async () => {
    const img = countingSource(patternBytes(2 * MiB, 5));
    const owner = { hostId: 'src-host', version: '1' };
    const uuids = [randomUUID(), randomUUID()];
    for (const uuid of uuids) {
      await src.backend.createFromImage({ instance: uuid, name: 'disk' }, img, { sizeBytes: 8 * MiB, owner });
    }
    await src.backend.createBlank({ instance: uuids[0]!, name: 'disk.swap' }, 4 * MiB, { format: 'raw', owner });
    const root = await src.backend.migrationDiskSpec({ instance: uuids[0]!, name: 'disk' }, img.id);
    expect(root).toEqual({ sizeBytes: 8 * MiB, format: 'qcow2', backed: true });
    const swap = await src.backend.migrationDiskSpec({ instance: uuids[0]!, name: 'disk.swap' }, img.id);
    expect(swap).toEqual({ sizeBytes: 4 * MiB, format: 'raw', backed: false });
    const opensOnSource = img.opens();

    // Destination: the first copy fetches the base into its own cache, the next ones reuse it.
    const events: string[] = [];
    const first = await dst.backend.prepareIncomingDisk({ instance: uuids[0]!, name: 'disk' }, root, img, {
      onProgress: (e) => events.push(e.phase),
    });
    expect(first.fetched).toBe(true);
    expect(events).toContain('download');
    const second = await dst.backend.prepareIncomingDisk({ instance: uuids[1]!, name: 'disk' }, root, img);
    expect(second.fetched).toBe(false);
    expect(img.opens()).toBe(opensOnSource + 1);
    const blank = await dst.backend.prepareIncomingDisk({ instance: uuids[0]!, name: 'disk.swap' }, swap, undefined);
    expect(blank).toMatchObject({ format: 'raw', fetched: false });

    const h = await readQcow2Header(first.path);
    expect(h.virtualSize).toBe(8 * MiB);
    expect(h.backingFile).toBe(join(dst.backend.baseDir, baseKey(img.id)));
    expect(first.path).toBe((await dst.backend.diskSource({ instance: uuids[0]!, name: 'disk' })).path);
    // The copy shows the base's bytes before anything is copied into it.
    expect(Buffer.from(await dst.read({ instance: uuids[0]!, name: 'disk' }, 4096, MiB))).toEqual(
      Buffer.from(patternBytes(2 * MiB, 5).subarray(MiB, MiB + 4096)),
    );
    const listed = await dst.backend.list({ instance: uuids[0]! });
    expect(listed.map((d) => [d.disk.name, d.sizeBytes, d.owner])).toEqual([
      ['disk', 8 * MiB, null],
      ['disk.swap', 4 * MiB, null],
    ]);
    // The owner is written once the guest runs there; remove undoes a copy and leaves the base.
    await dst.backend.setOwner({ instance: uuids[0]!, name: 'disk' }, { hostId: 'dst-host', version: '1' });
    expect((await dst.backend.getOwner({ instance: uuids[0]!, name: 'disk' }))?.hostId).toBe('dst-host');
    expect(await dst.backend.remove({ instance: uuids[1]!, name: 'disk' })).toBe(true);
    expect(await dst.backend.cachedBase(img.id)).toBeDefined();
    expect(await leftovers(dst)).toEqual([]);
  });

  it('refuses a disk backed by another image, a copy that exists, and a bad spec; leaves nothing behind', async () => {
    const img = countingSource(patternBytes(MiB, 9));
    const disk: DiskRef = { instance: randomUUID(), name: 'disk' };
    await src.backend.createFromImage(disk, img);
    await expectImageBackendError(src.backend.migrationDiskSpec(disk, randomUUID()), 'UNSUPPORTED_OPERATION');
    await expectImageBackendError(src.backend.migrationDiskSpec({ ...disk, name: 'nope' }, img.id), 'NOT_FOUND');

    const spec = { sizeBytes: MiB, format: 'qcow2' as const, backed: true };
    await dst.backend.prepareIncomingDisk(disk, spec, img);
    await expectImageBackendError(dst.backend.prepareIncomingDisk(disk, spec, img), 'ALREADY_EXISTS');
    const other: DiskRef = { instance: randomUUID(), name: 'disk' };
    await expectImageBackendError(
      dst.backend.prepareIncomingDisk(other, { ...spec, sizeBytes: 4096 }, img),
      'INVALID_ARGUMENT',
    );
    await expectImageBackendError(
      dst.backend.prepareIncomingDisk(other, { ...spec, format: 'raw' }, img),
      'INVALID_ARGUMENT',
    );
    await expectImageBackendError(dst.backend.prepareIncomingDisk(other, spec, undefined), 'INVALID_ARGUMENT');
    await expectImageBackendError(
      dst.backend.prepareIncomingDisk(other, { ...spec, sizeBytes: -1 }, img),
      'INVALID_ARGUMENT',
    );
    expect(await dst.backend.exists(other)).toBe(false);
    expect(await leftovers(dst)).toEqual([]);
  });
});
