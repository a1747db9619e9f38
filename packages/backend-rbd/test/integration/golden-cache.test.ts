// Golden images as a cache on the dev stack: what a create would do with one (plan, for `image
// explain`), and gc: gone, changed or unused golden images go, those with clones stay, and a dead
// builder's temporary image is removed.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { patternBytes, sourceImageFromBytes, type DiskRef, type SourceImage } from '@ephemera/image-backend';
import type { IoCtx } from '@ephemera/ceph-rbd-napi';
import type { GoldenImages, RbdBackend } from '../../src/index.js';
import { GOLDEN_LOCK, goldenLockObject, goldenName } from '../../src/golden.js';
import { removeImageFully } from '../../src/rbd-ops.js';
import { adminCluster, closeAdmin, newBackend, rbdLs, stack } from '../support/stack.js';

const MiB = 1024 * 1024;
let backend: RbdBackend;
let golden: GoldenImages;
let vms: IoCtx;
const made: DiskRef[] = [];
const ids: string[] = [];

/** A raw image (not on RBD: the backend cannot clone it) of 4 MiB. */
function rawSource(seed: number, id: string = randomUUID()): SourceImage {
  ids.push(id);
  const b = new Uint8Array(4 * MiB);
  b.set(patternBytes(MiB, seed), MiB);
  return sourceImageFromBytes(b, { id });
}

async function spawnFrom(src: SourceImage): Promise<DiskRef> {
  const d = { instance: randomUUID(), name: 'disk' };
  made.push(d);
  await backend.createFromImage(d, src);
  return d;
}

async function present(): Promise<string[]> {
  return (await rbdLs(stack().ceph.pools.vms)).filter((n) => ids.some((id) => n.startsWith(goldenName(id)!)));
}

beforeAll(async () => {
  backend = await newBackend({ goldenImages: { leaseMs: 6_000, pollMs: 100 } });
  golden = backend.golden!;
  vms = await (await adminCluster()).openIoCtx(stack().ceph.pools.vms);
});

afterAll(async () => {
  for (const d of made) await backend.remove(d, { busyTimeoutMs: 60_000 }).catch(() => undefined);
  for (const n of await present()) await removeImageFully(vms, n);
  await backend?.close();
  await closeAdmin();
});

describe('golden image plan (image explain)', () => {
  it('says build, wait, reuse, rebuild or none, and why', async () => {
    const src = rawSource(1);
    expect(await golden.plan(src)).toMatchObject({ action: 'build', name: `vms/${goldenName(src.id)}` });
    const oid = goldenLockObject(goldenName(src.id)!);
    await vms.lockExclusive(oid, GOLDEN_LOCK, { cookie: 'other-host', durationMs: 30_000 });
    try {
      expect(await golden.plan(src)).toMatchObject({ action: 'wait', reason: expect.stringMatching(/client\.\d+/) });
    } finally {
      await vms.unlock(oid, GOLDEN_LOCK, 'other-host');
    }
    await spawnFrom(src);
    expect(await golden.plan(src)).toMatchObject({ action: 'reuse' });
    const changed = rawSource(2, src.id);
    expect(await golden.plan(changed)).toMatchObject({ action: 'rebuild', reason: expect.stringMatching(/checksum/) });
    const noHash = sourceImageFromBytes(new Uint8Array(MiB), { noHash: true });
    expect(await golden.plan(noHash)).toMatchObject({ action: 'none', reason: expect.stringMatching(/no checksum/) });
  });
});

describe('golden image gc', () => {
  it('removes gone, changed and unused golden images and dead builds; keeps those with clones; dryRun removes nothing', async () => {
    const withClone = rawSource(10);
    const gone = rawSource(11);
    const changed = rawSource(12);
    const unused = rawSource(13);
    await spawnFrom(withClone);
    for (const s of [gone, changed, unused]) {
      const d = await spawnFrom(s);
      await backend.remove(d);
    }
    // A builder that died: its temporary image, and nobody holds the lock.
    const dead = `${goldenName(unused.id)}.building-deadbeef`;
    await vms.create(dead, MiB);
    const glance = new Map<string, SourceImage | null>([
      [withClone.id, null], // gone from Glance, but a disk still clones it
      [gone.id, null],
      [changed.id, rawSource(99, changed.id)],
      [unused.id, unused],
    ]);
    const lookup = async (id: string) => {
      const r = glance.get(id);
      if (r === undefined) throw new Error(`not a test image ${id}`);
      return r;
    };
    const before = await present();
    const dry = await golden.gc({ lookup, unusedMs: 0, dryRun: true });
    expect(dry.filter((e) => ids.includes(e.imageId)).every((e) => e.action === 'kept')).toBe(true);
    expect(await present()).toEqual(before);
    // A recent one stays without a short unused time.
    const first = await golden.gc({ lookup, unusedMs: 3_600_000 });
    const mine = (imageId: string) => first.find((e) => e.imageId === imageId && e.kind === 'golden');
    expect(mine(withClone.id)).toMatchObject({ action: 'kept', children: 1 });
    expect(mine(gone.id)).toMatchObject({ action: 'removed', reason: expect.stringMatching(/gone/) });
    expect(mine(changed.id)).toMatchObject({ action: 'removed', reason: expect.stringMatching(/checksum/) });
    expect(mine(unused.id)).toMatchObject({ action: 'kept' });
    expect(first.find((e) => e.name === dead)).toMatchObject({ action: 'removed', kind: 'building' });
    const second = await golden.gc({ lookup, unusedMs: 0 });
    expect(second.find((e) => e.imageId === unused.id)).toMatchObject({
      action: 'removed',
      reason: expect.stringMatching(/unused/),
    });
    const these = [withClone, gone, changed, unused].map((x) => goldenName(x.id)!);
    expect((await present()).filter((n) => these.some((t) => n.startsWith(t)))).toEqual([goldenName(withClone.id)]);
    // A live build (lock held) is never taken for a dead one.
    const live = `${goldenName(unused.id)}.building-cafecafe`;
    await vms.create(live, MiB);
    const oid = goldenLockObject(goldenName(unused.id)!);
    await vms.lockExclusive(oid, GOLDEN_LOCK, { cookie: 'builder', durationMs: 30_000 });
    try {
      const third = await golden.gc({ lookup, unusedMs: 0 });
      expect(third.find((e) => e.name === live)).toMatchObject({ action: 'kept' });
    } finally {
      await vms.unlock(oid, GOLDEN_LOCK, 'builder');
    }
  });
});
