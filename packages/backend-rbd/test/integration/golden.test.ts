// Golden images on the dev stack: an image the backend cannot clone is converted once into
// `vms/ephemera-golden-<image id>` (checksum verified while streaming, metadata, protected
// snapshot) and every disk is a clone of it; half-built or stale golden images are never cloned.
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  diskId,
  expectImageBackendError,
  sourceImageFromBytes,
  type DiskRef,
  type ProgressEvent,
  type SourceImage,
} from '@ephemera/image-backend';
import type { IoCtx } from '@ephemera/ceph-rbd-napi';
import type { RbdBackend } from '../../src/index.js';
import { GOLDEN_LOCK, GOLDEN_META, goldenLockObject, goldenName } from '../../src/golden.js';
import { removeImageFully } from '../../src/rbd-ops.js';
import {
  GlanceImages,
  adminCluster,
  closeAdmin,
  newBackend,
  patternedImage,
  qcow2Of,
  rbdLs,
  readDisk,
  stack,
  trackedDisk,
} from '../support/stack.js';

const MiB = 1024 * 1024;
const glance = new GlanceImages();
let backend: RbdBackend;
let other: RbdBackend;
let vms: IoCtx;
let tmp: string;
const made: DiskRef[] = [];
const goldenIds: string[] = [];

const newDisk = (): DiskRef => trackedDisk(made);

/** 8 MiB, mostly zeros: 1 MiB of pattern at 0 and at 5 MiB. */
const rawImage = (seed: number): Uint8Array => patternedImage(8 * MiB, seed, 5 * MiB);

/** A qcow2 image held in memory, as Glance would serve it (sha512 and md5 declared). */
async function qcow2Source(seed: number, id: string = randomUUID()): Promise<{ raw: Uint8Array; src: SourceImage }> {
  const raw = rawImage(seed);
  goldenIds.push(id);
  return {
    raw,
    src: sourceImageFromBytes(await qcow2Of(raw, tmp), { id, diskFormat: 'qcow2', virtualSize: raw.length }),
  };
}

async function goldenImages(id: string): Promise<string[]> {
  return (await rbdLs(stack().ceph.pools.vms)).filter((n) => n.startsWith(goldenName(id)!));
}

async function expectContent(d: DiskRef, raw: Uint8Array): Promise<void> {
  expect(Buffer.from(await readDisk(d, raw.length)).equals(Buffer.from(raw))).toBe(true);
}

beforeAll(async () => {
  backend = await newBackend({ goldenImages: { leaseMs: 6_000, pollMs: 100 } });
  other = await newBackend({ goldenImages: { leaseMs: 6_000, pollMs: 100 } });
  vms = await (await adminCluster()).openIoCtx(stack().ceph.pools.vms);
  tmp = await mkdtemp(join(tmpdir(), 'ephemera-golden-test-'));
});

afterAll(async () => {
  const failures: string[] = [];
  for (const d of made)
    await backend.remove(d, { busyTimeoutMs: 60_000 }).catch((e: Error) => failures.push(e.message));
  const names = await rbdLs(stack().ceph.pools.vms);
  for (const id of new Set(goldenIds))
    for (const n of names.filter((x) => x.startsWith(goldenName(id)!)))
      await removeImageFully(vms, n).catch((e: Error) => failures.push(`${n}: ${e.message}`));
  await glance.deleteAll().catch((e: Error) => failures.push(e.message));
  await backend?.close();
  await other?.close();
  await closeAdmin();
  if (tmp) await rm(tmp, { recursive: true, force: true });
  if (failures.length) throw new Error(failures.join('\n'));
});

