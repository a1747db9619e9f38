// Qcow2Backend beyond the conformance suite, on the local filesystem with the real qemu-img and
// qemu-io: the _base cache (naming, conversion, inspector, single flight, aborts, locks,
// clean-up), overlays, snapshots, flatten, busy disks, thick mode.
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdir, open, readdir, readFile, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import lockfile from 'proper-lockfile';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  expectImageBackendError,
  patternBytes,
  sourceImageFromBytes,
  type DiskRef,
  type ProgressEvent,
  type UnsafeImageError,
} from '@ephemera/image-backend';
import { Qcow2Backend } from '../../src/index.js';
import { baseKey } from '../../src/base-cache.js';
import { readQcow2Header } from '../../src/qcow2-header.js';
import { createFixture, exec, qemuInfo, type Fixture } from '../support/fixture.js';
import { countingSource, qcow2Of, qemuImageBytes, writePattern } from '../support/images.js';

const MiB = 1024 * 1024;
let fx: Fixture;

beforeAll(async () => {
  fx = await createFixture({ lockStaleMs: 2_000 });
});
afterAll(async () => {
  await fx?.destroy();
});

const newDisk = (name = 'disk'): DiskRef => ({ instance: randomUUID(), name });
const baseNames = async (): Promise<string[]> => (await readdir(fx.backend.baseDir)).sort();
const instanceEntries = async (): Promise<string[]> =>
  (await readdir(fx.backend.instancesDir)).filter((n) => n !== '_base');

async function assertNoLeftovers(): Promise<void> {
  expect((await baseNames()).filter((n) => n.startsWith('.tmp-') || n.endsWith('.lock'))).toEqual([]);
  expect((await instanceEntries()).filter((n) => n.startsWith('.'))).toEqual([]);
}

