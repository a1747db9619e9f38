import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  HandleClosed,
  ImageBusy,
  ImageExists,
  ImageHasSnapshots,
  ImageNotFound,
  InvalidArgument,
  ObjectNotFound,
  type Cluster,
  type Image,
  type IoCtx,
  type Progress,
} from '@ephemera/ceph-rbd-napi';
import { cephCli, removeCloneKeepingTrashSnapshot } from '@ephemera/testkit';
import { adminPools, Cleanup, cleanUpAndClose, connectAs, stack, uniq } from './helpers.js';

const MiB = 1 << 20;
let admin: Cluster;
let images: IoCtx;
let vms: IoCtx;
const cleanup = new Cleanup();

beforeAll(async () => {
  ({ admin, images, vms } = await adminPools());
});
afterAll(() => cleanUpAndClose(cleanup, admin));

function expectMonotonicToOne(events: Progress[]): void {
  expect(events.length).toBeGreaterThan(0);
  for (let i = 1; i < events.length; i++) expect(events[i]!.fraction).toBeGreaterThan(events[i - 1]!.fraction);
  const last = events.at(-1)!;
  expect(last.fraction).toBe(1);
  expect(last.done).toBe(last.total);
}

describe('cluster', () => {
  it('fsid matches the stack and poolStats reports capacity', async () => {
    expect(await admin.fsid()).toBe(stack().ceph.fsid);
    const s = await admin.poolStats('images');
    expect(s.pool).toBe('images');
    expect(s.cluster.totalBytes).toBeGreaterThan(0);
    expect(s.cluster.availBytes).toBeGreaterThan(0);
    expect(s.maxAvailBytes).toBeGreaterThan(0);
    expect(s.images).toBeGreaterThanOrEqual(0);
    const err = await admin.poolStats('no-such-pool').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ObjectNotFound);
    expect(await admin.openIoCtx('no-such-pool').catch((e: unknown) => e)).toBeInstanceOf(ObjectNotFound);
  });
});

