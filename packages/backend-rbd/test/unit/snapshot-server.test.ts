// SnapshotRangeServer with real qemu-img (nbd driver) over a buffer-backed snapshot: qemu-img
// converts by random access while the feed passes the same bytes on in order, so the source is
// read about once. The librbd side is covered by the integration tests (rbd-backend, golden).
import { createHash } from 'node:crypto';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Image } from '@ephemera/ceph-rbd-napi';
import { patternBytes } from '@ephemera/image-backend';
import { nbdSource } from '../../src/qemu.js';
import { SnapshotRangeServer } from '../../src/snapshot-server.js';

const run = promisify(execFile);
const MiB = 1024 * 1024;
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ephemera-rbd-snapserver-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** The part of `Image` the server uses, over bytes in memory; counts what was read. */
function imageOf(bytes: Uint8Array): { img: Image; read: () => number; closed: () => boolean } {
  let read = 0;
  let closed = false;
  const img = {
    read: async (at: number, len: number) => {
      read += Math.max(0, Math.min(len, bytes.length - at));
      return Buffer.from(bytes.subarray(at, at + len));
    },
    close: async () => {
      closed = true;
    },
  } as unknown as Image;
  return { img, read: () => read, closed: () => closed };
}

async function qcow2Of(raw: Uint8Array, extra: string[] = []): Promise<Uint8Array> {
  const r = join(dir, 'in.raw');
  const q = join(dir, 'in.qcow2');
  await writeFile(r, raw);
  await run('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', ...extra, r, q], { timeout: 60_000 });
  return readFile(q);
}

async function convertThrough(
  q: Uint8Array,
  maxAheadBytes = 64 * MiB,
): Promise<{ out: Buffer; hashed: string; read: number; selfRead: number; closed: boolean }> {
  const src = imageOf(q);
  const srv = new SnapshotRangeServer(src.img, q.length, { blockBytes: 4 * MiB, maxAheadBytes });
  const h = createHash('sha256');
  srv.feed.selfRead = false;
  const consumed = (async () => {
    for await (const c of srv.feed.chunks()) h.update(c);
  })();
  await srv.listen();
  const out = join(dir, 'out.raw');
  try {
    await run('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', nbdSource(srv.location), out], { timeout: 60_000 });
    srv.feed.selfRead = true;
    await consumed;
  } finally {
    await srv.close();
  }
  return {
    out: await readFile(out),
    hashed: h.digest('hex'),
    read: src.read(),
    selfRead: srv.feed.selfReadBytes,
    closed: src.closed(),
  };
}

describe('SnapshotRangeServer', () => {
  it('a qcow2 written by qemu-img: byte-exact conversion, the hash of the whole file, the source read about once', async () => {
    const raw = new Uint8Array(48 * MiB);
    raw.set(patternBytes(20 * MiB, 1), 0);
    raw.set(patternBytes(9 * MiB, 2), 33 * MiB);
    const q = await qcow2Of(raw);
    const r = await convertThrough(q);
    expect(Buffer.compare(r.out, Buffer.from(raw))).toBe(0);
    expect(r.hashed).toBe(createHash('sha256').update(q).digest('hex'));
    // Each byte once (qemu-img reads its header twice, and ranges overlap by its readahead).
    expect(r.read).toBeLessThan(q.length * 1.02);
    expect(r.closed).toBe(true);
  });

  it('clusters stored back to front (no window could serve it): still converts, hashed in order from held pieces', async () => {
    const q = join(dir, 'reverse.qcow2');
    await run('qemu-img', ['create', '-f', 'qcow2', q, '12M'], { timeout: 30_000 });
    const raw = new Uint8Array(12 * MiB);
    for (const off of [10, 8, 6, 4, 2, 0]) {
      await run('qemu-io', ['-f', 'qcow2', '-c', `write -P ${off + 17} ${off}M 1M`, q], { timeout: 30_000 });
      raw.fill(off + 17, off * MiB, (off + 1) * MiB);
    }
    const bytes = await readFile(q);
    const r = await convertThrough(bytes);
    expect(Buffer.compare(r.out, Buffer.from(raw))).toBe(0);
    expect(r.hashed).toBe(createHash('sha256').update(bytes).digest('hex'));
    expect(r.read).toBeLessThan(bytes.length * 1.5);
    // With nothing held ahead, the out-of-order data is read a second time, and the hash still holds.
    const tight = await convertThrough(bytes, 0);
    expect(tight.hashed).toBe(r.hashed);
    expect(tight.selfRead).toBeGreaterThan(r.selfRead);
  });
});
