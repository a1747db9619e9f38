import { open, readFile } from 'node:fs/promises';
import { ImageFormatError } from '../errors.js';

/**
 * Thrown (internally) by a {@link RegionReader} when a region is not available yet. The driver
 * (file or stream) fetches it and runs the parser again; parsers are pure functions of the
 * regions they read, so re-running is safe.
 */
export class NeedData {
  constructor(
    readonly offset: number,
    readonly length: number,
    readonly tail: boolean = false,
  ) {}
}

/** Largest single region a parser may request. */
export const MAX_REGION = 1024 * 1024;
/** Largest total of distinct regions read for one image. */
export const MAX_TOTAL_READ = 8 * 1024 * 1024;
/** How many bytes from the end a parser may ask for. */
export const MAX_TAIL = 1024;
/** How many parse attempts (region fetches) one image may take. */
export const MAX_ATTEMPTS = 512;

/** What a format parser sees: random access to header regions. */
export interface RegionReader {
  /** Total size in bytes, or undefined while a stream has not ended (see {@link requireSize}). */
  readonly size: number | undefined;
  /**
   * Bytes [offset, offset+length). Returns fewer bytes only at end of input. Throws
   * {@link NeedData} when the region is not available yet.
   */
  read(offset: number, length: number): Uint8Array;
  /** The last `length` (<= MAX_TAIL) bytes, or fewer for a small input. */
  tail(length: number): Uint8Array;
}

/** The input's size; in stream mode, waits for the end of the stream. */
export function requireSize(r: RegionReader): number {
  if (r.size === undefined) throw new NeedData(0, 0, true);
  return r.size;
}

function checkRequest(offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) {
    throw new ImageFormatError('invalid-header', `header points at an impossible region (${offset}+${length})`);
  }
  if (length > MAX_REGION) {
    throw new ImageFormatError('limits', `header asks to read ${length} bytes at once (limit ${MAX_REGION})`);
  }
}

/** A reader over bytes fully in memory. */
export class BufferReader implements RegionReader {
  readonly size: number;
  constructor(private readonly buf: Uint8Array) {
    this.size = buf.length;
  }
  read(offset: number, length: number): Uint8Array {
    checkRequest(offset, length);
    if (offset >= this.buf.length) return new Uint8Array(0);
    return this.buf.subarray(offset, Math.min(this.buf.length, offset + length));
  }
  tail(length: number): Uint8Array {
    const n = Math.min(length, MAX_TAIL, this.buf.length);
    return this.buf.subarray(this.buf.length - n);
  }
}

/** Runs `parse` against a cache of regions, fetching missing ones with `fetch`, until it completes. */
export async function driveWithFetch<T>(
  size: number,
  parse: (r: RegionReader) => T,
  fetch: (offset: number, length: number) => Promise<Uint8Array>,
): Promise<T> {
  const cache = new Map<string, Uint8Array>();
  let total = 0;
  const reader: RegionReader = {
    size,
    read(offset, length) {
      checkRequest(offset, length);
      const hit = cache.get(`${offset}:${length}`);
      if (hit) return hit;
      throw new NeedData(offset, length);
    },
    tail(length) {
      const n = Math.min(length, MAX_TAIL, size);
      const hit = cache.get(`${size - n}:${n}`);
      if (hit) return hit;
      throw new NeedData(size - n, n);
    },
  };
  for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
    try {
      return parse(reader);
    } catch (e) {
      if (!(e instanceof NeedData)) throw e;
      total += e.length;
      if (total > MAX_TOTAL_READ) {
        throw new ImageFormatError('limits', `headers need more than ${MAX_TOTAL_READ} bytes of reading`);
      }
      const bytes = e.offset >= size ? new Uint8Array(0) : await fetch(e.offset, Math.min(e.length, size - e.offset));
      cache.set(`${e.offset}:${e.length}`, bytes);
    }
  }
  throw new ImageFormatError('limits', `headers need more than ${MAX_ATTEMPTS} region reads`);
}