describe('golden images', () => {
  it('converts a qcow2 Glance image once into a golden image with metadata and a protected snapshot, then clones it; a second create reuses it', async () => {
    const raw = rawImage(11);
    const rec = await glance.upload(await qcow2Of(raw, tmp), 'qcow2');
    goldenIds.push(rec.id);
    const name = goldenName(rec.id)!;
    const d1 = newDisk();
    const events: ProgressEvent[] = [];
    const r1 = await backend.createFromImage(d1, glance.source(rec), {
      sizeBytes: 16 * MiB,
      onProgress: (e) => events.push(e),
    });
    expect(r1.method).toBe('cloned');
    expect(r1.reason).toMatch(new RegExp(`golden image vms/${name} built`));
    expect(r1.sizeBytes).toBe(16 * MiB);
    expect(events.at(-1)?.percent).toBe(100);
    expect(events.map((e) => e.percent)).toEqual([...events.map((e) => e.percent)].sort((a, b) => a - b));
    await expectContent(d1, raw);
    // The golden image: raw, complete, and says what it is; nothing left of the build.
    expect(await goldenImages(rec.id)).toEqual([name]);
    const img = await vms.open(name, { readOnly: true });
    try {
      const meta = Object.fromEntries(await img.metadataList());
      expect(meta[GOLDEN_META.source]).toBe(rec.id);
      expect(meta[GOLDEN_META.checksum]).toBe(`sha512:${rec.os_hash_value}`);
      expect(meta[GOLDEN_META.format]).toBe('qcow2');
      expect(meta[GOLDEN_META.builder]).toMatch(/pid \d+ client\.ephemera/);
      expect(await img.size()).toBe(raw.length);
      const snaps = await img.listSnapshots();
      expect(snaps.filter((s) => s.namespace === 'user').map((s) => [s.name, s.protected])).toEqual([['snap', true]]);
    } finally {
      await img.close();
    }
    const disk = await vms.open(diskId(d1), { readOnly: true });
    expect((await disk.parent())?.image).toBe(name);
    await disk.close();
    // Second create (another client): a clone of the same golden image, nothing converted.
    const d2 = newDisk();
    const r2 = await other.createFromImage(d2, glance.source(rec));
    expect(r2.method).toBe('cloned');
    expect(r2.reason).toMatch(/reused/);
    await expectContent(d2, raw);
    expect(await goldenImages(rec.id)).toEqual([name]);
  });

  it('refuses a stream whose checksum is not the declared one: no golden image, no disk, nothing left', async () => {
    const raw = rawImage(21);
    const id = randomUUID();
    goldenIds.push(id);
    const src = sourceImageFromBytes(await qcow2Of(raw, tmp), { id, diskFormat: 'qcow2', corruptHash: true });
    const d = newDisk();
    await expectImageBackendError(backend.createFromImage(d, src), 'UNSAFE_IMAGE');
    expect(await goldenImages(id)).toEqual([]);
    expect(await backend.exists(d)).toBe(false);
  });

  it('detects a half-built golden image (no protected snapshot) and rebuilds it instead of cloning it', async () => {
    const { raw, src } = await qcow2Source(31);
    const name = goldenName(src.id)!;
    // As a builder killed before its snapshot would leave it, but under the final name.
    await vms.create(name, raw.length);
    const half = await vms.open(name);
    await half.metadataSet(GOLDEN_META.checksum, `sha512:${src.osHashValue}`);
    await half.close();
    const d = newDisk();
    const r = await backend.createFromImage(d, src);
    expect(r.reason).toMatch(/rebuilt \(the previous one was half-built \(no snapshot snap\)\)/);
    await expectContent(d, raw);
    expect(await goldenImages(src.id)).toEqual([name]);
  });

  it('never serves a stale golden image: a new Glance checksum rebuilds it, clones of the old one keep their data', async () => {
    const id = randomUUID();
    const before = await qcow2Source(41, id);
    const d1 = newDisk();
    expect((await backend.createFromImage(d1, before.src)).reason).toMatch(/built/);
    // Glance now has other bytes (another checksum) for the same image id.
    const after = await qcow2Source(51, id);
    const d2 = newDisk();
    const r = await other.createFromImage(d2, after.src);
    expect(r.reason).toMatch(/rebuilt \(the previous one was checksum sha512:\w+ is not Glance's/);
    await expectContent(d2, after.raw);
    await expectContent(d1, before.raw);
    // The old one still has a clone: kept aside (for gc), not under the golden name.
    const names = await goldenImages(id);
    expect(names).toContain(goldenName(id));
    expect(names.filter((n) => n.includes('.stale-'))).toHaveLength(1);
    // And again with the new checksum: reused.
    const d3 = newDisk();
    expect((await backend.createFromImage(d3, after.src)).reason).toMatch(/reused/);
  });

  it('concurrent first creates on two clients build once and all clone', async () => {
    const { raw, src } = await qcow2Source(61);
    const disks = Array.from({ length: 4 }, () => newDisk());
    const results = await Promise.all(disks.map((d, i) => (i % 2 ? other : backend).createFromImage(d, src)));
    expect(results.every((r) => r.method === 'cloned')).toBe(true);
    // One built it; the others waited for it (or found it ready).
    expect(results.filter((r) => /golden image \S+ built \(/.test(r.reason ?? ''))).toHaveLength(1);
    expect(
      results.filter((r) => /built by client\.\d+|built by another process|reused/.test(r.reason ?? '')),
    ).toHaveLength(3);
    for (const d of disks) await expectContent(d, raw);
    expect(await goldenImages(src.id)).toEqual([goldenName(src.id)]);
  });

  it('a create waiting for another builder honours its AbortSignal and its wait timeout, reporting progress', async () => {
    const { src } = await qcow2Source(71);
    const oid = goldenLockObject(goldenName(src.id)!);
    // Another process holds the build lock (and builds nothing).
    await vms.lockExclusive(oid, GOLDEN_LOCK, { cookie: 'someone-else', durationMs: 60_000 });
    try {
      const ac = new AbortController();
      const events: ProgressEvent[] = [];
      const d = newDisk();
      setTimeout(() => ac.abort(new Error('operator')), 400);
      await expectImageBackendError(
        backend.createFromImage(d, src, { signal: ac.signal, onProgress: (e) => events.push(e) }),
        'ABORTED',
      );
      expect(events.length).toBeGreaterThan(0);
      expect(await backend.exists(d)).toBe(false);
      const impatient = await newBackend({ goldenImages: { waitTimeoutMs: 500, pollMs: 100 } });
      try {
        const t0 = Date.now();
        const e = await expectImageBackendError(impatient.createFromImage(newDisk(), src), 'BUSY');
        expect(e.message).toMatch(/being built by client\.\d+/);
        expect(Date.now() - t0).toBeLessThan(5_000);
      } finally {
        await impatient.close();
      }
      expect(await goldenImages(src.id)).toEqual([]);
    } finally {
      await vms.unlock(oid, GOLDEN_LOCK, 'someone-else');
    }
  });
});
