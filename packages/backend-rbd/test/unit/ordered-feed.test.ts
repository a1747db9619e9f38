// OrderedFeed: reads at any offsets in, the image's bytes in order out (what the hash sees),
// with pieces read ahead held up to a bound and the gaps read by the feed itself.
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { patternBytes } from '@ephemera/image-backend';
import { OrderedFeed } from '../../src/ordered-feed.js';

const data = Buffer.from(patternBytes(1_000_000, 7));
const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

/** A feed over `data` that counts what it read itself. */
function feedOf(opts: { blockBytes?: number; maxAheadBytes?: number } = {}) {
  const reads: [number, number][] = [];
  const feed = new OrderedFeed(
    data.length,
    async (at, len) => {
      reads.push([at, len]);
      return Buffer.from(data.subarray(at, at + len));
    },
    { blockBytes: opts.blockBytes ?? 65_536, maxAheadBytes: opts.maxAheadBytes ?? 1 << 20 },
  );
  return { feed, reads };
}

async function drain(feed: OrderedFeed): Promise<Buffer> {
  const out: Uint8Array[] = [];
  for await (const c of feed.chunks()) out.push(c);
  return Buffer.concat(out);
}

const piece = (at: number, len: number): Buffer => Buffer.from(data.subarray(at, at + len));

describe('OrderedFeed', () => {
  it('reads everything itself when nobody offers (self-read mode)', async () => {
    const { feed, reads } = feedOf();
    expect(sha(await drain(feed))).toBe(sha(data));
    expect(feed.selfReadBytes).toBe(data.length);
    expect(reads.every(([, len]) => len <= 65_536)).toBe(true);
  });

  it('in-order and out-of-order offers: the bytes come out in order, only the gaps are read again', async () => {
    const { feed, reads } = feedOf();
    feed.selfRead = false;
    const out = drain(feed);
    // Tables read first (ahead of the cursor), then the data in order, with one piece twice.
    feed.offer(900_000, piece(900_000, 10_000));
    feed.offer(500_000, piece(500_000, 20_000));
    for (let at = 0; at < 800_000; at += 50_000) feed.offer(at, piece(at, 50_000));
    feed.offer(100_000, piece(100_000, 50_000)); // behind the cursor: ignored
    expect(feed.cursor).toBe(800_000);
    expect(reads).toEqual([]);
    feed.selfRead = true; // qemu-img is done: the rest (800 000-900 000, 910 000-end)
    expect(sha(await out)).toBe(sha(data));
    expect(feed.selfReadBytes).toBe(100_000 + 90_000);
    expect(reads.every(([at, len]) => at + len <= 900_000 || at >= 910_000)).toBe(true);
  });

  it('overlapping offers across the cursor pass on only the new bytes', async () => {
    const { feed } = feedOf();
    feed.selfRead = false;
    const out = drain(feed);
    feed.offer(0, piece(0, 300_000));
    feed.offer(200_000, piece(200_000, 400_000));
    feed.offer(550_000, piece(550_000, data.length - 550_000));
    expect(feed.cursor).toBe(data.length);
    expect(sha(await out)).toBe(sha(data));
    expect(feed.selfReadBytes).toBe(0);
  });

  it('holds at most maxAheadBytes ahead: a piece past the bound is read again at the end', async () => {
    const { feed, reads } = feedOf({ maxAheadBytes: 100_000 });
    feed.selfRead = false;
    const out = drain(feed);
    feed.offer(200_000, piece(200_000, 80_000)); // held
    feed.offer(400_000, piece(400_000, 80_000)); // over the bound: dropped
    feed.selfRead = true;
    expect(sha(await out)).toBe(sha(data));
    expect(feed.selfReadBytes).toBe(data.length - 80_000);
    expect(reads.some(([at, len]) => at < 480_000 && at + len > 400_000)).toBe(true);
    expect(reads.some(([at, len]) => at < 280_000 && at + len > 200_000)).toBe(false);
  });

  it('a failed read or fail() ends the consumer with that error', async () => {
    const bad = new OrderedFeed(data.length, async () => Promise.reject(new Error('EIO')), {
      blockBytes: 65_536,
      maxAheadBytes: 0,
    });
    await expect(drain(bad)).rejects.toThrow('EIO');
    const { feed } = feedOf();
    feed.selfRead = false;
    const out = drain(feed);
    feed.offer(0, piece(0, 1000));
    feed.fail(new Error('qemu-img died'));
    await expect(out).rejects.toThrow('qemu-img died');
  });

  it('a source shorter than its size fails instead of waiting', async () => {
    const short = new OrderedFeed(data.length + 10, async (at, len) => Buffer.from(data.subarray(at, at + len)), {
      blockBytes: 65_536,
      maxAheadBytes: 0,
    });
    await expect(drain(short)).rejects.toThrow(/ended at 1000000 bytes/);
  });
});
