import { describe, expect, it } from 'vitest';
import {
  AbortedError,
  BusyError,
  ImageBackendError,
  InvalidArgumentError,
  MemoryBackend,
  NotFoundError,
  type ProgressEvent,
  ProgressReporter,
  UnsafeImageError,
  UnsupportedOperationError,
  diskId,
  isImageBackendError,
  listFilterPrefix,
  parseDiskId,
  patternBytes,
  readImage,
  retryWhileBusy,
  sourceImageFromBytes,
  sourceImageFromFile,
} from '@ephemera/image-backend';
import { createHash } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const INSTANCE = '0b6e2d3c-1f6a-4f9e-9a57-3c2f2a7e9d10';

describe('disk ids', () => {
  it('are <instance>_<name>, lower-cased instance, and parse back', () => {
    expect(diskId({ instance: INSTANCE.toUpperCase(), name: 'disk.local' })).toBe(`${INSTANCE}_disk.local`);
    expect(parseDiskId(`${INSTANCE}_disk.swap`)).toEqual({ instance: INSTANCE, name: 'disk.swap' });
  });

  it('parseDiskId ignores foreign names', () => {
    for (const id of [
      '',
      'volume-1',
      `${INSTANCE}disk`,
      `${INSTANCE}_`,
      `${INSTANCE}_a/b`,
      `${INSTANCE.toUpperCase()}_disk`,
    ]) {
      expect(parseDiskId(id), id).toBeUndefined();
    }
  });

  it('listFilterPrefix: every disk, or the lower-cased `<instance>_` prefix; a bad instance is InvalidArgument naming the backend', () => {
    expect(listFilterPrefix({})).toBeUndefined();
    expect(listFilterPrefix({ instance: INSTANCE.toUpperCase() })).toBe(`${INSTANCE}_`);
    expect(
      diskId({ instance: INSTANCE, name: 'disk' }).startsWith(listFilterPrefix({ instance: INSTANCE }, 'x')!),
    ).toBe(true);
    for (const bad of ['', 'x', `${INSTANCE}_disk`, '../../etc', 42 as never]) {
      let err: unknown;
      try {
        listFilterPrefix({ instance: bad }, 'lvm');
      } catch (e) {
        err = e;
      }
      expect(isImageBackendError(err, 'INVALID_ARGUMENT'), String(bad)).toBe(true);
      expect((err as InvalidArgumentError).argument).toBe('filter.instance');
      expect((err as InvalidArgumentError).backend).toBe('lvm');
    }
  });

  it('diskId rejects bad refs with InvalidArgumentError naming the argument', () => {
    expect(() => diskId({ instance: 'x', name: 'disk' })).toThrow(InvalidArgumentError);
    expect(() => diskId({ instance: INSTANCE, name: 'a b' })).toThrow(/^disk\.name: invalid disk name "a b"/);
    expect(() => diskId(null as never)).toThrow(/^disk: expected/);
  });
});

describe('errors', () => {
  it('carry stable codes and are recognised across copies by isImageBackendError', () => {
    const e = new UnsupportedOperationError('snapshot', 'createSnapshot', { backend: 'lvm' });
    expect(e).toBeInstanceOf(ImageBackendError);
    expect(e.name).toBe('UnsupportedOperationError');
    expect(e.code).toBe('UNSUPPORTED_OPERATION');
    expect(e.message).toBe("createSnapshot: backend 'lvm' does not support 'snapshot'");
    expect(isImageBackendError(e, 'UNSUPPORTED_OPERATION')).toBe(true);
    expect(isImageBackendError(e, 'BUSY')).toBe(false);
    // An error from another copy of the package: same shape, other class identity.
    const foreign = Object.assign(new Error('gone'), { code: 'NOT_FOUND' });
    expect(isImageBackendError(foreign, 'NOT_FOUND')).toBe(true);
    expect(isImageBackendError(Object.assign(new Error('x'), { code: 'ENOENT' }))).toBe(false);
    expect(isImageBackendError('NOT_FOUND')).toBe(false);
    const cause = new Error('rbd: -2');
    expect(new NotFoundError('no', { cause, diskId: 'd' }).cause).toBe(cause);
  });
});