describe('image cache and overlays', () => {
  it('caches a raw image once as _base/<sha1(image id)> and makes qcow2 overlays with backing format raw', async () => {
    const bytes = patternBytes(2 * MiB, 11);
    const img = countingSource(bytes);
    const d1 = newDisk();
    const d2 = newDisk();
    const r1 = await fx.backend.createFromImage(d1, img);
    const r2 = await fx.backend.createFromImage(d2, img, { sizeBytes: 8 * MiB });
    expect(r1.method).toBe('imported');
    expect(r1.reason).toMatch(/overlay/);
    expect(r1.bytesWritten).toBe(bytes.length);
    expect(r2.method).toBe('cloned');
    expect(r2.sizeBytes).toBe(8 * MiB);
    expect(img.opens()).toBe(1);

    const basePath = join(fx.backend.baseDir, baseKey(img.id));
    expect((await stat(basePath)).size).toBe(bytes.length);
    expect(await fx.backend.cachedBase(img.id)).toEqual({
      key: baseKey(img.id),
      path: basePath,
      format: 'raw',
      virtualSize: bytes.length,
    });

    const src = await fx.backend.diskSource(d1);
    expect(src).toEqual({
      type: 'file',
      path: join(fx.backend.instancesDir, `${d1.instance}_disk`, 'disk.qcow2'),
      format: 'qcow2',
    });
    // qemu-img itself sees the explicit backing format and the base as the whole chain.
    const [top, below] = await qemuInfo(src.path, 'qcow2', true);
    expect(top!['backing-filename-format']).toBe('raw');
    expect(top!['full-backing-filename']).toBe(basePath);
    expect(below!['format']).toBe('raw');
    expect((await fx.backend.info(d1)).parent).toBe(basePath);
    expect((await fx.backend.info(d2)).sizeBytes).toBe(8 * MiB);

    expect(Buffer.compare(Buffer.from(await fx.read(d2, bytes.length)), Buffer.from(bytes))).toBe(0);
    // The grown tail reads as zeros.
    expect(Buffer.from(await fx.read(d2, 4096, 6 * MiB)).every((b) => b === 0)).toBe(true);
    // Writes go to the overlay, never to the shared base.
    await writePattern(src.path, 'qcow2', 0x5a, 0, 65536);
    expect(Buffer.from(await fx.read(d1, 65536)).every((b) => b === 0x5a)).toBe(true);
    expect(Buffer.compare(Buffer.from(await fx.read(d2, 65536)), Buffer.from(bytes.subarray(0, 65536)))).toBe(0);
    await assertNoLeftovers();
  });

  it('converts a qcow2 image into a raw base once (forceRaw), reporting download and convert progress', async () => {
    const raw = patternBytes(3 * MiB, 12);
    const q = await qcow2Of(fx.root, raw);
    const img = countingSource(q, { diskFormat: 'qcow2', virtualSize: raw.length });
    const events: ProgressEvent[] = [];
    const d = newDisk();
    const res = await fx.backend.createFromImage(d, img, { onProgress: (e) => events.push(e) });
    expect(res.method).toBe('imported');
    expect(res.reason).toMatch(/raw base/);
    const phases = [...new Set(events.map((e) => e.phase))];
    expect(phases).toEqual(['download', 'convert', 'clone', 'done']);
    expect(events.at(-1)!.percent).toBe(100);
    for (let i = 1; i < events.length; i++) expect(events[i]!.percent).toBeGreaterThanOrEqual(events[i - 1]!.percent);

    const key = baseKey(img.id);
    expect((await baseNames()).filter((n) => n.startsWith(key))).toEqual([key]);
    const base = await fx.backend.cachedBase(img.id);
    expect(base).toMatchObject({ format: 'raw', virtualSize: raw.length });
    const [top] = await qemuInfo((await fx.backend.diskSource(d)).path, 'qcow2');
    expect(top!['backing-filename-format']).toBe('raw');
    expect(Buffer.compare(Buffer.from(await fx.read(d, raw.length)), Buffer.from(raw))).toBe(0);
    await assertNoLeftovers();
  });

  it('keeps a qcow2 image as a qcow2 base when forceRaw is off (overlay -F qcow2)', async () => {
    const own = await createFixture({ forceRaw: false });
    try {
      const raw = patternBytes(MiB, 13);
      const img = countingSource(await qcow2Of(own.root, raw), { diskFormat: 'qcow2', virtualSize: raw.length });
      const d = newDisk();
      await own.backend.createFromImage(d, img);
      const base = (await own.backend.cachedBase(img.id))!;
      expect(base.format).toBe('qcow2');
      expect(base.path).toBe(join(own.backend.baseDir, `${baseKey(img.id)}.qcow2`));
      const [top, below] = await qemuInfo((await own.backend.diskSource(d)).path, 'qcow2', true);
      expect(top!['backing-filename-format']).toBe('qcow2');
      expect(below!['format']).toBe('qcow2');
      expect(Buffer.compare(Buffer.from(await own.read(d, raw.length)), Buffer.from(raw))).toBe(0);
    } finally {
      await own.destroy();
    }
  });

  it('refuses unsafe images before qemu-img sees them and leaves no base, temp file or disk', async () => {
    const cases: { bytes: Uint8Array; diskFormat: string; reason: string }[] = [
      {
        bytes: await qemuImageBytes(fx.root, 'qcow2', ['-u', '-b', '/etc/passwd', '-F', 'raw', '@', '1M']),
        diskFormat: 'qcow2',
        reason: 'backing-file',
      },
      {
        bytes: await qemuImageBytes(fx.root, 'qcow2', ['-o', `data_file=${join(fx.root, 'data-file.raw')}`, '@', '1M']),
        diskFormat: 'qcow2',
        reason: 'data-file',
      },
      { bytes: await qemuImageBytes(fx.root, 'qcow2', ['@', '1M']), diskFormat: 'raw', reason: 'format-mismatch' },
      { bytes: patternBytes(MiB, 14), diskFormat: 'qcow2', reason: 'format-mismatch' },
    ];
    const before = await baseNames();
    for (const c of cases) {
      const d = newDisk();
      const err = (await expectImageBackendError(
        fx.backend.createFromImage(d, sourceImageFromBytes(c.bytes, { diskFormat: c.diskFormat })),
        'UNSAFE_IMAGE',
      )) as UnsafeImageError;
      expect(err.reason, err.message).toBe(c.reason);
      expect(await fx.backend.exists(d)).toBe(false);
      expect(await fx.backend.list({ instance: d.instance })).toEqual([]);
    }
    await expectImageBackendError(
      fx.backend.createFromImage(newDisk(), sourceImageFromBytes(patternBytes(4096), { diskFormat: 'ploop' })),
      'INVALID_ARGUMENT',
    );
    expect(await baseNames()).toEqual(before);
    await assertNoLeftovers();
  });

  it('refuses an empty image, a sub-sector raw image and a vmdk naming a host file; leaves nothing', async () => {
    const vmdk = await qemuImageBytes(fx.root, 'vmdk', ['@', '1M']);
    const ext = Buffer.from(vmdk).indexOf(Buffer.from('SPARSE "'));
    expect(ext).toBeGreaterThan(0);
    const name = Buffer.from(vmdk).subarray(ext + 8, Buffer.from(vmdk).indexOf('"', ext + 8));
    // Same length as qemu-img's own name: the descriptor keeps its size.
    const hostile = '/etc/hosts'.padStart(name.length, '/');
    vmdk.set(new TextEncoder().encode(hostile), ext + 8);
    const cases: { bytes: Uint8Array; diskFormat: string; reason: string }[] = [
      { bytes: new Uint8Array(0), diskFormat: 'raw', reason: 'invalid-image-empty' },
      { bytes: new Uint8Array(0), diskFormat: 'qcow2', reason: 'invalid-image-empty' },
      { bytes: new Uint8Array(0), diskFormat: 'vmdk', reason: 'invalid-image-empty' },
      { bytes: patternBytes(100, 3), diskFormat: 'raw', reason: 'invalid-image-empty' },
      { bytes: vmdk, diskFormat: 'vmdk', reason: 'vmdk-extent' },
    ];
    const before = await baseNames();
    for (const c of cases) {
      const d = newDisk();
      const err = (await expectImageBackendError(
        fx.backend.createFromImage(d, sourceImageFromBytes(c.bytes, { diskFormat: c.diskFormat })),
        'UNSAFE_IMAGE',
      )) as UnsafeImageError;
      expect(err.reason, `${c.diskFormat} ${c.bytes.length} bytes: ${err.message}`).toBe(c.reason);
      expect(await fx.backend.exists(d)).toBe(false);
      expect(await fx.backend.list({ instance: d.instance })).toEqual([]);
    }
    expect(await baseNames()).toEqual(before);
    await assertNoLeftovers();
  });

  it('converts vmdk, vhdx and vdi images into raw bases (whatever forceRaw says)', async () => {
    const own = await createFixture({ forceRaw: false });
    try {
      const raw = patternBytes(MiB, 16);
      const rawPath = join(own.root, 'src.raw');
      await writeFile(rawPath, raw);
      for (const [fmt, declared] of [
        ['vmdk', 'vmdk'],
        ['vhdx', 'vhdx'],
        ['vdi', 'vdi'],
      ] as const) {
        const out = join(own.root, `src.${fmt}`);
        await exec('qemu-img', ['convert', '-q', '-f', 'raw', '-O', fmt, rawPath, out], { timeout: 60_000 });
        const img = sourceImageFromBytes(new Uint8Array(await readFile(out)), {
          diskFormat: declared,
          virtualSize: raw.length,
        });
        const d = newDisk();
        expect((await own.backend.createFromImage(d, img)).method).toBe('imported');
        const base = (await own.backend.cachedBase(img.id))!;
        expect(base.format, fmt).toBe('raw');
        expect(base.virtualSize).toBeGreaterThanOrEqual(raw.length);
        expect(Buffer.compare(Buffer.from(await own.read(d, raw.length)), Buffer.from(raw)), fmt).toBe(0);
      }
    } finally {
      await own.destroy();
    }
  });

  it('validates its configuration', () => {
    expect(() => new Qcow2Backend({ instancesDir: 'relative/dir' })).toThrow(/instancesDir/);
    expect(() => new Qcow2Backend({ instancesDir: '/x', baseDir: 'base' })).toThrow(/baseDir/);
    expect(() => new Qcow2Backend({ instancesDir: '/x', clusterSize: 1000 })).toThrow(/clusterSize/);
    expect(() => new Qcow2Backend({ instancesDir: '/x', preallocation: 'lots' as never })).toThrow(/preallocation/);
    const b = new Qcow2Backend({ instancesDir: '/x/' });
    expect([b.instancesDir, b.baseDir, b.forceRaw]).toEqual(['/x', '/x/_base', true]);
  });

  it('refuses a requested size below the image virtual size, leaving nothing', async () => {
    const d = newDisk();
    await expectImageBackendError(
      fx.backend.createFromImage(d, sourceImageFromBytes(patternBytes(2 * MiB, 15)), { sizeBytes: MiB }),
      'INVALID_ARGUMENT',
    );
    expect(await fx.backend.exists(d)).toBe(false);
    await assertNoLeftovers();
  });

  it('never probes a disk format: a raw disk holding a qcow2 header stays raw', async () => {
    const d = newDisk('disk.config');
    await fx.backend.createBlank(d, MiB, { format: 'raw' });
    const src = await fx.backend.diskSource(d);
    // The "guest" writes a qcow2 header naming /etc/passwd as backing file into its raw disk.
    const evil = await qemuImageBytes(fx.root, 'qcow2', ['-u', '-b', '/etc/passwd', '-F', 'raw', '@', '1M']);
    const fh = await open(src.path, 'r+');
    await fh.write(evil.subarray(0, 4096), 0, 4096, 0);
    await fh.close();
    expect(await fx.backend.info(d)).toMatchObject({ format: 'raw', sizeBytes: MiB });
    expect(await fx.backend.diskSource(d)).toEqual({ type: 'file', path: src.path, format: 'raw' });
    expect((await fx.backend.list({ instance: d.instance }))[0]!.format).toBe('raw');
    expect(await fx.backend.referencedBases()).not.toContain('/etc/passwd');
  });
});

