// The clone path's round trips on the dev stack: the parent snapshot is opened once per snapshot
// id (a second clone goes straight to the clone), a snapshot made again under the same name is
// seen (new id, new size), an existing disk is refused by the clone itself, and the clone format
// is read at create, in the background.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { diskId, expectImageBackendError, type DiskRef, type SourceImage } from '@ephemera/image-backend';
import type { RbdBackend } from '../../src/index.js';
import type { RbdOps } from '../../src/rbd-ops.js';
import { adminCluster, closeAdmin, newBackend, rbdLs, stack } from '../support/stack.js';

const MiB = 1024 * 1024;
let backend: RbdBackend;
const made: DiskRef[] = [];
const parents: string[] = [];

function newDisk(): DiskRef {
  const d = { instance: randomUUID(), name: 'disk' };
  made.push(d);
  return d;
}

/** A raw image record at `images/<name>@snap` that must never be downloaded. */
function source(name: string, size: number): SourceImage {
  return {
    id: name,
    size,
    diskFormat: 'raw',
    locations: [{ url: `rbd://${backend.fsid}/${stack().ceph.pools.images}/${name}/snap`, metadata: {} }],
    open: () => {
      throw new Error('the clone path must not download');
    },
  };
}

/** (Re)makes `images/<name>@snap` protected, the image `size` bytes (as admin). */
async function snapshotParent(name: string, size: number, fresh: boolean): Promise<void> {
  const images = await (await adminCluster()).openIoCtx(stack().ceph.pools.images);
  try {
    if (fresh) {
      await images.create(name, size);
      parents.push(name);
    }
    const img = await images.open(name);
    try {
      if (!fresh) {
        await img.unprotectSnapshot('snap');
        await img.removeSnapshot('snap');
        await img.resize(size, { allowShrink: false });
      }
      await img.createSnapshot('snap');
      await img.protectSnapshot('snap');
    } finally {
      await img.close();
    }
  } finally {
    await images.close();
  }
}

/** Counts the backend's opens of parent snapshots. */
function countParentOpens(b: RbdBackend): () => number {
  const ops = (b as unknown as { ops: RbdOps }).ops;
  const original = ops.parentSnapshot.bind(ops);
  let n = 0;
  ops.parentSnapshot = (u) => {
    n++;
    return original(u);
  };
  return () => n;
}

beforeAll(async () => {
  backend = await newBackend();
});

afterAll(async () => {
  for (const d of made) await backend.remove(d, { busyTimeoutMs: 60_000 });
  const images = await (await adminCluster()).openIoCtx(stack().ceph.pools.images);
  for (const name of parents) {
    const img = await images.open(name);
    for (const s of await img.listSnapshots()) {
      if (s.protected) await img.unprotectSnapshot(s.name);
      await img.removeSnapshot(s.name);
    }
    await img.close();
    await images.remove(name);
  }
  await images.close();
  await backend?.close();
  await closeAdmin();
  const left = (await rbdLs(stack().ceph.pools.vms)).filter((n) => made.some((d) => n === diskId(d)));
  expect(left).toEqual([]);
});