describe('images: create, snapshot, protect, cross-pool clone, flatten, resize, remove', () => {
  it('clones images -> vms with the parent visible, flattens with monotonic progress', async () => {
    const base = uniq('base');
    const clone = uniq('clone');
    await images.create(base, 16 * MiB, {
      features: ['layering', 'exclusive-lock', 'object-map', 'fast-diff', 'deep-flatten'],
      order: 22,
    });
    cleanup.add(`remove ${base}`, () => images.remove(base));
    expect(await images.list()).toContain(base);
    expect(await images.create(base, MiB).catch((e: unknown) => e)).toBeInstanceOf(ImageExists);

    const img = await images.open(base);
    const pattern = Buffer.alloc(16 * MiB);
    for (let i = 0; i < pattern.length; i += 4096) pattern.writeUInt32LE(i, i);
    await img.write(0, pattern);
    await img.flush();
    await img.createSnapshot('snap');
    expect(await img.isSnapshotProtected('snap')).toBe(false);
    await img.protectSnapshot('snap');
    expect(await img.isSnapshotProtected('snap')).toBe(true);
    cleanup.add('unprotect+remove snap', async () => {
      const i = await images.open(base);
      try {
        await i.unprotectSnapshot('snap');
        await i.removeSnapshot('snap');
      } finally {
        await i.close();
      }
    });
    expect(await img.listSnapshots()).toEqual([
      expect.objectContaining({ name: 'snap', size: 16 * MiB, protected: true, namespace: 'user' }),
    ]);
    const st = await img.stat();
    expect(st.size).toBe(16 * MiB);
    expect(st.order).toBe(22);
    expect(st.features.names).toEqual(['layering', 'exclusive-lock', 'object-map', 'fast-diff', 'deep-flatten']);
    expect(await img.features()).toEqual(st.features);
    await img.close();

    // clone format 1 from a protected snapshot, parent given by pool name
    await vms.clone({
      parent: { pool: 'images', image: base, snap: 'snap' },
      dest: { ioctx: vms, name: clone },
      cloneFormat: 1,
    });
    cleanup.add(`remove ${clone}`, () => vms.remove(clone));
    const child = await vms.open(clone);
    expect(await child.parent()).toEqual(
      expect.objectContaining({ pool: 'images', image: base, snap: 'snap', namespace: '', trash: false }),
    );
    const atSnap = await images.open(base, { snapshot: 'snap', readOnly: true });
    expect(await atSnap.children()).toEqual([expect.objectContaining({ pool: 'vms', image: clone, trash: false })]);
    expect(atSnap.readOnly).toBe(true);
    await atSnap.close();

    // the parent cannot go while it has snapshots and children
    const rmParent = await images.remove(base).catch((e: unknown) => e);
    expect(rmParent instanceof ImageHasSnapshots || rmParent instanceof ImageBusy).toBe(true);
    const imgAgain = await images.open(base);
    expect(await imgAgain.unprotectSnapshot('snap').catch((e: unknown) => e)).toBeInstanceOf(ImageBusy);
    await imgAgain.close();

    // the clone reads the parent's data; flatten copies it with monotonic progress
    expect((await child.read(0, 16 * MiB)).equals(pattern)).toBe(true);
    const events: Progress[] = [];
    await child.flatten({ onProgress: (p) => events.push(p) });
    expectMonotonicToOne(events);
    expect(await child.parent()).toBeNull();
    expect((await child.read(5 * MiB, MiB)).equals(pattern.subarray(5 * MiB, 6 * MiB))).toBe(true);
    expect(await child.flatten().catch((e: unknown) => e)).toBeInstanceOf(InvalidArgument);
    await child.close();
  });

  it('clone format 2 needs no protected snapshot; the parent snapshot then lives in the trash namespace', async () => {
    const base = uniq('v2base');
    const clone = uniq('v2clone');
    await images.create(base, 4 * MiB);
    const img = await images.open(base);
    await img.createSnapshot('s');
    expect(
      await vms
        .clone({ parent: { ioctx: images, image: base, snap: 's' }, dest: { name: clone }, cloneFormat: 1 })
        .catch((e: unknown) => e),
    ).toBeInstanceOf(InvalidArgument);
    await vms.clone({ parent: { ioctx: images, image: base, snap: 's' }, dest: { name: clone }, cloneFormat: 2 });
    const child = await vms.open(clone);
    expect(await child.parent()).toEqual(expect.objectContaining({ pool: 'images', image: base, snap: 's' }));
    await child.close();
    // removing the snapshot with a v2 child moves it to the trash namespace
    await img.removeSnapshot('s');
    const snaps = await img.listSnapshots();
    expect(snaps.map((s) => s.namespace)).toEqual(['trash']);
    await img.close();
    const busy = await images.remove(base).catch((e: unknown) => e);
    expect(busy instanceof ImageBusy || busy instanceof ImageHasSnapshots).toBe(true);
    await vms.remove(clone);
    await images.remove(base);
    expect(await images.list()).not.toContain(base);
  });

  it('a trash snapshot: its original name, its children by id, removal by id once it has none', async () => {
    const base = uniq('v2trash');
    const clone = uniq('v2trashc');
    await images.create(base, 4 * MiB);
    cleanup.add(`remove ${base}`, () =>
      images.remove(base).catch((e: unknown) => (e instanceof ImageNotFound ? undefined : Promise.reject(e))),
    );
    const img = await images.open(base);
    await img.createSnapshot('s');
    await vms.clone({ parent: { ioctx: images, image: base, snap: 's' }, dest: { name: clone }, cloneFormat: 2 });
    cleanup.add(`remove ${clone}`, () =>
      vms.remove(clone).catch((e: unknown) => (e instanceof ImageNotFound ? undefined : Promise.reject(e))),
    );
    await img.removeSnapshot('s');
    const [trash] = await img.listSnapshots();
    expect(trash).toEqual(expect.objectContaining({ namespace: 'trash', originalName: 's' }));
    expect(await img.snapshotChildren(trash!.id)).toEqual([expect.objectContaining({ pool: 'vms', image: clone })]);
    // still used by the clone: refused
    expect(await img.removeSnapshotById(trash!.id).catch((e: unknown) => e)).toBeInstanceOf(ImageBusy);
    await img.close();
    // Removing the last child normally purges the trash snapshot too (librbd's detach step); a
    // process killed between the two leaves it without children, as this removal does.
    await removeCloneKeepingTrashSnapshot('vms', clone, 'images');
    const again = await images.open(base);
    try {
      const left = await again.listSnapshots();
      expect(left).toEqual([expect.objectContaining({ id: trash!.id, namespace: 'trash', originalName: 's' })]);
      expect(await again.snapshotChildren(trash!.id)).toEqual([]);
      const refused = await images.remove(base).catch((e: unknown) => e); // open here, and a snapshot left
      expect(refused instanceof ImageBusy || refused instanceof ImageHasSnapshots).toBe(true);
      await again.removeSnapshotById(trash!.id);
      expect(await again.listSnapshots()).toEqual([]);
      expect(await again.snapshotChildren(trash!.id).catch((e: unknown) => e)).toBeInstanceOf(ImageNotFound);
    } finally {
      await again.close();
    }
    await images.remove(base);
  });

  it('resizes with progress, refuses an unwanted shrink, removes with progress', async () => {
    const name = uniq('resize');
    await images.create(name, 8 * MiB);
    const img = await images.open(name);
    await img.resize(32 * MiB);
    expect(await img.size()).toBe(32 * MiB);
    await img.write(20 * MiB, Buffer.alloc(MiB, 0xab));
    expect(await img.resize(4 * MiB, { allowShrink: false }).catch((e: unknown) => e)).toBeInstanceOf(InvalidArgument);
    const events: Progress[] = [];
    await img.resize(4 * MiB, { onProgress: (p) => events.push(p) });
    expectMonotonicToOne(events);
    expect(await img.size()).toBe(4 * MiB);
    // a read past the end is clipped
    expect((await img.read(3 * MiB, 2 * MiB)).length).toBe(MiB);
    await img.close();
    const rm: Progress[] = [];
    await images.remove(name, { onProgress: (p) => rm.push(p) });
    expectMonotonicToOne(rm);
    expect(await images.open(name).catch((e: unknown) => e)).toBeInstanceOf(ImageNotFound);
  });

  it('shrinks an image holding data without a progress callback', async () => {
    // librbd reports progress while it trims the removed objects, whether or not one was asked for.
    const name = uniq('shrink');
    await images.create(name, 16 * MiB);
    const img = await images.open(name);
    try {
      for (let off = 0; off < 16 * MiB; off += 4 * MiB) await img.write(off, Buffer.alloc(4096, 0xcd));
      await img.resize(4 * MiB);
      expect(await img.size()).toBe(4 * MiB);
      expect((await img.read(0, 4096)).equals(Buffer.alloc(4096, 0xcd))).toBe(true);
    } finally {
      await img.close();
      await images.remove(name);
    }
  });

  it('rename, trash move/list/restore/remove, rollback, discard', async () => {
    const name = uniq('trash');
    const renamed = `${name}-renamed`;
    await images.create(name, 4 * MiB);
    await images.rename(name, renamed);
    expect(await images.list()).toContain(renamed);
    expect(await images.list()).not.toContain(name);

    const img = await images.open(renamed);
    await img.write(0, Buffer.alloc(MiB, 1));
    await img.createSnapshot('before');
    await img.write(0, Buffer.alloc(MiB, 2));
    await img.discard(MiB, MiB);
    const ev: Progress[] = [];
    await img.rollbackToSnapshot('before', { onProgress: (p) => ev.push(p) });
    expectMonotonicToOne(ev);
    expect((await img.read(0, MiB)).equals(Buffer.alloc(MiB, 1))).toBe(true);
    await img.removeSnapshot('before');
    await img.close();

    await images.trashMove(renamed);
    const entry = (await images.trashList()).find((t) => t.name === renamed);
    expect(entry).toBeDefined();
    expect(entry!.source).toBe('user');
    await images.trashRestore(entry!.id, name);
    expect(await images.list()).toContain(name);
    await images.trashMove(name, { delaySeconds: 3600 });
    const again = (await images.trashList()).find((t) => t.name === name)!;
    expect(again.deferredUntil.getTime()).toBeGreaterThan(Date.now() + 3000 * 1000);
    const ev2: Progress[] = [];
    await images.trashRemove(again.id, { force: true, onProgress: (p) => ev2.push(p) });
    expectMonotonicToOne(ev2);
    expect((await images.trashList()).find((t) => t.id === again.id)).toBeUndefined();
  });
});