describe('single flight in one process', () => {
  it('10 concurrent creates of one image: one source open, one imported, nine cloned', async () => {
    const bytes = patternBytes(4 * MiB, 21);
    const img = countingSource(bytes, { chunkBytes: 128 * 1024, delayMs: 5 });
    const disks = Array.from({ length: 10 }, () => newDisk());
    const progress = disks.map(() => [] as ProgressEvent[]);
    const results = await Promise.all(
      disks.map((d, i) => fx.backend.createFromImage(d, img, { onProgress: (e) => progress[i]!.push(e) })),
    );
    expect(img.opens()).toBe(1);
    expect(results.filter((r) => r.method === 'imported')).toHaveLength(1);
    expect(results.filter((r) => r.method === 'cloned')).toHaveLength(9);
    for (const events of progress) expect(events.at(-1)!.percent).toBe(100);
    // Every waiter saw download progress of the shared fetch.
    for (const events of progress) expect(events.some((e) => e.phase === 'download')).toBe(true);
    const base = join(fx.backend.baseDir, baseKey(img.id));
    for (const d of disks) expect((await fx.backend.info(d)).parent).toBe(base);
    await assertNoLeftovers();
  });

  it('an aborting waiter leaves a shared fetch to the others; when all abort, the fetch is rolled back', async () => {
    const bytes = patternBytes(4 * MiB, 22);
    const img = countingSource(bytes, { chunkBytes: 64 * 1024, delayMs: 5 });
    const ac = new AbortController();
    const a = fx.backend.createFromImage(newDisk(), img, { signal: ac.signal });
    const b = fx.backend.createFromImage(newDisk(), img);
    setTimeout(() => ac.abort(new Error('test')), 60);
    await expectImageBackendError(a, 'ABORTED');
    const rb = await b;
    expect(rb.method).toBe('imported'); // the fetch's credit moved to the caller still waiting
    expect(img.opens()).toBe(1);

    const img2 = countingSource(patternBytes(4 * MiB, 23), { chunkBytes: 64 * 1024, delayMs: 5 });
    const acs = [new AbortController(), new AbortController()];
    // Abort once the shared fetch is under way (a timer alone can fire before it opened the source on a loaded machine).
    const abortAll = () => {
      for (const c of acs) c.abort(new Error('test'));
    };
    const onProgress = (e: ProgressEvent) => {
      if (e.phase === 'download' && img2.opens() === 1) abortAll();
    };
    const both = acs.map((c) => fx.backend.createFromImage(newDisk(), img2, { signal: c.signal, onProgress }));
    for (const p of both) await expectImageBackendError(p, 'ABORTED');
    expect(await fx.backend.cachedBase(img2.id)).toBeUndefined();
    await assertNoLeftovers();
    // Nothing poisoned: the next create fetches again and succeeds.
    expect((await fx.backend.createFromImage(newDisk(), img2)).method).toBe('imported');
    expect(img2.opens()).toBe(2);
  });
});

