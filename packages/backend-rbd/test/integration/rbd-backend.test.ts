// RbdBackend on the dev stack, beyond the shared conformance suite: clones of real Glance
// uploads (parent = the Glance snapshot), qcow2 imports converted from a Glance download,
// failures midway, neverDownloadIfOnRbd, thin imports, direct snapshots, busy removal.
import { execFile } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  diskId,
  expectImageBackendError,
  patternBytes,
  sourceImageFromBytes,
  sourceImageFromFile,
  type DiskRef,
  type ProgressEvent,
} from '@ephemera/image-backend';
import { cephCli, removeCloneKeepingTrashSnapshot } from '@ephemera/testkit';
import type { RbdBackend } from '../../src/index.js';
import { parseRbdUrl } from '../../src/locations.js';
import {
  GlanceImages,
  adminCluster,
  closeAdmin,
  glanceDirectSnapshot,
  newBackend,
  patternedImage,
  qcow2Of,
  rbdLs,
  readDisk,
  stack,
  trackedDisk,
} from '../support/stack.js';

const run = promisify(execFile);
const MiB = 1024 * 1024;
const glance = new GlanceImages();
let backend: RbdBackend;
let tmp: string;
const made: DiskRef[] = [];
const extraBackends: RbdBackend[] = [];
const imagesPoolLeftovers: string[] = [];

/** A backend whose direct snapshots write the images pool as client.admin (closed after the file). */
async function adminDirectSnapshotBackend(): Promise<RbdBackend> {
  const a = stack().ceph.users.admin;
  const b = await newBackend({
    directSnapshot: { pool: 'images', clientId: a.id, confPath: a.confPath, keyringPath: a.keyringPath },
  });
  extraBackends.push(b);
  return b;
}

let admin: RbdBackend | undefined;
/** The backend as client.admin (write caps on images: QEMU may open Glance's snapshots). */
async function adminBackend(): Promise<RbdBackend> {
  if (!admin) {
    const a = stack().ceph.users.admin;
    admin = await newBackend({ clientId: a.id, confPath: a.confPath, keyringPath: a.keyringPath });
    extraBackends.push(admin);
  }
  return admin;
}

const newDisk = (name = 'disk'): DiskRef => trackedDisk(made, name);

/** Mostly zeros with some data: 1 MiB of pattern at 0, 1 MiB at 9 MiB, 12 MiB total. */
const sparseImage = (seed: number): Uint8Array => patternedImage(12 * MiB, seed, 9 * MiB);

beforeAll(async () => {
  backend = await newBackend();
  tmp = await mkdtemp(join(tmpdir(), 'ephemera-rbd-test-'));
});

afterAll(async () => {
  const failures: string[] = [];
  for (const d of made) {
    try {
      await backend.remove(d, { busyTimeoutMs: 60_000 });
    } catch (e) {
      failures.push(`${diskId(d)}: ${(e as Error).message}`);
    }
  }
  if (imagesPoolLeftovers.length) {
    const images = await (await adminCluster()).openIoCtx(stack().ceph.pools.images);
    for (const name of imagesPoolLeftovers) {
      try {
        const img = await images.open(name);
        for (const s of await img.listSnapshots()) {
          if (s.protected) await img.unprotectSnapshot(s.name);
          await img.removeSnapshot(s.name);
        }
        await img.close();
        await images.remove(name);
      } catch (e) {
        failures.push(`images/${name}: ${(e as Error).message}`);
      }
    }
    await images.close();
  }
  for (const b of extraBackends) await b.close();
  await backend?.close();
  await closeAdmin();
  await glance.deleteAll();
  if (tmp) await rm(tmp, { recursive: true, force: true });
  const left = (await rbdLs(stack().ceph.pools.vms)).filter((n) => made.some((d) => n === diskId(d)));
  expect(left, 'no test disk left in the vms pool').toEqual([]);
  expect(failures).toEqual([]);
});

