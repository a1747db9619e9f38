// Deferred direct snapshots (issue 21 item 4): `directSnapshot({ deferFlatten })` returns while the
// new image still reads through the disk's temporary snapshot; `finishDirectSnapshot` flattens it
// and drops that snapshot, and is resumed after a SIGKILL mid-flatten. Also the clone chain depth.
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { diskId, patternBytes, sourceImageFromBytes, type DiskRef, type ProgressEvent } from '@ephemera/image-backend';
import type { IoCtx } from '@ephemera/ceph-rbd-napi';
import type { RbdBackend, RbdBackendOptions } from '../../src/index.js';
import { removeImageFully } from '../../src/rbd-ops.js';
import { adminCluster, closeAdmin, newBackend, stack } from '../support/stack.js';

const MiB = 1024 * 1024;
const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..');
const fixture = join(root, 'packages', 'backend-rbd', 'test', 'integration', 'fixtures', 'finish-snapshot.mjs');
let backend: RbdBackend;
let vms: IoCtx;
let images: IoCtx;
const made: DiskRef[] = [];
const imageIds: string[] = [];
const chain: { io: () => IoCtx; name: string }[] = [];

/** Admin as both clients: the images-pool client must read the disk pool for a clone. */
function adminOptions(): RbdBackendOptions {
  const s = stack();
  const a = s.ceph.users.admin;
  return {
    pool: s.ceph.pools.vms,
    confPath: a.confPath,
    clientId: a.id,
    keyringPath: a.keyringPath,
    secretUuid: s.libvirt.cephSecretUuid,
    connectTimeoutMs: 20_000,
    directSnapshot: { pool: s.ceph.pools.images, clientId: a.id, confPath: a.confPath, keyringPath: a.keyringPath },
  };
}

function newDisk(): DiskRef {
  const d = { instance: randomUUID(), name: 'disk' };
  made.push(d);
  return d;
}

async function readImage(pool: IoCtx, name: string, length: number, snapshot?: string): Promise<Buffer> {
  const img = await pool.open(name, { readOnly: true, ...(snapshot ? { snapshot } : {}) });
  try {
    return Buffer.from(await img.read(0, length));
  } finally {
    await img.close();
  }
}

async function parentOf(pool: IoCtx, name: string) {
  const img = await pool.open(name, { readOnly: true });
  try {
    return await img.parent();
  } finally {
    await img.close();
  }
}

beforeAll(async () => {
  backend = await newBackend(adminOptions());
  const admin = await adminCluster();
  vms = await admin.openIoCtx(stack().ceph.pools.vms);
  images = await admin.openIoCtx(stack().ceph.pools.images);
});

afterAll(async () => {
  for (const d of made) await backend.remove(d).catch(() => undefined);
  for (const id of imageIds) await removeImageFully(images, id).catch(() => undefined);
  for (const c of chain.reverse()) await removeImageFully(c.io(), c.name).catch(() => undefined);
  await vms?.close();
  await images?.close();
  await backend?.close();
  await closeAdmin();
});