describe('cross-process lock', () => {
  it('waits while another holder has the image lock, and takes over a stale lock of a dead process', async () => {
    const img = countingSource(patternBytes(MiB, 31));
    const key = baseKey(img.id);
    const release = await lockfile.lock(join(fx.backend.baseDir, key), {
      realpath: false,
      lockfilePath: join(fx.backend.baseDir, `${key}.lock`),
      stale: 10_000,
    });
    let done = false;
    const p = fx.backend.createFromImage(newDisk(), img).finally(() => {
      done = true;
    });
    await new Promise((r) => setTimeout(r, 400));
    expect(done).toBe(false);
    expect(img.opens()).toBe(0);
    await release();
    expect((await p).method).toBe('imported');

    // A lock directory left by a process that died 30 s ago (not refreshed): taken over.
    const img2 = countingSource(patternBytes(MiB, 32));
    const lockDir = join(fx.backend.baseDir, `${baseKey(img2.id)}.lock`);
    await mkdir(lockDir);
    const old = new Date(Date.now() - 30_000);
    await utimes(lockDir, old, old);
    const started = Date.now();
    expect((await fx.backend.createFromImage(newDisk(), img2)).method).toBe('imported');
    expect(Date.now() - started).toBeLessThan(5_000);
    await assertNoLeftovers();
  });
});

