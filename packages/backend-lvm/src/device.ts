import { open } from 'node:fs/promises';
import { run } from './exec.js';

const CHUNK = 4 * 1024 * 1024;

/** How a disk's data is destroyed when it is removed. */
export type WipeMethod = 'zero' | 'none';

export interface ZeroOptions {
  /**
   * `ioctl`: `blkdiscard --zeroout` (BLKZEROOUT, cheap on loop devices over sparse files), falling
   * back to writes when it fails; `write`: write zero chunks through the device.
   */
  via?: 'ioctl' | 'write';
  /** Start at this byte offset (default 0). */
  offset?: number;
  signal?: AbortSignal;
  /** Called with bytes zeroed so far. */
  onProgress?: (done: number, total: number) => void;
}

/** Size of a block device in bytes. */
export async function deviceSize(device: string): Promise<number> {
  // fstat reports 0 for block devices.
  const { stdout } = await run('blockdev', ['--getsize64', device], { timeoutMs: 10_000 });
  return Number(stdout.trim());
}

/** Overwrites `bytes` bytes of `device` from `offset` (default: all of it) with zeros, then syncs. */
export async function zeroDevice(device: string, bytes: number | undefined, options: ZeroOptions = {}): Promise<void> {
  const start = options.offset ?? 0;
  const end = bytes === undefined ? await deviceSize(device) : start + bytes;
  if (end <= start) return;
  const total = end - start;
  if ((options.via ?? 'ioctl') === 'ioctl') {
    // BLKZEROOUT wants sector-aligned ranges: write the unaligned head and tail by hand.
    const alignedStart = Math.min(end, Math.ceil(start / 4096) * 4096);
    const alignedEnd = Math.max(alignedStart, Math.floor(end / 4096) * 4096);
    try {
      if (alignedEnd > alignedStart) {
        await run(
          'blkdiscard',
          [
            '--zeroout',
            '--force',
            '--offset',
            String(alignedStart),
            '--length',
            String(alignedEnd - alignedStart),
            device,
          ],
          { timeoutMs: 600_000, signal: options.signal },
        );
      }
      if (alignedStart > start) await writeZeros(device, start, alignedStart - start, options);
      if (end > alignedEnd) await writeZeros(device, alignedEnd, end - alignedEnd, options);
      options.onProgress?.(total, total);
      return;
    } catch {
      options.signal?.throwIfAborted();
      // fall back to plain writes
    }
  }
  await writeZeros(device, start, total, options);
}

async function writeZeros(device: string, start: number, total: number, options: ZeroOptions): Promise<void> {
  const zeros = Buffer.alloc(Math.min(CHUNK, total));
  const fh = await open(device, 'r+');
  try {
    let done = 0;
    while (done < total) {
      options.signal?.throwIfAborted();
      const n = Math.min(CHUNK, total - done);
      await fh.write(zeros, 0, n, start + done);
      done += n;
      options.onProgress?.(done, total);
    }
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Flushes a block device's dirty pages (fsync on the device node). */
export async function syncDevice(device: string): Promise<void> {
  const fh = await open(device, 'r+');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Streams `source` onto `device` from offset 0 (raw data), honouring `signal`; returns bytes
 * written. Fails when the data is larger than `limit`.
 */
export async function writeStreamToDevice(
  device: string,
  source: AsyncIterable<Uint8Array>,
  limit: number,
  options: { signal?: AbortSignal; onProgress?: (done: number) => void } = {},
): Promise<number> {
  const fh = await open(device, 'r+');
  let pos = 0;
  try {
    for await (const chunk of source) {
      options.signal?.throwIfAborted();
      if (pos + chunk.byteLength > limit) throw new RangeError(`image data exceeds the disk size (${limit} bytes)`);
      let off = 0;
      while (off < chunk.byteLength) {
        const { bytesWritten } = await fh.write(chunk, off, chunk.byteLength - off, pos);
        off += bytesWritten;
        pos += bytesWritten;
      }
      options.onProgress?.(pos);
    }
    options.signal?.throwIfAborted();
    await fh.sync();
    return pos;
  } finally {
    await fh.close();
  }
}