describe('deferred direct snapshot', () => {
  it('returns before the image is flat (parent right after, readable), finishDirectSnapshot flattens it and drops the temporary snapshot', async () => {
    const bytes = patternBytes(2 * MiB, 211);
    const d = newDisk();
    await backend.createFromImage(d, sourceImageFromBytes(bytes));
    const imageId = randomUUID();
    imageIds.push(imageId);
    const res = await backend.directSnapshot(d, { imageId, deferFlatten: true });
    expect(res).toMatchObject({ metadata: { method: 'clone' }, flattenPending: true });
    // Usable at once: `snap` is protected and reads the disk's content through the parent.
    const parent = await parentOf(images, imageId);
    expect(parent).toMatchObject({ pool: 'vms', image: diskId(d), snap: `ephemera-direct-${imageId}` });
    expect(Buffer.compare(await readImage(images, imageId, bytes.length, 'snap'), Buffer.from(bytes))).toBe(0);
    expect(await backend.pendingDirectSnapshots(d)).toEqual([imageId]);
    // No object map on it: a rerun after a killed flatten would trust stale entries (zeros).
    const head = await images.open(imageId, { readOnly: true });
    expect((await head.features()).names).not.toContain('object-map');
    await head.close();
    // The disk keeps changing; the snapshot must not.
    await backend.createSnapshot(d, 'later').then(() => backend.removeSnapshot(d, 'later'));

    const events: ProgressEvent[] = [];
    expect(await backend.finishDirectSnapshot(d, { imageId, onProgress: (e) => events.push(e) })).toBe(true);
    expect(await parentOf(images, imageId)).toBeNull();
    expect(Buffer.compare(await readImage(images, imageId, bytes.length, 'snap'), Buffer.from(bytes))).toBe(0);
    expect((await backend.listSnapshots(d)).map((s) => s.name)).toEqual([]);
    expect(await backend.pendingDirectSnapshots(d)).toEqual([]);
    expect(events.some((e) => e.phase === 'flatten')).toBe(true);
    expect(events.at(-1)?.percent).toBe(100);
    const percents = events.map((e) => e.percent);
    expect(percents).toEqual([...percents].sort((a, b) => a - b));
    expect(await backend.finishDirectSnapshot(d, { imageId })).toBe(false); // idempotent
  });

  it('without deferFlatten still flattens before returning (the synchronous mode)', async () => {
    const d = newDisk();
    await backend.createFromImage(d, sourceImageFromBytes(patternBytes(MiB, 212)));
    const imageId = randomUUID();
    imageIds.push(imageId);
    const res = await backend.directSnapshot(d, { imageId });
    expect(res.flattenPending).toBeUndefined();
    expect(await parentOf(images, imageId)).toBeNull();
    expect(await backend.listSnapshots(d)).toEqual([]);
  });

  it('removing a disk with a pending direct snapshot finishes it first (the Glance image keeps its data)', async () => {
    const bytes = patternBytes(MiB, 213);
    const d = newDisk();
    await backend.createFromImage(d, sourceImageFromBytes(bytes));
    const imageId = randomUUID();
    imageIds.push(imageId);
    await backend.directSnapshot(d, { imageId, deferFlatten: true });
    expect(await backend.remove(d)).toBe(true);
    expect(await parentOf(images, imageId)).toBeNull();
    expect(Buffer.compare(await readImage(images, imageId, bytes.length, 'snap'), Buffer.from(bytes))).toBe(0);
  });

  it('a flatten SIGKILLed midway is resumed: flat image, temporary snapshot gone, nothing else left', async () => {
    // 16 KiB objects: 4 MiB of data is 256 copy-ups, so the kill lands inside the flatten.
    const d = newDisk();
    const size = 4 * MiB;
    const bytes = patternBytes(size, 214);
    await vms.create(diskId(d), size, { order: 14 });
    const img = await vms.open(diskId(d));
    await img.write(0, bytes);
    await img.close();
    const imageId = randomUUID();
    imageIds.push(imageId);
    await backend.directSnapshot(d, { imageId, deferFlatten: true });

    const p = spawn(process.execPath, [fixture], {
      env: { ...process.env, FINISH_JOB: JSON.stringify({ backend: adminOptions(), disk: d, imageId }) },
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 60_000,
    });
    let out = '';
    let err = '';
    p.stderr.on('data', (c: Buffer) => (err += c));
    const exited = new Promise<NodeJS.Signals | null>((r) => p.on('exit', (_code, sig) => r(sig)));
    p.stdout.on('data', (c: Buffer) => {
      out += c;
      if (out.includes('"flattening":true')) p.kill('SIGKILL');
    });
    expect(await exited, `child output: ${out} ${err}`).toBe('SIGKILL');
    expect(out).not.toContain('finished');
    expect(await parentOf(images, imageId)).not.toBeNull(); // killed midway: still a clone
    expect(await backend.pendingDirectSnapshots(d)).toEqual([imageId]);

    // Resumed as crash recovery does (`orphaned`): the dead client's lock is broken at once.
    const t = Date.now();
    expect(await backend.finishDirectSnapshot(d, { imageId, orphaned: true })).toBe(true);
    expect(Date.now() - t).toBeLessThan(20_000); // not the 30 s watch timeout of the dead client
    expect(await parentOf(images, imageId)).toBeNull();
    expect(Buffer.compare(await readImage(images, imageId, size, 'snap'), Buffer.from(bytes))).toBe(0);
    expect((await backend.listSnapshots(d)).map((s) => s.name)).toEqual([]);
    expect(await backend.pendingDirectSnapshots(d)).toEqual([]);
    const head = await images.open(imageId, { readOnly: true });
    expect((await head.listSnapshots()).map((s) => [s.name, s.protected])).toEqual([['snap', true]]);
    await head.close();
  }, 120_000);
});

describe('clone depth', () => {
  it('counts the ancestors of a disk through clones of clones, across pools', async () => {
    const base = `flatten-depth-${randomUUID()}`;
    await images.create(base, MiB);
    chain.push({ io: () => images, name: base });
    let parent = { ioctx: images, image: base };
    const d = newDisk();
    // base <- c1 <- c2 <- disk: depth 3
    for (let i = 1; i <= 3; i++) {
      const p = await parent.ioctx.open(parent.image);
      await p.createSnapshot('s');
      await p.protectSnapshot('s');
      await p.close();
      const name = i === 3 ? diskId(d) : `${base}-c${i}`;
      await vms.clone({ parent: { ioctx: parent.ioctx, image: parent.image, snap: 's' }, dest: { name } });
      if (i < 3) chain.push({ io: () => vms, name });
      parent = { ioctx: vms, image: name };
    }
    expect(await backend.cloneDepth(d)).toBe(3);
    await backend.flatten(d);
    expect(await backend.cloneDepth(d)).toBe(0);
  });
});