describe('snapshots, resize, flatten', () => {
  it('rolls back data and size to an internal snapshot', async () => {
    const bytes = patternBytes(MiB, 41);
    const d = newDisk();
    await fx.backend.createFromImage(d, sourceImageFromBytes(bytes));
    const { path } = await fx.backend.diskSource(d);
    await writePattern(path, 'qcow2', 0xab, 0, 65536);
    const s = await fx.backend.createSnapshot(d, 'before-upgrade');
    expect(s).toEqual({ name: 'before-upgrade', sizeBytes: MiB });
    await writePattern(path, 'qcow2', 0xcd, 0, 65536);
    await fx.backend.resize(d, 4 * MiB);
    await fx.backend.createSnapshot(d, 'grown');
    expect(await fx.backend.listSnapshots(d)).toEqual([
      { name: 'before-upgrade', sizeBytes: MiB },
      { name: 'grown', sizeBytes: 4 * MiB },
    ]);
    await fx.backend.rollbackToSnapshot(d, 'before-upgrade');
    expect((await fx.backend.info(d)).sizeBytes).toBe(MiB);
    expect(Buffer.from(await fx.read(d, 65536)).every((b) => b === 0xab)).toBe(true);
    expect(
      Buffer.compare(Buffer.from(await fx.read(d, 65536, 65536)), Buffer.from(bytes.subarray(65536, 131072))),
    ).toBe(0);
    // Our header reader agrees with qemu-img.
    const [info] = await qemuInfo(path, 'qcow2');
    const names = (info!['snapshots'] as { name: string }[]).map((x) => x.name);
    const header = await readQcow2Header(path);
    expect(header.snapshots.map((x) => x.name)).toEqual(names);
    expect(header.virtualSize).toBe(info!['virtual-size']);
    expect(header.backingFile).toBe(info!['backing-filename']);
    // Raw disks have no internal snapshots.
    const r = newDisk('disk.local');
    await fx.backend.createBlank(r, MiB, { format: 'raw' });
    await expectImageBackendError(fx.backend.createSnapshot(r, 's'), 'INVALID_ARGUMENT');
    expect(await fx.backend.listSnapshots(r)).toEqual([]);
    await fx.backend.resize(r, 2 * MiB);
    expect((await stat((await fx.backend.diskSource(r)).path)).size).toBe(2 * MiB);
  });

  it('flattens an overlay off its base (refused while it has snapshots); the base can then be cleaned up', async () => {
    const bytes = patternBytes(MiB, 42);
    const img = sourceImageFromBytes(bytes);
    const d = newDisk();
    await fx.backend.createFromImage(d, img);
    const base = (await fx.backend.cachedBase(img.id))!;
    await fx.backend.createSnapshot(d, 's');
    await expectImageBackendError(fx.backend.flatten(d), 'INVALID_ARGUMENT');
    expect(await fx.backend.removeSnapshot(d, 's')).toBe(true);
    await fx.backend.flatten(d);
    expect((await fx.backend.info(d)).parent).toBeUndefined();
    const [top] = await qemuInfo((await fx.backend.diskSource(d)).path, 'qcow2');
    expect(top!['backing-filename']).toBeUndefined();
    expect((await fx.backend.referencedBases()).has(base.path)).toBe(false);
    const old = new Date(Date.now() - 120_000);
    await utimes(base.path, old, old);
    const res = await fx.backend.cleanupBases({ olderThanMs: 60_000 });
    expect(res.removed).toContain(base.path);
    expect(Buffer.compare(Buffer.from(await fx.read(d, bytes.length)), Buffer.from(bytes))).toBe(0);
  });
});