/** Parses a file by reading only the header regions the parser asks for. */
export async function driveFile<T>(path: string, parse: (r: RegionReader) => T): Promise<T> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (e) {
    throw new ImageFormatError('io', `cannot open ${path}: ${(e as Error).message}`, undefined, { cause: e });
  }
  try {
    const st = await fh.stat();
    if (!st.isFile() && !st.isBlockDevice()) {
      throw new ImageFormatError('io', `${path} is not a regular file or block device`);
    }
    let size = st.size;
    if (st.isBlockDevice()) {
      size = await blockDeviceSize(st.rdev);
    }
    return await driveWithFetch(size, parse, async (offset, length) => {
      const buf = new Uint8Array(length);
      let got = 0;
      while (got < length) {
        const { bytesRead } = await fh.read(buf, got, length - got, offset + got);
        if (bytesRead === 0) break;
        got += bytesRead;
      }
      return buf.subarray(0, got);
    });
  } catch (e) {
    if (e instanceof ImageFormatError) throw e;
    throw new ImageFormatError('io', `reading ${path} failed: ${(e as Error).message}`, undefined, { cause: e });
  } finally {
    await fh.close();
  }
}

async function blockDeviceSize(rdev: number): Promise<number> {
  // stat() reports size 0 for block devices: sysfs has the size in 512-byte sectors.
  const major = Math.floor(rdev / 256) % 4096;
  const minor = (rdev % 256) + Math.floor(rdev / 1048576) * 256;
  const text = await readFile(`/sys/dev/block/${major}:${minor}/size`, 'utf8');
  const sectors = Number.parseInt(text.trim(), 10);
  if (!Number.isSafeInteger(sectors) || sectors < 0)
    throw new Error(`cannot read size of block device ${major}:${minor}`);
  return sectors * 512;
}

/** Bytes always kept from the start of a stream. */
export const STREAM_HEAD_KEEP = 64 * 1024;

interface Pending {
  offset: number;
  length: number;
  buf: Uint8Array;
}

/**
 * Incremental driver: fed chunks in order; captures regions the parser asks for as they stream
 * by; keeps at most {@link STREAM_HEAD_KEEP} leading bytes, {@link MAX_TAIL} trailing bytes and
 * {@link MAX_TOTAL_READ} bytes of captured regions.
 */
export class StreamDriver<T> {
  private readonly head = new Uint8Array(STREAM_HEAD_KEEP);
  private readonly tailBuf = new Uint8Array(MAX_TAIL);
  private tailLen = 0;
  private pos = 0;
  private ended = false;
  private recent: { offset: number; bytes: Uint8Array } | undefined;
  private readonly cache = new Map<string, Uint8Array>();
  private pending: Pending | undefined;
  private captured = 0;
  private attempts = 0;
  private waitEnd = false;
  private outcome: { ok: true; value: T } | { ok: false; error: unknown } | undefined;

  constructor(private readonly parse: (r: RegionReader) => T) {}

  /** Bytes consumed so far. */
  get position(): number {
    return this.pos;
  }

  /** True once the parser finished (successfully or not). */
  get settled(): boolean {
    return this.outcome !== undefined;
  }

  /**
   * How many leading bytes of the stream the parser needs before it can progress, or
   * `Infinity` when it needs the end of the stream (size or trailing bytes); 0 once settled.
   */
  get bytesWanted(): number {
    if (this.outcome) return 0;
    if (this.pending) return this.pending.offset + this.pending.length;
    if (this.waitEnd) return Infinity;
    return this.pos + 1;
  }

  /** The parse result; throws the parser's error; undefined while undecided. */
  result(): T | undefined {
    if (!this.outcome) return undefined;
    if (this.outcome.ok) return this.outcome.value;
    throw this.outcome.error;
  }

  push(chunk: Uint8Array): void {
    if (this.ended) throw new Error('push() after end()');
    if (chunk.length === 0) return;
    const start = this.pos;
    const end = start + chunk.length;
    if (start < STREAM_HEAD_KEEP) {
      const n = Math.min(STREAM_HEAD_KEEP - start, chunk.length);
      this.head.set(chunk.subarray(0, n), start);
    }
    this.updateTail(chunk);
    const p = this.pending;
    if (p) {
      const from = Math.max(p.offset, start);
      const to = Math.min(p.offset + p.length, end);
      if (from < to) p.buf.set(chunk.subarray(from - start, to - start), from - p.offset);
    }
    this.pos = end;
    this.recent = { offset: start, bytes: chunk };
    if (p && end >= p.offset + p.length) {
      this.cache.set(`${p.offset}:${p.length}`, p.buf);
      this.pending = undefined;
    }
    if (!this.outcome && !this.pending && !this.waitEnd) this.run();
    this.recent = undefined;
  }