describe('listPrefixed: images by name prefix from the pool directory', () => {
  it('lists exactly the images (clones and renamed ones too) whose name starts with the prefix, as the restricted user', async () => {
    const p = `${uniq('lp')}_`;
    const made = [`${p}b`, `${p}a`, `${p}c-clone`];
    const near = `${p.slice(0, -1)}-x`; // shares all of the prefix but its last character
    const removeAll = async (n: string) => {
      const img = await vms.open(n).catch(() => undefined);
      if (!img) return;
      for (const snap of await img.listSnapshots()) if (snap.namespace === 'user') await img.removeSnapshot(snap.name);
      await img.close();
      await vms.remove(n);
    };
    // Parent last (reverse order): its snapshot goes once the clone is gone.
    for (const n of [made[0]!, made[1]!, near, made[2]!]) cleanup.add(`remove ${n}`, () => removeAll(n));
    await vms.create(made[0]!, 4 * MiB);
    await vms.create(`${p}tmp`, 4 * MiB);
    await vms.rename(`${p}tmp`, made[1]!);
    await vms.create(near, 4 * MiB);
    const parent = await vms.open(made[0]!);
    await parent.createSnapshot('s');
    await parent.close();
    await vms.clone({
      parent: { pool: vms.pool, image: made[0]!, snap: 's' },
      dest: { name: made[2]! },
      cloneFormat: 2,
    });
    const eph = await connectAs('ephemera');
    try {
      const io = await eph.openIoCtx(vms.pool);
      expect(await io.listPrefixed(p)).toEqual([...made].sort());
      expect((await io.list()).filter((n) => n.startsWith(p)).sort()).toEqual([...made].sort());
      expect(await io.listPrefixed(`${p}a`)).toEqual([`${p}a`]);
      expect(await io.listPrefixed(`${p}zzz`)).toEqual([]);
      await vms.remove(made[2]!);
      expect(await io.listPrefixed(p)).toEqual([`${p}a`, `${p}b`]);
      expect(await io.listPrefixed('').catch((e: unknown) => e)).toBeInstanceOf(InvalidArgument);
    } finally {
      await eph.close();
    }
  });
});