describe('cache clean-up', () => {
  it('removes old unreferenced bases and dead temp files; keeps referenced, recent and locked ones', async () => {
    const own = await createFixture({ lockStaleMs: 2_000 });
    try {
      const b = own.backend;
      const mk = (seed: number) => sourceImageFromBytes(patternBytes(256 * 1024, seed));
      const [used, unused, recent, locked] = [mk(51), mk(52), mk(53), mk(54)];
      const d = newDisk();
      await b.createFromImage(d, used);
      for (const i of [unused, recent, locked]) await b.cacheImage(i);
      const path = async (i: { id: string }) => (await b.cachedBase(i.id))!.path;
      const old = new Date(Date.now() - 3_600_000);
      for (const i of [used, unused, locked]) await utimes(await path(i), old, old);
      const deadTemp = join(b.baseDir, `.tmp-${baseKey(randomUUID())}-dead`);
      await writeFile(deadTemp, 'partial');
      await utimes(deadTemp, old, old);
      const lockedKey = baseKey(locked.id);
      const release = await lockfile.lock(join(b.baseDir, lockedKey), {
        realpath: false,
        lockfilePath: join(b.baseDir, `${lockedKey}.lock`),
      });
      let res;
      try {
        res = await b.cleanupBases({ olderThanMs: 60_000 });
      } finally {
        await release();
      }
      expect(res.removed.sort()).toEqual([join(b.baseDir, baseKey(unused.id)), deadTemp].sort());
      expect(await b.cachedBase(unused.id)).toBeUndefined();
      const kept = Object.fromEntries(await Promise.all(res.kept.map(async (k) => [k.path, k.reason] as const)));
      expect(kept).toEqual({
        [await path(used)]: 'in-use',
        [await path(recent)]: 'recent',
        [await path(locked)]: 'locked',
      });
      // Once the disk is gone its base goes too (age permitting); the rest follows with age 0.
      expect(await b.remove(d)).toBe(true);
      await utimes(await path(used), old, old);
      expect((await b.cleanupBases({ olderThanMs: 60_000 })).removed).toContain(join(b.baseDir, baseKey(used.id)));
      await b.cleanupBases({ olderThanMs: 0 });
      expect(await readdir(b.baseDir)).toEqual([]);
    } finally {
      await own.destroy();
    }
  });
});