describe('clone round trips', () => {
  it('opens the parent snapshot once: a second clone of it goes straight to the clone', async () => {
    const name = `t-parent-${randomUUID()}`;
    await snapshotParent(name, MiB, true);
    const opens = countParentOpens(backend);
    const [d1, d2] = [newDisk(), newDisk()];
    const r1 = await backend.createFromImage(d1, source(name, MiB));
    const r2 = await backend.createFromImage(d2, source(name, MiB));
    expect([r1.method, r2.method]).toEqual(['cloned', 'cloned']);
    expect([r1.sizeBytes, r2.sizeBytes]).toEqual([MiB, MiB]);
    expect(opens()).toBe(1);
    expect((await backend.info(d2)).parent).toBe(`images/${name}@snap`);
    // A third one with a size still does not open the parent, and grows the disk.
    const d3 = newDisk();
    expect((await backend.createFromImage(d3, source(name, MiB), { sizeBytes: 3 * MiB })).sizeBytes).toBe(3 * MiB);
    expect((await backend.info(d3)).sizeBytes).toBe(3 * MiB);
    expect(opens()).toBe(1);
  });

  it('sees a snapshot made again under the same name (new id, bigger): sizes checked against the new one', async () => {
    const name = `t-parent-${randomUUID()}`;
    await snapshotParent(name, MiB, true);
    const d1 = newDisk();
    await backend.createFromImage(d1, source(name, MiB));
    await backend.remove(d1);
    await snapshotParent(name, 2 * MiB, false);
    // An explicit size equal to the old snapshot's is now too small: refused, nothing left.
    const d2 = newDisk();
    await expectImageBackendError(
      backend.createFromImage(d2, source(name, 2 * MiB), { sizeBytes: MiB }),
      'INVALID_ARGUMENT',
    );
    expect(await backend.exists(d2)).toBe(false);
    // Without a size the disk is the new snapshot's size; with a bigger one it is grown.
    const d3 = newDisk();
    expect((await backend.createFromImage(d3, source(name, 2 * MiB))).sizeBytes).toBe(2 * MiB);
    expect((await backend.info(d3)).sizeBytes).toBe(2 * MiB);
    const d4 = newDisk();
    expect((await backend.createFromImage(d4, source(name, 2 * MiB), { sizeBytes: 3 * MiB })).sizeBytes).toBe(3 * MiB);
    expect((await backend.info(d4)).sizeBytes).toBe(3 * MiB);
  });

  it('refuses an existing disk by the clone itself (AlreadyExists), the disk untouched', async () => {
    const name = `t-parent-${randomUUID()}`;
    await snapshotParent(name, MiB, true);
    const d = newDisk();
    await backend.createBlank(d, 5 * MiB);
    await expectImageBackendError(backend.createFromImage(d, source(name, MiB)), 'ALREADY_EXISTS');
    expect((await backend.info(d)).sizeBytes).toBe(5 * MiB);
    expect((await backend.info(d)).parent).toBeUndefined();
  });

  it('reads the parent snapshot of a first clone while it clones; a size below it is still refused, nothing left', async () => {
    const name = `t-parent-${randomUUID()}`;
    await snapshotParent(name, 2 * MiB, true);
    const b = await newBackend();
    try {
      await (b as unknown as { cloneFormatPromise?: Promise<unknown> }).cloneFormatPromise;
      const ops = (b as unknown as { ops: RbdOps }).ops;
      const events: string[] = [];
      const read = ops.parentSnapshot.bind(ops);
      ops.parentSnapshot = async (u) => {
        events.push('read start');
        try {
          return await read(u);
        } finally {
          events.push('read end');
        }
      };
      const clone = ops.io.clone.bind(ops.io);
      ops.io.clone = async (o) => {
        events.push('clone start');
        await clone(o);
        events.push('clone end');
      };
      const d = newDisk();
      expect((await b.createFromImage(d, source(name, 2 * MiB), { sizeBytes: 3 * MiB })).sizeBytes).toBe(3 * MiB);
      expect((await b.info(d)).sizeBytes).toBe(3 * MiB);
      expect(events.indexOf('clone start')).toBeGreaterThanOrEqual(0);
      expect(events.indexOf('clone start')).toBeLessThan(events.indexOf('read end'));
    } finally {
      await b.close();
    }
    const b2 = await newBackend();
    try {
      await (b2 as unknown as { cloneFormatPromise?: Promise<unknown> }).cloneFormatPromise;
      const d = newDisk();
      await expectImageBackendError(
        b2.createFromImage(d, source(name, 2 * MiB), { sizeBytes: MiB }),
        'INVALID_ARGUMENT',
      );
      expect(await b2.exists(d)).toBe(false);
    } finally {
      await b2.close();
    }
  });

  it('reads the clone format at create, in the background', async () => {
    const b = await newBackend();
    try {
      const pending = (b as unknown as { cloneFormatPromise?: Promise<{ format: number | undefined }> })
        .cloneFormatPromise;
      expect(pending).toBeInstanceOf(Promise);
      expect((await pending)?.format).toBe(1); // the dev stack's require_min_compat_client is luminous
    } finally {
      await b.close();
    }
  });

  it("list({ instance }) finds the instance's disks by name prefix, without reading the whole pool directory", async () => {
    const name = `t-parent-${randomUUID()}`;
    await snapshotParent(name, MiB, true);
    const instance = randomUUID();
    const disks = [
      { instance, name: 'disk' },
      { instance, name: 'disk.eph0' },
    ];
    made.push(...disks);
    for (const d of disks) expect((await backend.createFromImage(d, source(name, MiB))).method).toBe('cloned');
    // Counts full listings of the pool (rbd_list2 reads every directory entry).
    const io = (backend as unknown as { ops: RbdOps }).ops.io;
    const fullList = io.list.bind(io);
    let full = 0;
    io.list = () => {
      full++;
      return fullList();
    };
    try {
      const found = await backend.list({ instance: instance.toUpperCase() });
      expect(found.map((d) => d.disk).sort((a, b) => a.name.localeCompare(b.name))).toEqual(disks);
      expect(found.every((d) => d.parent === `images/${name}@snap`)).toBe(true);
      expect(await backend.list({ instance: randomUUID() })).toEqual([]);
      expect(full).toBe(0);
      // Without an instance it still lists the pool (and finds both).
      const all = (await backend.list()).map((d) => diskId(d.disk));
      expect(all).toEqual(expect.arrayContaining(disks.map(diskId)));
      expect(full).toBe(1);
    } finally {
      delete (io as { list?: unknown }).list;
    }
  });
});
