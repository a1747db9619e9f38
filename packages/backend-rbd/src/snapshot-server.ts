import type { Image } from '@ephemera/ceph-rbd-napi';
import { OrderedFeed } from './ordered-feed.js';
import { RangeServer } from './range-server.js';

/** Ranges kept to serve overlapping requests (qemu keeps several requests in flight). */
const RECENT = 4;

/**
 * Serves an RBD snapshot, opened read-only through the binding, to qemu-img by random access
 * (any qcow2 layout converts: no window), and passes the same bytes in order to {@link feed}
 * for the hash check: the source is read once, not once by qemu-img and again to verify it.
 * A read-only open registers no watch, so a `profile rbd-read-only` client serves it too.
 */
export class SnapshotRangeServer extends RangeServer {
  /** The snapshot's bytes in order (what `readImage` hashes). */
  readonly feed: OrderedFeed;
  private readonly recent: { start: number; bytes: Buffer }[] = [];
  private first: { start: number; bytes: Buffer } | undefined;
  /** Bytes read from the cluster (by qemu-img's requests and by the feed). */
  clusterBytes = 0;
  private readonly reads = new Set<Promise<Buffer>>();
  private closed = false;

  constructor(
    private readonly img: Image,
    size: number,
    opts: { blockBytes: number; maxAheadBytes: number },
  ) {
    super(size);
    this.feed = new OrderedFeed(size, (at, len) => this.fetch(at, len), opts);
  }

  protected async read(start: number, end: number): Promise<Buffer> {
    const bytes = await this.fetch(start, end - start + 1);
    this.feed.offer(start, bytes);
    return bytes;
  }

  /**
   * `length` bytes at `start`. qemu-img reads the header the feed read first for the inspector,
   * and ranges can overlap: those come from memory (the first range read, and the last few),
   * not from the cluster.
   */
  private async fetch(start: number, length: number): Promise<Buffer> {
    const end = Math.min(start + length, this.size);
    const held = [this.first, ...this.recent].find((r) => r && r.start <= start && start < r.start + r.bytes.length);
    const from = held
      ? held.bytes.subarray(start - held.start, Math.min(held.bytes.length, end - held.start))
      : undefined;
    const next = start + (from?.length ?? 0);
    if (next >= end) return from!;
    const reading = this.img.read(next, end - next);
    this.reads.add(reading);
    let rest: Buffer;
    try {
      rest = await reading;
    } finally {
      this.reads.delete(reading);
    }
    this.clusterBytes += rest.length;
    const bytes = from ? Buffer.concat([from, rest]) : rest;
    if (start === 0 && !this.first) this.first = { start, bytes };
    else {
      this.recent.push({ start, bytes });
      if (this.recent.length > RECENT) this.recent.shift();
    }
    return bytes;
  }

  /** Stops serving and closes the snapshot once its reads settled (librbd aborts a close with aio in flight). Idempotent. */
  override async close(): Promise<void> {
    await super.close();
    this.feed.fail(new Error('the snapshot server was closed'));
    while (this.reads.size) await Promise.allSettled([...this.reads]);
    if (!this.closed) {
      this.closed = true;
      await this.img.close().catch(() => undefined);
    }
  }
}