describe('clone from a real Glance upload', () => {
  it('clones copy-on-write: the parent is the Glance snapshot images/<id>@snap, format chosen per the cluster', async () => {
    const bytes = patternBytes(2 * MiB, 21);
    const rec = await glance.upload(bytes);
    const loc = parseRbdUrl(rec.locations![0]!.url)!;
    expect(loc).toMatchObject({ fsid: backend.fsid, pool: 'images', image: rec.id, snapshot: 'snap' });
    const d = newDisk();
    const events: ProgressEvent[] = [];
    const started = performance.now();
    const res = await backend.createFromImage(d, glance.source(rec), {
      sizeBytes: 16 * MiB,
      onProgress: (e) => events.push(e),
    });
    const ms = Math.round(performance.now() - started);
    expect(res.method).toBe('cloned');
    // The stack keeps require_min_compat_client at luminous: format 1 of Glance's protected snapshot.
    expect(res.reason).toMatch(
      /^clone format 1 of images\/.+@snap \(require_min_compat_client luminous < mimic; parent snapshot protected\)/,
    );
    expect(res.sizeBytes).toBe(16 * MiB);
    expect(events.at(-1)?.percent).toBe(100);
    // The parent, through the binding, as admin.
    const vms = await (await adminCluster()).openIoCtx('vms');
    const img = await vms.open(diskId(d), { readOnly: true });
    expect(await img.parent()).toMatchObject({ pool: 'images', image: rec.id, snap: 'snap' });
    expect(await img.size()).toBe(16 * MiB);
    expect(Buffer.from(await img.read(0, bytes.length)).equals(Buffer.from(bytes))).toBe(true);
    expect((await img.read(bytes.length, MiB)).every((b) => b === 0)).toBe(true);
    await img.close();
    await vms.close();
    const info = await backend.info(d);
    expect(info.parent).toBe(`images/${rec.id}@snap`);
    console.log(`clone of a Glance image + resize: ${ms} ms`);
    // The image cannot be deleted from Glance while cloned; after removing the disk it can.
    expect(await backend.remove(d)).toBe(true);
  });

  it('uses clone format 2 when configured (no protection needed) and records it', async () => {
    const b2 = await newBackend({ cloneFormat: 2 });
    extraBackends.push(b2);
    const rec = await glance.upload(patternBytes(MiB, 22));
    const d = newDisk();
    const res = await b2.createFromImage(d, glance.source(rec));
    expect(res.method).toBe('cloned');
    expect(res.reason).toMatch(/^clone format 2 of images\//);
    expect(Buffer.from(await readDisk(d, MiB)).equals(Buffer.from(patternBytes(MiB, 22)))).toBe(true);
    expect(await b2.remove(d)).toBe(true);
  });

  it('refuses a smaller requested size than the image (InvalidArgument, nothing made)', async () => {
    const rec = await glance.upload(patternBytes(2 * MiB, 23));
    const d = newDisk();
    await expectImageBackendError(
      backend.createFromImage(d, glance.source(rec), { sizeBytes: MiB }),
      'INVALID_ARGUMENT',
    );
    expect(await backend.exists(d)).toBe(false);
  });

  it('imports (and says why) a raw image whose rbd location is in another cluster', async () => {
    const rec = await glance.upload(patternBytes(MiB, 24));
    const foreign = rec.locations![0]!.url.replace(backend.fsid, '00000000-0000-4000-8000-000000000000');
    const d = newDisk();
    const res = await backend.createFromImage(d, glance.source(rec, { locations: [{ url: foreign, metadata: {} }] }));
    expect(res.method).toBe('imported');
    expect(res.reason).toMatch(/another cluster/);
    expect(Buffer.from(await readDisk(d, MiB)).equals(Buffer.from(patternBytes(MiB, 24)))).toBe(true);
  });
});

describe('several rbd locations in this cluster (tried in order, as Nova does)', () => {
  /** An image in the images pool whose snapshot `snap` was made and then removed. */
  async function snapshotGone(): Promise<string> {
    const name = `ephemera-snap-gone-${randomUUID()}`;
    const images = await (await adminCluster()).openIoCtx(stack().ceph.pools.images);
    try {
      await images.create(name, MiB);
      imagesPoolLeftovers.push(name);
      const img = await images.open(name);
      try {
        await img.createSnapshot('snap');
        await img.removeSnapshot('snap');
      } finally {
        await img.close();
      }
    } finally {
      await images.close();
    }
    return `rbd://${backend.fsid}/${stack().ceph.pools.images}/${name}/snap`;
  }

  it("clones from the second location when the first one's snapshot is gone and a third pool is not readable, with and without neverDownloadIfOnRbd", async () => {
    const bytes = patternBytes(MiB, 25);
    const rec = await glance.upload(bytes);
    const gone = await snapshotGone();
    // client.ephemera has no caps on the rbd pool: EPERM, not ENOENT.
    const noCaps = `rbd://${backend.fsid}/${stack().ceph.pools.rbd}/${randomUUID()}/snap`;
    const good = rec.locations![0]!.url;
    const strict = await newBackend({ neverDownloadIfOnRbd: true });
    extraBackends.push(strict);
    for (const b of [backend, strict]) {
      const d = newDisk();
      let opened = 0;
      const src = glance.source(rec, {
        locations: [
          { url: gone, metadata: {} },
          { url: noCaps, metadata: {} },
          { url: good, metadata: {} },
        ],
      });
      const res = await b.createFromImage(d, {
        ...src,
        open: (o) => {
          opened++;
          return src.open(o);
        },
      });
      expect(res.method).toBe('cloned');
      expect(res.reason).toMatch(new RegExp(`^clone format \\d of images/${rec.id}@snap`));
      // Why each earlier location was skipped, in order.
      expect(res.reason).toContain(`skipped ${gone}: `);
      expect(res.reason).toMatch(
        /skipped rbd:\/\/[^ ]+\/rbd\/[^ ]+: .*EPERM|skipped rbd:\/\/[^ ]+\/rbd\/[^ ]+: .*EACCES/,
      );
      expect(res.reason!.indexOf(gone)).toBeLessThan(res.reason!.indexOf(noCaps));
      expect(opened).toBe(0);
      expect((await b.info(d)).parent).toBe(`images/${rec.id}@snap`);
      expect(Buffer.from(await readDisk(d, MiB)).equals(Buffer.from(bytes))).toBe(true);
      expect(await b.remove(d)).toBe(true);
    }
  });

  it('with neverDownloadIfOnRbd, refuses only after every local location failed, and names each reason', async () => {
    const rec = await glance.upload(patternBytes(MiB, 26));
    const [g1, g2] = [await snapshotGone(), await snapshotGone()];
    const strict = await newBackend({ neverDownloadIfOnRbd: true });
    extraBackends.push(strict);
    const d = newDisk();
    const err = await expectImageBackendError(
      strict.createFromImage(
        d,
        glance.source(rec, {
          locations: [
            { url: g1, metadata: {} },
            { url: g2, metadata: {} },
          ],
        }),
      ),
      'INVALID_ARGUMENT',
    );
    expect(err.message).toContain(g1);
    expect(err.message).toContain(g2);
    expect(err.message).toMatch(/neverDownloadIfOnRbd/);
    expect(await strict.exists(d)).toBe(false);
  });
});

describe('streamed import', () => {
  it('imports a qcow2 Glance image through qemu-img from its RBD snapshot: content byte-equal to the raw original, never cloned', async () => {
    const raw = sparseImage(31);
    const q = await qcow2Of(raw, tmp);
    const rec = await glance.upload(q, 'qcow2');
    expect(rec.locations![0]!.url).toMatch(/^rbd:\/\//);
    const d = newDisk();
    const events: ProgressEvent[] = [];
    const started = performance.now();
    const res = await backend.createFromImage(d, glance.source(rec), { onProgress: (e) => events.push(e) });
    const ms = Math.round(performance.now() - started);
    expect(res.method).toBe('imported');
    expect(res.reason).toMatch(/qcow2, not raw/);
    // client.ephemera is read-only on images (QEMU's rbd_open, a watch, is refused there): the
    // backend opens Glance's snapshot read-only and serves it to qemu-img.
    expect(res.reason).toContain(`converted by qemu-img reading images/${rec.id}@snap (read-only through librbd`);
    expect(res.sizeBytes).toBe(raw.length);
    expect(events.some((e) => e.phase === 'convert')).toBe(true);
    expect(events.at(-1)?.percent).toBe(100);
    const back = await readDisk(d, raw.length);
    expect(Buffer.compare(Buffer.from(back), Buffer.from(raw))).toBe(0);
    console.log(`qcow2 import (${q.length} bytes, virtual ${raw.length}): ${ms} ms`);
  });

  it('converts a qcow2 on RBD as a read-only client from images/<id>@snap (what the rbd-copy plan says), never downloading it', async () => {
    const raw = sparseImage(32);
    const rec = await glance.upload(await qcow2Of(raw, tmp), 'qcow2');
    // First location: a snapshot this client cannot read (no caps on the rbd pool); skipped, said why.
    const noCaps = `rbd://${backend.fsid}/${stack().ceph.pools.rbd}/${randomUUID()}/snap`;
    const src = glance.source(rec, { locations: [{ url: noCaps, metadata: {} }, ...rec.locations!] });
    let opened = 0;
    const d = newDisk();
    const res = await backend.createFromImage(d, {
      ...src,
      open: (o) => {
        opened++;
        return src.open(o);
      },
    });
    expect(res.method).toBe('imported');
    expect(opened).toBe(0);
    expect(res.reason).toContain(
      `converted by qemu-img reading images/${rec.id}@snap (read-only through librbd, hashed in the same pass: `,
    );
    expect(res.reason).toContain(`skipped ${noCaps}: `);
    expect(Buffer.compare(Buffer.from(await readDisk(d, raw.length)), Buffer.from(raw))).toBe(0);
    // Without any readable rbd location, the image's own stream (Glance) is the source.
    const d2 = newDisk();
    let opened2 = 0;
    const src2 = glance.source(rec, { locations: [{ url: noCaps, metadata: {} }] });
    const res2 = await backend.createFromImage(d2, {
      ...src2,
      open: (o) => {
        opened2++;
        return src2.open(o);
      },
    });
    expect(opened2).toBe(1);
    expect(res2.reason).toMatch(/converted by qemu-img from the stream$/);
  });

  it('imports raw with aio writes, skipping all-zero blocks (thin), verified against the Glance hash', async () => {
    const raw = new Uint8Array(64 * MiB);
    raw.set(patternBytes(MiB, 41), 20 * MiB);
    const rec = await glance.upload(raw);
    const d = newDisk();
    const started = performance.now();
    const res = await backend.createFromImage(d, glance.source(rec), { forceImport: true });
    const ms = Math.round(performance.now() - started);
    expect(res.method).toBe('imported');
    expect(res.reason).toMatch(/forceImport/);
    expect(Buffer.compare(Buffer.from(await readDisk(d, raw.length)), Buffer.from(raw))).toBe(0);
    const a = stack().ceph.users.admin;
    const { stdout } = await run(
      'rbd',
      ['--conf', a.confPath, '--id', a.id, '--keyring', a.keyringPath, 'du', '--format', 'json', `vms/${diskId(d)}`],
      { timeout: 60_000 },
    );
    const used = (JSON.parse(stdout) as { images: { used_size: number }[] }).images[0]!.used_size;
    expect(used).toBeLessThanOrEqual(4 * MiB); // one 4 MiB object holds the data
    console.log(`raw 64 MiB import (1 MiB of data) from Glance: ${ms} ms, ${used} bytes allocated`);
  });

  it('imports raw from object-sized source chunks (blocks written as views, zero-copy librbd): bytes equal, zero objects unallocated, partial tail kept', async () => {
    // 10 objects and a 1234-byte tail; objects 0, 3 and 7 hold data, object 5 one byte, the rest are zero.
    const raw = new Uint8Array(40 * MiB + 1234);
    for (const o of [0, 3, 7]) raw.set(patternBytes(4 * MiB, 70 + o), o * 4 * MiB);
    raw[5 * 4 * MiB + 4095] = 9;
    raw.set(patternBytes(1234, 77), 40 * MiB);
    const d = newDisk();
    // 8 MiB chunks: every block is a view of a chunk (as with a local file), none gathered.
    const res = await backend.createFromImage(d, sourceImageFromBytes(raw, { chunkBytes: 8 * MiB }), {
      forceImport: true,
    });
    expect(res.method).toBe('imported');
    expect(Buffer.compare(Buffer.from(await readDisk(d, raw.length)), Buffer.from(raw))).toBe(0);
    const a = stack().ceph.users.admin;
    const { stdout } = await run(
      'rbd',
      ['--conf', a.confPath, '--id', a.id, '--keyring', a.keyringPath, 'du', '--format', 'json', `vms/${diskId(d)}`],
      { timeout: 60_000 },
    );
    const used = (JSON.parse(stdout) as { images: { used_size: number }[] }).images[0]!.used_size;
    // Objects 0, 3, 5, 7 and the tail object exist; the six all-zero objects were never written.
    expect(used).toBeGreaterThan(4 * 4 * MiB);
    expect(used).toBeLessThanOrEqual(5 * 4 * MiB);
  });

  it('leaves no image when a source of object-sized chunks fails with block views in flight', async () => {
    const raw = patternBytes(48 * MiB, 78);
    const d = newDisk();
    await expectImageBackendError(
      backend.createFromImage(d, sourceImageFromBytes(raw, { chunkBytes: 8 * MiB, failAfterBytes: 24 * MiB }), {
        forceImport: true,
      }),
      'IMAGE_SOURCE',
    );
    expect(await rbdLs('vms')).not.toContain(diskId(d));
    expect(await backend.list({ instance: d.instance })).toEqual([]);
  });

  it('leaves no image when the Glance download fails midway (raw and qcow2)', async () => {
    const raw = patternBytes(8 * MiB, 51);
    const recRaw = await glance.upload(raw);
    const recQ = await glance.upload(await qcow2Of(raw, tmp), 'qcow2');
    for (const rec of [recRaw, recQ]) {
      const d = newDisk();
      // Without locations: the qcow2 goes through the stream path (qemu-img reads the download).
      await expectImageBackendError(
        backend.createFromImage(d, glance.source(rec, { failAfterBytes: 3 * MiB, locations: [] }), {
          forceImport: true,
        }),
        'IMAGE_SOURCE',
      );
      expect(await rbdLs('vms')).not.toContain(diskId(d));
      expect(await backend.list({ instance: d.instance })).toEqual([]);
    }
  });

  it('converts a qcow2 whose clusters are stored in reverse order: from RBD directly, not from a bounded stream window', async () => {
    // Data written back to front: qemu-img reads the file out of order.
    const q = join(tmp, 'reverse.qcow2');
    await run('qemu-img', ['create', '-f', 'qcow2', q, '24M'], { timeout: 30_000 });
    const raw = new Uint8Array(24 * MiB);
    for (const off of [20, 16, 12, 8, 4, 0]) {
      await run('qemu-io', ['-f', 'qcow2', '-c', `write -P ${off + 17} ${off}M 1M`, q], { timeout: 30_000 });
      raw.fill(off + 17, off * MiB, (off + 1) * MiB);
    }
    const rec = await glance.upload(await readFile(q), 'qcow2');
    const d = newDisk();
    const res = await (await adminBackend()).createFromImage(d, glance.source(rec));
    expect(res.reason).toContain(`converted by qemu-img reading images/${rec.id}@snap`);
    // One read of the snapshot serves qemu-img and the hash (out-of-order pieces wait in memory).
    const m = /(\d+) bytes read for (\d+)/.exec(res.reason ?? '');
    expect(m, res.reason).not.toBeNull();
    expect(Number(m![1])).toBeLessThanOrEqual(Number(m![2]) * 1.1);
    expect(Buffer.compare(Buffer.from(await readDisk(d, raw.length)), Buffer.from(raw))).toBe(0);
    // The same image from the stream with a small window cannot be converted, and says why.
    const small = await newBackend({ convertStream: { headBytes: 512 * 1024, windowBytes: 1024 * 1024 } });
    extraBackends.push(small);
    const d2 = newDisk();
    const err = await expectImageBackendError(
      small.createFromImage(d2, glance.source(rec, { locations: [] })),
      'IMAGE_SOURCE',
    );
    expect(err.message).toMatch(/not sequential enough/);
    expect(await rbdLs('vms')).not.toContain(diskId(d2));
  });

  it('refuses a qcow2 read from RBD whose declared hash does not match what is stored (UnsafeImage, target removed)', async () => {
    const rec = await glance.upload(await qcow2Of(patternBytes(4 * MiB, 52), tmp), 'qcow2');
    const d = newDisk();
    const lie = { ...rec, os_hash_value: rec.os_hash_value!.replace(/^./, (c) => (c === '0' ? '1' : '0')) };
    const err = await expectImageBackendError(
      (await adminBackend()).createFromImage(d, glance.source(lie)),
      'UNSAFE_IMAGE',
    );
    expect(err.message).toMatch(/mismatch/);
    expect(await rbdLs('vms')).not.toContain(diskId(d));
  });

  it('rolls back a direct (RBD-read) qcow2 conversion aborted midway, evicting the killed qemu-img watch', async () => {
    const rec = await glance.upload(await qcow2Of(patternBytes(96 * MiB, 53), tmp), 'qcow2');
    const b = await adminBackend();
    const d = newDisk();
    const ac = new AbortController();
    const started = performance.now();
    const p = b.createFromImage(d, glance.source(rec), {
      signal: ac.signal,
      onProgress: (e) => {
        if (e.phase === 'convert' && e.percent >= 5) ac.abort(new Error('test abort'));
      },
    });
    await expectImageBackendError(p, 'ABORTED');
    const ms = Math.round(performance.now() - started);
    expect(await backend.exists(d)).toBe(false);
    expect(ms).toBeLessThan(20_000); // not the ~30 s watch timeout
    console.log(`direct qcow2 abort + rollback: ${ms} ms`);
  });

  it('refuses a qcow2 declared raw before creating anything (UnsafeImage)', async () => {
    const q = await qcow2Of(patternBytes(4 * MiB, 61), tmp);
    const d = newDisk();
    const err = await expectImageBackendError(
      backend.createFromImage(d, sourceImageFromBytes(q, { diskFormat: 'raw' })),
      'UNSAFE_IMAGE',
    );
    expect(err.message).toMatch(/qcow2/);
    expect(await rbdLs('vms')).not.toContain(diskId(d));
  });

  it('refuses a qcow2 with a backing file (UnsafeImage), qemu-img never runs on it', async () => {
    const base = join(tmp, 'base.raw');
    const top = join(tmp, 'top.qcow2');
    await writeFile(base, patternBytes(MiB, 62));
    await run('qemu-img', ['create', '-f', 'qcow2', '-b', base, '-F', 'raw', top], { timeout: 30_000 });
    const d = newDisk();
    const err = await expectImageBackendError(
      backend.createFromImage(d, sourceImageFromBytes(await readFile(top), { diskFormat: 'qcow2' })),
      'UNSAFE_IMAGE',
    );
    expect((err as { reason?: string }).reason).toBe('backing-file');
    expect(await backend.exists(d)).toBe(false);
  });

  it('rolls back a qcow2 import aborted while qemu-img runs (Aborted, nothing left)', async () => {
    const raw = patternBytes(16 * MiB, 63);
    const q = await qcow2Of(raw, tmp);
    const ac = new AbortController();
    const img = sourceImageFromBytes(q, {
      diskFormat: 'qcow2',
      chunkBytes: 256 * 1024,
      onChunk: (done) => {
        if (done >= 8 * MiB) ac.abort(new Error('test abort'));
      },
    });
    const d = newDisk();
    const started = performance.now();
    await expectImageBackendError(backend.createFromImage(d, img, { signal: ac.signal }), 'ABORTED');
    expect(await backend.exists(d)).toBe(false);
    expect(await rbdLs('vms')).not.toContain(diskId(d));
    console.log(`qcow2 abort + rollback: ${Math.round(performance.now() - started)} ms`);
  });

  it('imports a local file through its reader into the block pool: byte-equal (a zero block, a short tail), its hash checked, the reader closed', async () => {
    // 12 MiB, data at 0 and at 9 MiB, plus a short tail: the last block is a partial one.
    const bytes = Buffer.concat([Buffer.from(sparseImage(91)), Buffer.from(patternBytes(12345, 92))]);
    const path = join(tmp, 'reader.raw');
    await writeFile(path, bytes);
    const sha = createHash('sha512').update(bytes).digest('hex');
    const file = await sourceImageFromFile(path, { osHashAlgo: 'sha512', osHashValue: sha });
    let reads = 0;
    let closed = 0;
    let opened = 0;
    const counted = {
      ...file,
      open: (o?: { signal?: AbortSignal }) => {
        opened++;
        return file.open(o);
      },
      openReader: async (o?: { signal?: AbortSignal }) => {
        const r = await file.openReader!(o);
        return {
          read: (t: Uint8Array) => {
            reads++;
            return r.read(t);
          },
          close: () => {
            closed++;
            return r.close();
          },
        };
      },
    };
    const d = newDisk();
    const res = await backend.createFromImage(d, counted, { forceImport: true });
    expect(res.method).toBe('imported');
    expect(opened).toBe(0);
    expect(closed).toBe(1);
    // Read in block-sized pieces (4 MiB objects): 4 blocks, then the end.
    expect(reads).toBeLessThanOrEqual(6);
    const back = await readDisk(d, bytes.length);
    expect(Buffer.compare(Buffer.from(back), bytes)).toBe(0);
    // A wrong declared hash fails the import after the last byte and leaves nothing.
    const lying = await sourceImageFromFile(path, { osHashAlgo: 'sha512', osHashValue: 'b'.repeat(128) });
    const d2 = newDisk();
    const e = await expectImageBackendError(backend.createFromImage(d2, lying, { forceImport: true }), 'UNSAFE_IMAGE');
    expect(e.message).toMatch(/mismatch/);
    expect(await rbdLs('vms')).not.toContain(diskId(d2));
  });

  it('closes the image of a raw import aborted with aio writes in flight: no watch or lock of this client is left, so it is removed at once', async () => {
    const raw = patternBytes(48 * MiB, 64);
    const ac = new AbortController();
    const img = sourceImageFromBytes(raw, {
      chunkBytes: 256 * 1024,
      onChunk: (done) => {
        if (done >= 12 * MiB) ac.abort(new Error('test abort'));
      },
    });
    const d = newDisk();
    const started = performance.now();
    await expectImageBackendError(backend.createFromImage(d, img, { forceImport: true, signal: ac.signal }), 'ABORTED');
    const ms = performance.now() - started;
    // A handle left open would keep its watch: the rollback's removal would retry for busyTimeoutMs
    // and leave the image behind (EBUSY until this process exits).
    expect(await rbdLs('vms')).not.toContain(diskId(d));
    expect(ms).toBeLessThan(10_000);
    console.log(`raw abort + rollback: ${Math.round(ms)} ms`);
  });
});

describe('neverDownloadIfOnRbd', () => {
  it('refuses to download an image on RBD that cannot be cloned (qcow2, or another cluster), creating nothing', async () => {
    const strict = await newBackend({ neverDownloadIfOnRbd: true });
    extraBackends.push(strict);
    const recQ = await glance.upload(await qcow2Of(patternBytes(MiB, 71), tmp), 'qcow2');
    const d1 = newDisk();
    const e1 = await expectImageBackendError(strict.createFromImage(d1, glance.source(recQ)), 'INVALID_ARGUMENT');
    expect(e1.message).toMatch(/neverDownloadIfOnRbd.*|is on RBD/);
    expect(e1.message).toMatch(/not raw/);
    expect(await strict.exists(d1)).toBe(false);
    const recR = await glance.upload(patternBytes(MiB, 72));
    const foreign = recR.locations![0]!.url.replace(strict.fsid, '00000000-0000-4000-8000-000000000000');
    const d2 = newDisk();
    const e2 = await expectImageBackendError(
      strict.createFromImage(d2, glance.source(recR, { locations: [{ url: foreign, metadata: {} }] })),
      'INVALID_ARGUMENT',
    );
    expect(e2.message).toMatch(/another cluster/);
    // A clonable image is still cloned, and an image without any rbd location is still imported.
    expect((await strict.createFromImage(newDisk(), glance.source(recR))).method).toBe('cloned');
    expect((await strict.createFromImage(newDisk(), sourceImageFromBytes(patternBytes(MiB, 73)))).method).toBe(
      'imported',
    );
    expect(await rbdLs('vms')).not.toContain(diskId(d1));
    expect(await rbdLs('vms')).not.toContain(diskId(d2));
  });
});

describe('snapshots, direct snapshot, removal', () => {
  it('direct-snapshots with the Glance user (streamed copy): a flat, protected images/<id>@snap with the disk content', async () => {
    const b = await newBackend({ directSnapshot: glanceDirectSnapshot() });
    extraBackends.push(b);
    const bytes = sparseImage(81);
    const d = newDisk();
    await b.createFromImage(d, sourceImageFromBytes(bytes));
    const imageId = randomUUID();
    const res = await b.directSnapshot(d, { imageId });
    imagesPoolLeftovers.push(imageId);
    expect(res.url).toBe(`rbd://${b.fsid}/images/${imageId}/snap`);
    expect(res.metadata).toEqual({ method: 'copy' });
    const images = await (await adminCluster()).openIoCtx('images');
    const img = await images.open(imageId, { snapshot: 'snap', readOnly: true });
    expect(await img.parent()).toBeNull();
    expect(Buffer.compare(await img.read(0, bytes.length), Buffer.from(bytes))).toBe(0);
    await img.close();
    const head = await images.open(imageId, { readOnly: true });
    expect((await head.listSnapshots()).map((s) => [s.name, s.protected])).toEqual([['snap', true]]);
    await head.close();
    await images.close();
    expect(await b.listSnapshots(d)).toEqual([]); // the temporary snapshot is gone
    await expectImageBackendError(b.directSnapshot(d, { imageId }), 'ALREADY_EXISTS');
    expect(await b.listSnapshots(d)).toEqual([]);
    // The restricted backend without directSnapshot config says so.
    await expectImageBackendError(backend.directSnapshot(d, { imageId: randomUUID() }), 'UNSUPPORTED_OPERATION');
  });

  it('direct-snapshots by clone + flatten when the images-pool client can read the disk pool (admin)', async () => {
    const b = await adminDirectSnapshotBackend();
    const bytes = patternBytes(2 * MiB, 82);
    const d = newDisk();
    await b.createFromImage(d, sourceImageFromBytes(bytes));
    const imageId = randomUUID();
    const res = await b.directSnapshot(d, { imageId });
    imagesPoolLeftovers.push(imageId);
    expect(res.metadata).toEqual({ method: 'clone' });
    const images = await (await adminCluster()).openIoCtx('images');
    const img = await images.open(imageId, { snapshot: 'snap', readOnly: true });
    expect(await img.parent()).toBeNull(); // flattened
    expect(Buffer.compare(await img.read(0, bytes.length), Buffer.from(bytes))).toBe(0);
    await img.close();
    await images.close();
    expect(await b.listSnapshots(d)).toEqual([]);
    expect(await b.remove(d)).toBe(true);
  });

  it('refuses at once to remove a disk whose snapshot has clones (Busy), removes it after the clone goes', async () => {
    const d = newDisk();
    await backend.createFromImage(d, sourceImageFromBytes(patternBytes(MiB, 91)));
    await backend.createSnapshot(d, 'base');
    const vms = await (await adminCluster()).openIoCtx('vms');
    const parent = await vms.open(diskId(d));
    await parent.protectSnapshot('base');
    await parent.close();
    const child = `${randomUUID()}_disk`;
    await vms.clone({ parent: { ioctx: vms, image: diskId(d), snap: 'base' }, dest: { name: child }, cloneFormat: 1 });
    const started = Date.now();
    const err = await expectImageBackendError(backend.remove(d, { busyTimeoutMs: 20_000 }), 'BUSY');
    expect(Date.now() - started).toBeLessThan(5_000); // no pointless retrying
    expect(err.message).toMatch(/clones/);
    expect(await backend.exists(d)).toBe(true);
    await vms.remove(child);
    await vms.close();
    expect(await backend.remove(d)).toBe(true); // unprotects and removes its snapshot first
    expect(await rbdLs('vms')).not.toContain(diskId(d));
  });

  it('also refuses a disk whose unprotected snapshot has format 2 clones, keeping its snapshot', async () => {
    const d = newDisk();
    await backend.createFromImage(d, sourceImageFromBytes(patternBytes(MiB, 93)));
    await backend.createSnapshot(d, 'base');
    const vms = await (await adminCluster()).openIoCtx('vms');
    const child = `${randomUUID()}_disk`;
    await vms.clone({ parent: { ioctx: vms, image: diskId(d), snap: 'base' }, dest: { name: child }, cloneFormat: 2 });
    await expectImageBackendError(backend.remove(d), 'BUSY');
    expect((await backend.listSnapshots(d)).map((s) => s.name)).toEqual(['base']);
    await vms.remove(child);
    await vms.close();
    expect(await backend.remove(d)).toBe(true);
  });

  it('retries removal while another client watches the disk, then gives up with Busy naming the watcher; succeeds once it is closed', async () => {
    const d = newDisk();
    await backend.createBlank(d, 8 * MiB);
    const vms = await (await adminCluster()).openIoCtx('vms');
    const watcher = await vms.open(diskId(d)); // holds a watch, as a running QEMU would
    const [w] = await watcher.watchers();
    const started = Date.now();
    const err = await expectImageBackendError(backend.remove(d, { busyTimeoutMs: 1_500 }), 'BUSY');
    expect(Date.now() - started).toBeGreaterThanOrEqual(1_400);
    // The error names who holds it, and the remedy for a Ceph zombie watch (no such live client).
    expect(err.message).toContain(`client.${w!.id} at ${w!.address}`);
    expect(err.message).toContain('ceph pg repeer');
    expect(err.message).toContain('docs/operations.md');
    expect(await backend.exists(d)).toBe(true);
    setTimeout(() => void watcher.close(), 500);
    expect(await backend.remove(d, { busyTimeoutMs: 20_000 })).toBe(true);
    await vms.close();
  });

  /**
   * Snapshot `snap` of disk `d`, a clone v2 `images/<clone>` of it, the snapshot removed (it moves
   * to the disk's trash namespace while the clone exists): the state a direct snapshot passes
   * through.
   */
  async function trashSnapshotWithClone(d: DiskRef, snap: string, clone: string): Promise<void> {
    const cluster = await adminCluster();
    const vms = await cluster.openIoCtx('vms');
    const images = await cluster.openIoCtx('images');
    try {
      const img = await vms.open(diskId(d));
      try {
        await img.createSnapshot(snap);
        await images.clone({ parent: { ioctx: vms, image: diskId(d), snap }, dest: { name: clone }, cloneFormat: 2 });
        await img.removeSnapshot(snap);
        expect((await img.listSnapshots()).map((s) => [s.namespace, s.originalName])).toEqual([['trash', snap]]);
      } finally {
        await img.close();
      }
    } finally {
      await images.close();
      await vms.close();
    }
  }

  async function allSnapshots(d: DiskRef): Promise<string[]> {
    const vms = await (await adminCluster()).openIoCtx('vms');
    try {
      const img = await vms.open(diskId(d), { readOnly: true });
      try {
        return (await img.listSnapshots()).map((s) => `${s.namespace}:${s.originalName ?? s.name}`);
      } finally {
        await img.close();
      }
    } finally {
      await vms.close();
    }
  }

  it('removes a disk whose trash snapshot has no children left (a kill before librbd purged it); refuses while it has', async () => {
    const d = newDisk();
    await backend.createBlank(d, 8 * MiB);
    const clone = `t-trash-${randomUUID()}`;
    await trashSnapshotWithClone(d, 's', clone);
    // With its clone v2 child: refused at once, naming the child.
    const t0 = performance.now();
    const err = await expectImageBackendError(backend.remove(d, { busyTimeoutMs: 20_000 }), 'BUSY');
    expect(performance.now() - t0).toBeLessThan(5_000);
    expect(err.message).toContain(`images/${clone}`);
    // The clone removed, the trash snapshot not purged: remove() purges it and removes the disk.
    await removeCloneKeepingTrashSnapshot('images', clone, 'vms');
    expect(await allSnapshots(d)).toEqual(['trash:s']);
    expect(await backend.remove(d)).toBe(true);
    expect(await rbdLs('vms')).not.toContain(diskId(d));
  });

  it('removeDirectSnapshot purges the temporary snapshot left in the trash namespace without children', async () => {
    const b = await adminDirectSnapshotBackend();
    const d = newDisk();
    await b.createBlank(d, 8 * MiB);
    const imageId = randomUUID();
    // A direct snapshot killed after dropping its temporary snapshot (moved to the trash: the
    // clone existed) and after its rollback removed the clone, before librbd purged the snapshot.
    await trashSnapshotWithClone(d, `ephemera-direct-${imageId}`, imageId);
    await removeCloneKeepingTrashSnapshot('images', imageId, 'vms');
    expect(await allSnapshots(d)).toEqual([`trash:ephemera-direct-${imageId}`]);
    expect(await b.removeDirectSnapshot(d, { imageId })).toBe(true);
    expect(await allSnapshots(d)).toEqual([]);
    expect(await b.removeDirectSnapshot(d, { imageId })).toBe(false);
  });

  it('orphaned removeDirectSnapshot waits, bounded, for a temporary snapshot still being created by the lock owner', async () => {
    const b = await adminDirectSnapshotBackend();
    const d = newDisk();
    await b.createBlank(d, 8 * MiB);
    const imageId = randomUUID();
    const tmpSnap = `ephemera-direct-${imageId}`;
    // Another client holds the disk's exclusive lock (as a running QEMU does after a write): a
    // killed driver's snapshot creation was forwarded to it, and it completes it 1.5 s later.
    const vms = await (await adminCluster()).openIoCtx('vms');
    const owner = await vms.open(diskId(d));
    try {
      await owner.write(0, Buffer.alloc(4096, 1));
      const probe = await vms.open(diskId(d), { readOnly: true }); // a fresh handle reads the lock state
      expect((await probe.lockers()).lockers).toHaveLength(1);
      await probe.close();
      let t0 = performance.now();
      const late = new Promise<void>((r) => setTimeout(r, 1_500)).then(() => owner.createSnapshot(tmpSnap));
      expect(await b.removeDirectSnapshot(d, { imageId, orphaned: true })).toBe(true);
      await late;
      const took = performance.now() - t0;
      expect(took).toBeGreaterThanOrEqual(1_400);
      expect(took).toBeLessThan(7_000);
      expect(await allSnapshots(d)).toEqual([]);
      // Nothing in flight, the lock held by another client: the whole bound (7 s), no more.
      t0 = performance.now();
      expect(await b.removeDirectSnapshot(d, { imageId, orphaned: true })).toBe(false);
      expect(performance.now() - t0).toBeGreaterThanOrEqual(6_900);
      expect(performance.now() - t0).toBeLessThan(10_000);
    } finally {
      await owner.close();
      await vms.close();
    }
    // No lock owner: only the killed client's own requests could still land (5 s).
    let t1 = performance.now();
    expect(await b.removeDirectSnapshot(d, { imageId, orphaned: true })).toBe(false);
    expect(performance.now() - t1).toBeGreaterThanOrEqual(4_900);
    expect(performance.now() - t1).toBeLessThan(6_900);
    // Not orphaned (a live caller's rollback): no wait.
    t1 = performance.now();
    expect(await b.removeDirectSnapshot(d, { imageId })).toBe(false);
    expect(performance.now() - t1).toBeLessThan(900);
  });

  it('removes a half-removed disk (directory entry without header, as a kill inside rbd_remove leaves it)', async () => {
    const d = newDisk();
    await backend.createBlank(d, 8 * MiB);
    const info = JSON.parse(await cephCli('admin', ['rbd', 'info', `vms/${diskId(d)}`, '--format', 'json'])) as {
      id: string;
    };
    await cephCli('admin', ['rados', '-p', 'vms', 'rm', `rbd_header.${info.id}`]);
    expect(await rbdLs('vms')).toContain(diskId(d));
    expect(await backend.exists(d)).toBe(false); // cannot be opened
    expect(await backend.remove(d)).toBe(true);
    expect(await rbdLs('vms')).not.toContain(diskId(d));
    expect(await backend.remove(d)).toBe(false); // idempotent: nothing left
  });

  it('rollback refuses while another client has the disk open (Busy)', async () => {
    const d = newDisk();
    await backend.createFromImage(d, sourceImageFromBytes(patternBytes(MiB, 92)));
    await backend.createSnapshot(d, 's');
    const vms = await (await adminCluster()).openIoCtx('vms');
    const watcher = await vms.open(diskId(d));
    await expectImageBackendError(backend.rollbackToSnapshot(d, 's'), 'BUSY');
    await watcher.close();
    await vms.close();
    await backend.rollbackToSnapshot(d, 's');
  });

  it('checkAvailable() resolves at once while a monitor answers (monitor stopped: e2e/reliability/storage-faults.test.ts)', async () => {
    const t0 = performance.now();
    await backend.checkAvailable();
    expect(performance.now() - t0).toBeLessThan(1_000);
  });

  it('describes the disk as a network rbd source with every monitor and the libvirt secret', async () => {
    const d = newDisk();
    await backend.createBlank(d, 8 * MiB);
    const s = stack();
    expect(await backend.diskSource(d)).toEqual({
      type: 'network',
      protocol: 'rbd',
      name: `vms/${diskId(d)}`,
      hosts: s.ceph.monitors,
      auth: { username: 'ephemera', secretUuid: s.libvirt.cephSecretUuid },
      format: 'raw',
    });
  });
});