  end(): void {
    if (this.ended) return;
    this.ended = true;
    const p = this.pending;
    if (p) {
      const got = Math.max(0, Math.min(p.length, this.pos - p.offset));
      this.cache.set(`${p.offset}:${p.length}`, p.buf.subarray(0, got));
      this.pending = undefined;
    }
    if (!this.outcome) this.run();
    if (!this.outcome) {
      this.outcome = { ok: false, error: new ImageFormatError('truncated', 'the image ended before its headers did') };
    }
  }

  private updateTail(chunk: Uint8Array): void {
    if (chunk.length >= MAX_TAIL) {
      this.tailBuf.set(chunk.subarray(chunk.length - MAX_TAIL));
      this.tailLen = MAX_TAIL;
      return;
    }
    const keep = Math.min(this.tailLen, MAX_TAIL - chunk.length);
    this.tailBuf.copyWithin(0, this.tailLen - keep, this.tailLen);
    this.tailBuf.set(chunk, keep);
    this.tailLen = keep + chunk.length;
  }

  /** Bytes [offset, offset+length) if all of them are in head/recent (clamped to what exists). */
  private fromMemory(offset: number, length: number): Uint8Array | undefined {
    const end = Math.min(offset + length, this.pos);
    if (end <= offset) return new Uint8Array(0);
    if (end <= Math.min(this.pos, STREAM_HEAD_KEEP)) return this.head.slice(offset, end);
    const r = this.recent;
    if (r && offset >= r.offset && end <= r.offset + r.bytes.length) {
      return r.bytes.slice(offset - r.offset, end - r.offset);
    }
    // Spanning head and recent chunk.
    if (r && offset < STREAM_HEAD_KEEP && r.offset <= STREAM_HEAD_KEEP && end <= r.offset + r.bytes.length) {
      const out = new Uint8Array(end - offset);
      out.set(this.head.subarray(offset, Math.min(STREAM_HEAD_KEEP, r.offset)), 0);
      out.set(r.bytes.subarray(0, end - r.offset), r.offset - offset);
      return out;
    }
    return undefined;
  }

  private run(): void {
    const reader: RegionReader = {
      size: this.ended ? this.pos : undefined,
      read: (offset, length) => {
        checkRequest(offset, length);
        const key = `${offset}:${length}`;
        const hit = this.cache.get(key);
        if (hit) return hit;
        if (this.ended || offset + length <= this.pos) {
          const mem = this.fromMemory(offset, length);
          if (mem) return this.remember(key, mem);
          throw new ImageFormatError(
            'stream-order',
            `a header region at offset ${offset} has already streamed past; inspect the file instead`,
          );
        }
        // Region reaches into the future: capture it as it streams by.
        const buf = new Uint8Array(length);
        if (offset < this.pos) {
          const mem = this.fromMemory(offset, this.pos - offset);
          if (!mem) {
            throw new ImageFormatError(
              'stream-order',
              `a header region at offset ${offset} has already streamed past; inspect the file instead`,
            );
          }
          buf.set(mem, 0);
        }
        this.account(length);
        this.pending = { offset, length, buf };
        throw new NeedData(offset, length);
      },
      tail: (length) => {
        if (!this.ended) throw new NeedData(0, 0, true);
        const n = Math.min(length, MAX_TAIL, this.tailLen);
        return this.tailBuf.slice(this.tailLen - n, this.tailLen);
      },
    };
    if (++this.attempts > MAX_ATTEMPTS) {
      this.outcome = {
        ok: false,
        error: new ImageFormatError('limits', `headers need more than ${MAX_ATTEMPTS} region reads`),
      };
      return;
    }
    try {
      this.outcome = { ok: true, value: this.parse(reader) };
    } catch (e) {
      // NeedData: a future region is pending, or the end of the stream is required.
      if (!(e instanceof NeedData)) this.outcome = { ok: false, error: e };
      else if (e.tail) this.waitEnd = true;
    }
  }

  private remember(key: string, bytes: Uint8Array): Uint8Array {
    this.account(bytes.length);
    this.cache.set(key, bytes);
    return bytes;
  }

  private account(n: number): void {
    this.captured += n;
    if (this.captured > MAX_TOTAL_READ) {
      throw new ImageFormatError('limits', `headers need more than ${MAX_TOTAL_READ} bytes of reading`);
    }
  }
}