describe('retryWhileBusy', () => {
  it('retries busy failures until success', async () => {
    let n = 0;
    const v = await retryWhileBusy(
      async () => {
        if (++n < 3) throw new BusyError('busy');
        return 'ok';
      },
      { intervalMs: 1 },
    );
    expect([v, n]).toEqual(['ok', 3]);
  });

  it('rethrows BusyError after the timeout and other errors at once', async () => {
    const t0 = Date.now();
    await expect(
      retryWhileBusy(
        async () => {
          throw new BusyError('still busy');
        },
        { timeoutMs: 60, intervalMs: 5 },
      ),
    ).rejects.toThrow('still busy');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(55);
    let n = 0;
    await expect(
      retryWhileBusy(async () => {
        n++;
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    expect(n).toBe(1);
  });

  it('stops waiting when aborted', async () => {
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 20);
    await expect(
      retryWhileBusy(
        async () => {
          throw new BusyError('b');
        },
        { timeoutMs: 10_000, intervalMs: 1_000, signal: ac.signal },
      ),
    ).rejects.toBeInstanceOf(AbortedError);
  });
});

describe('MemoryBackend remove while busy', () => {
  it('retries while busy, then removes', async () => {
    const b = new MemoryBackend();
    const disk = { instance: INSTANCE, name: 'disk' };
    await b.createBlank(disk, 4096);
    b.setBusy(disk, 3);
    expect(await b.remove(disk)).toBe(true);
    expect(await b.exists(disk)).toBe(false);
  });

  it('gives up with BusyError after busyTimeoutMs and keeps the disk', async () => {
    const b = new MemoryBackend();
    const disk = { instance: INSTANCE, name: 'disk' };
    await b.createBlank(disk, 4096);
    b.setBusy(disk);
    await expect(b.remove(disk, { busyTimeoutMs: 50 })).rejects.toBeInstanceOf(BusyError);
    expect(await b.exists(disk)).toBe(true);
    b.setBusy(disk, 0);
    expect(await b.remove(disk)).toBe(true);
  });

  it('a directSnapshot location is cloneable by the same backend', async () => {
    const b = new MemoryBackend();
    const disk = { instance: INSTANCE, name: 'disk' };
    const bytes = patternBytes(10_000, 7);
    await b.createFromImage(disk, sourceImageFromBytes(bytes));
    const loc = await b.directSnapshot(disk, { imageId: 'snap-image' });
    const res = await b.createFromImage(
      { instance: INSTANCE, name: 'disk.copy' },
      sourceImageFromBytes(bytes, { locations: [{ url: loc.url, metadata: {} }] }),
    );
    expect(res.method).toBe('cloned');
    expect(await b.read({ instance: INSTANCE, name: 'disk.copy' }, 0, 10_000)).toEqual(bytes);
  });
});

describe('ProgressReporter', () => {
  it('is monotonic, caps at 99 until finish, finishes once at 100, survives a throwing listener', () => {
    const events: ProgressEvent[] = [];
    const p = new ProgressReporter((e) => {
      events.push(e);
      if (events.length === 2) throw new Error('listener bug');
    });
    p.report('download', 50, 100);
    p.report('convert', 10, 100); // would go back: held at 50
    p.report('download', 100, 100);
    p.finish(100, 100);
    p.finish(100, 100);
    expect(events.map((e) => e.percent)).toEqual([50, 50, 99, 100]);
    expect(events.at(-1)!.phase).toBe('done');
    new ProgressReporter(undefined).report('download', 1, 2); // no listener: no-op
  });
});

describe('readImage', () => {
  async function drain(it: AsyncIterable<Uint8Array>): Promise<number> {
    let n = 0;
    for await (const c of it) n += c.length;
    return n;
  }

  it('streams and verifies the declared sha512', async () => {
    const bytes = patternBytes(200_000);
    const events: ProgressEvent[] = [];
    expect(
      await drain(readImage(sourceImageFromBytes(bytes), { progress: new ProgressReporter((e) => events.push(e)) })),
    ).toBe(200_000);
    expect(events.length).toBeGreaterThan(1);
  });

  it('reads a web ReadableStream too', async () => {
    const bytes = patternBytes(1000);
    const img = { ...sourceImageFromBytes(bytes), open: async () => new Blob([bytes]).stream() };
    expect(await drain(readImage(img))).toBe(1000);
  });

  it('verifies the multihash when one is declared, else the md5 checksum', async () => {
    const bytes = patternBytes(50_000);
    const good = sourceImageFromBytes(bytes);
    const wrongMd5 = 'f'.repeat(32);
    // A multihash is declared: a stale md5 is not read (glanceclient and Nova do the same).
    expect(await drain(readImage({ ...good, checksum: wrongMd5 }))).toBe(50_000);
    // None declared: the md5 is checked.
    const md5Only = { ...good, osHashAlgo: null, osHashValue: null };
    expect(await drain(readImage(md5Only))).toBe(50_000);
    const err = await drain(readImage({ ...md5Only, checksum: wrongMd5 })).catch((e) => e);
    expect((err as UnsafeImageError).reason).toBe('checksum-mismatch');
    expect((err as Error).message).toMatch(/checksum \(md5\) mismatch/);
    // A multihash that does not match fails whatever the md5 says.
    const badSha = await drain(readImage({ ...good, osHashValue: 'a'.repeat(128) })).catch((e) => e);
    expect((badSha as UnsafeImageError).reason).toBe('checksum-mismatch');
  });

  it('refuses a hash mismatch with UnsafeImageError(checksum-mismatch)', async () => {
    const err = await drain(readImage(sourceImageFromBytes(patternBytes(1000), { corruptHash: true }))).catch((e) => e);
    expect(err).toBeInstanceOf(UnsafeImageError);
    expect((err as UnsafeImageError).reason).toBe('checksum-mismatch');
  });

  it("reads a source with a reader in place, into the caller's buffers, verified, and closes it", async () => {
    const dir = await mkdtemp(join(tmpdir(), 'eph-read-into-'));
    try {
      const bytes = patternBytes(10 * 4096 + 123, 5);
      const path = join(dir, 'image.raw');
      await writeFile(path, bytes);
      const sha = createHash('sha512').update(bytes).digest('hex');
      const img = await sourceImageFromFile(path, { osHashAlgo: 'sha512', osHashValue: sha });
      expect(img.size).toBe(bytes.length);
      // Two buffers handed out in turn, as a pool whose blocks come back after their write.
      const bufs = [new Uint8Array(4096), new Uint8Array(4096)];
      let turn = 0;
      const into = () => bufs[turn++ % 2]!;
      const seen: Uint8Array[] = [];
      const copies: Uint8Array[] = [];
      for await (const c of readImage(img, { into })) {
        seen.push(c);
        copies.push(Uint8Array.from(c));
      }
      expect(Buffer.concat(copies).equals(Buffer.from(bytes))).toBe(true);
      // Every chunk is the caller's memory (the last a shorter view of it): no buffer of the source's.
      expect(seen.every((c) => c.buffer === bufs[0]!.buffer || c.buffer === bufs[1]!.buffer)).toBe(true);
      expect(seen.map((c) => c.length)).toEqual([...Array(10).fill(4096), 123]);
      // The hash is checked on this path too; without `into` the same source streams.
      const lying = await sourceImageFromFile(path, { osHashAlgo: 'sha512', osHashValue: 'a'.repeat(128) });
      const err = await drain(readImage(lying, { into })).catch((e) => e);
      expect((err as UnsafeImageError).reason).toBe('checksum-mismatch');
      expect(await drain(readImage(img))).toBe(bytes.length);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('closes a reader when the read stops early, even before the first chunk', async () => {
    let closes = 0;
    let onOpen = (): void => undefined;
    const bytes = patternBytes(3 * 4096);
    const img = {
      ...sourceImageFromBytes(bytes, { noHash: true }),
      openReader: async () => {
        onOpen();
        let at = 0;
        return {
          read: async (t: Uint8Array) => {
            const n = Math.min(t.length, bytes.length - at);
            t.set(bytes.subarray(at, at + n));
            at += n;
            return n;
          },
          close: async () => {
            closes++;
          },
        };
      },
    };
    const into = () => new Uint8Array(4096);
    // Stopped after one chunk.
    for await (const _ of readImage(img, { into })) break;
    expect(closes).toBe(1);
    // Aborted once the reader is open, before the first chunk.
    const ac = new AbortController();
    onOpen = () => ac.abort();
    await expect(drain(readImage(img, { into, signal: ac.signal }))).rejects.toBeInstanceOf(AbortedError);
    expect(closes).toBe(2);
    onOpen = () => undefined;
    // Read to the end.
    expect(await drain(readImage(img, { into }))).toBe(bytes.length);
    expect(closes).toBe(3);
  });

  it('refuses an unknown hash algorithm', async () => {
    const img = { ...sourceImageFromBytes(patternBytes(10)), osHashAlgo: 'crc0' };
    await expect(drain(readImage(img))).rejects.toThrow(/unsupported os_hash_algo 'crc0'/);
  });

  it('wraps open and read failures in ImageSourceError, and catches too much data', async () => {
    const failOpen = {
      ...sourceImageFromBytes(patternBytes(10)),
      open: async () => {
        throw new Error('http 500');
      },
    };
    await expect(drain(readImage(failOpen))).rejects.toMatchObject({
      code: 'IMAGE_SOURCE',
      message: expect.stringContaining('http 500'),
    });
    const mid = sourceImageFromBytes(patternBytes(300_000), { failAfterBytes: 100_000 });
    await expect(drain(readImage(mid))).rejects.toMatchObject({
      code: 'IMAGE_SOURCE',
      message: expect.stringContaining('after 131072 bytes'),
    });
    const big = { ...sourceImageFromBytes(patternBytes(1000), { noHash: true }), size: 10 };
    await expect(drain(readImage(big))).rejects.toThrow(/more data than its size/);
  });

  it('aborts with AbortedError', async () => {
    const ac = new AbortController();
    const img = sourceImageFromBytes(patternBytes(300_000), {
      onChunk: (n) => {
        if (n > 0) ac.abort();
      },
    });
    await expect(drain(readImage(img, { signal: ac.signal }))).rejects.toBeInstanceOf(AbortedError);
  });
});