describe('busy disks and thick mode', () => {
  it('remove retries while another process holds the disk open, then BusyError; removes once it closed', async () => {
    const d = newDisk();
    await fx.backend.createBlank(d, MiB);
    const { path } = await fx.backend.diskSource(d);
    const fh = await open(path, 'r');
    const child = spawn('sleep', ['60'], { stdio: ['ignore', 'ignore', 'ignore', fh.fd] });
    await fh.close();
    try {
      const started = Date.now();
      await expectImageBackendError(fx.backend.remove(d, { busyTimeoutMs: 500 }), 'BUSY');
      expect(Date.now() - started).toBeGreaterThanOrEqual(400);
      expect(await fx.backend.exists(d)).toBe(true);
    } finally {
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
    }
    expect(await fx.backend.remove(d)).toBe(true);
    expect(await fx.backend.exists(d)).toBe(false);
  });

  it('a disk open read-write by a QEMU process (qemu-io) is Busy for resize, snapshots and remove', async () => {
    const d = newDisk();
    await fx.backend.createFromImage(d, sourceImageFromBytes(patternBytes(MiB, 71)));
    const { path } = await fx.backend.diskSource(d);
    // qemu-io keeps the image open (and its qemu image lock taken) while it waits on stdin.
    const holder = spawn('qemu-io', ['-f', 'qcow2', path], { stdio: ['pipe', 'pipe', 'pipe'] });
    try {
      await new Promise<void>((resolve, reject) => {
        holder.stdout.once('data', () => resolve());
        holder.once('exit', (c) => reject(new Error(`qemu-io exited ${c}`)));
      });
      await expectImageBackendError(fx.backend.resize(d, 4 * MiB), 'BUSY');
      await expectImageBackendError(fx.backend.createSnapshot(d, 's1'), 'BUSY');
      await expectImageBackendError(fx.backend.remove(d, { busyTimeoutMs: 200 }), 'BUSY');
      expect((await fx.backend.info(d)).sizeBytes).toBe(MiB);
    } finally {
      holder.stdin.end('quit\n');
      await new Promise((r) => (holder.exitCode !== null ? r(null) : holder.once('exit', r)));
    }
    await fx.backend.resize(d, 4 * MiB);
    expect(await fx.backend.listSnapshots(d)).toEqual([]);
    expect(await fx.backend.remove(d)).toBe(true);
  });

  it('with falloc preallocation it is thick: allocates blank disks fully and refuses what does not fit', async () => {
    const own = await createFixture({ preallocation: 'falloc' });
    try {
      expect(own.backend.capabilities.thin).toBe(false);
      const d = newDisk('disk.swap');
      await own.backend.createBlank(d, 8 * MiB, { format: 'raw' });
      const st = await stat((await own.backend.diskSource(d)).path);
      expect(st.blocks * 512).toBeGreaterThanOrEqual(8 * MiB);
      const big = newDisk('disk.local');
      const { freeBytes } = await own.backend.capacity();
      await expectImageBackendError(own.backend.createBlank(big, freeBytes + 1024 ** 3), 'INSUFFICIENT_CAPACITY');
      expect(await own.backend.exists(big)).toBe(false);
    } finally {
      await own.destroy();
    }
  });
});