describe('handle lifetimes', () => {
  it('using a closed handle rejects with HandleClosed; closing a parent closes its children', async () => {
    const c = await connectAs('admin');
    const io = await c.openIoCtx('rbd');
    const name = uniq('closed');
    await io.create(name, MiB);
    const img: Image = await io.open(name);
    const inflight = img.write(0, Buffer.alloc(MiB, 3)); // accepted before close: completes
    await img.close();
    await inflight;
    await img.close(); // idempotent
    expect(img.closed).toBe(true);
    for (const p of [
      img.size(),
      img.read(0, 10),
      img.write(0, Buffer.alloc(1)),
      img.flatten(),
      img.createSnapshot('x'),
      img.watchers(),
    ]) {
      const err = await p.catch((e: unknown) => e);
      expect(err).toBeInstanceOf(HandleClosed);
      expect((err as HandleClosed).code).toBe('EBADF');
    }

    const img2 = await io.open(name);
    const stat = img2.stat(); // in flight while the cluster closes
    await c.close();
    await expect(stat).resolves.toEqual(expect.objectContaining({ size: MiB }));
    expect(io.closed).toBe(true);
    expect(img2.closed).toBe(true);
    expect(await img2.read(0, 1).catch((e: unknown) => e)).toBeInstanceOf(HandleClosed);
    expect(await io.list().catch((e: unknown) => e)).toBeInstanceOf(HandleClosed);
    expect(await c.fsid().catch((e: unknown) => e)).toBeInstanceOf(HandleClosed);
    expect(await c.openIoCtx('rbd').catch((e: unknown) => e)).toBeInstanceOf(HandleClosed);

    // the image was closed (no watch left): it can be removed right away
    const rbdPool = await admin.openIoCtx('rbd');
    await rbdPool.remove(name);
    await rbdPool.close();
  });

  it("requireMinCompatClient(): the cluster's setting as the ceph CLI prints it, for a user with only profile rbd", async () => {
    const c = await connectAs('ephemera');
    try {
      const cli = (await cephCli('admin', ['ceph', 'osd', 'get-require-min-compat-client'])).trim();
      expect(cli).toMatch(/^[a-z]+$/);
      expect(await c.requireMinCompatClient()).toBe(cli);
    } finally {
      await c.close();
    }
    expect(await c.requireMinCompatClient().catch((e: unknown) => e)).toBeInstanceOf(HandleClosed);
  });

  it('lockers(): the exclusive lock taken by a write names this client (instanceId); pingMonitor answers', async () => {
    const name = uniq('lockers');
    const c = await connectAs('admin');
    const io = await c.openIoCtx('rbd');
    try {
      await c.pingMonitor();
      const me = c.instanceId();
      expect(Number.isSafeInteger(me) && me > 0).toBe(true);
      expect(admin.instanceId()).not.toBe(me);
      await io.create(name, MiB);
      const img = await io.open(name);
      await img.write(0, Buffer.alloc(4096, 1)); // acquires the exclusive lock
      const probe = await admin.openIoCtx('rbd');
      const seen = await probe.open(name, { readOnly: true });
      const l = await seen.lockers();
      expect(l.exclusive).toBe(true);
      expect(l.tag).toBe('internal');
      expect(l.lockers).toEqual([
        expect.objectContaining({ client: `client.${me}`, cookie: expect.stringMatching(/^auto \d+$/) }),
      ]);
      await seen.close();
      await img.close(); // releases the lock
      const after = await probe.open(name, { readOnly: true });
      expect((await after.lockers()).lockers).toEqual([]);
      await after.close();
      await probe.remove(name);
      await probe.close();
    } finally {
      await c.close();
    }
    expect(() => c.instanceId()).toThrow(HandleClosed);
  });

  it('Symbol.asyncDispose closes handles', async () => {
    const name = uniq('dispose');
    let img: Image;
    {
      await using c = await connectAs('admin');
      await using io = await c.openIoCtx('rbd');
      await io.create(name, MiB);
      await using opened = await io.open(name);
      img = opened;
      expect((await opened.watchers()).length).toBe(1);
    }
    expect(img.closed).toBe(true);
    const rbdPool = await admin.openIoCtx('rbd');
    await rbdPool.remove(name);
    await rbdPool.close();
  });
});
