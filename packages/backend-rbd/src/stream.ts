import { UnsafeImageError } from '@ephemera/image-backend';
import { ImageInspector, isQemuImgError, safetyCheck, type InspectedImage } from '@ephemera/qemu-img-wrapper';

/** Turns the inspector's refusals into the contract's `UnsafeImageError`. */
export function asContractUnsafe(e: unknown, backend: string, diskId?: string): unknown {
  if (isQemuImgError(e, 'QEMU_IMG_UNSAFE_IMAGE'))
    return new UnsafeImageError(e.reason, e.message, { backend, diskId, cause: e });
  if (isQemuImgError(e, 'QEMU_IMG_BAD_IMAGE'))
    return new UnsafeImageError(`invalid-image-${e.reason}`, e.message, { backend, diskId, cause: e });
  return e;
}

/** The most the head inspection buffers before it must decide (headers of every format fit). */
const HEAD_LIMIT = 16 * 1024 * 1024;

/**
 * A byte stream whose first bytes were already read (for the format inspector), replayed in
 * front of the rest. Every chunk, the head's and the rest's, goes through the inspector.
 */
export class InspectedStream {
  readonly inspector = new ImageInspector();
  private readonly head: Uint8Array[] = [];
  private headBytes = 0;
  private ended = false;
  private consumed = false;
  private closed = false;

  constructor(private readonly source: AsyncIterator<Uint8Array>) {}

  /**
   * Reads until the inspector has decided (a format with a header at offset 0: qcow2, vmdk,
   * vhdx...) or says it needs the end of the stream (raw, ISO, fixed VHD). Returns the decided
   * result, or `undefined` when the format can only be known at the end (raw-like data).
   */
  async readHead(): Promise<InspectedImage | undefined> {
    for (;;) {
      if (this.inspector.decided) return this.inspector.result;
      const wanted = this.inspector.bytesWanted;
      if (this.headBytes > 0 && wanted === Infinity) return undefined;
      if (this.headBytes >= HEAD_LIMIT) return undefined;
      const next = await this.source.next();
      if (next.done) {
        this.ended = true;
        return undefined;
      }
      this.head.push(next.value);
      this.headBytes += next.value.byteLength;
      this.inspector.push(next.value);
    }
  }

  /** The head followed by the rest of the source. Iterate once. */
  async *chunks(): AsyncGenerator<Uint8Array> {
    if (this.consumed) throw new Error('InspectedStream.chunks() called twice');
    this.consumed = true;
    let complete = false;
    try {
      while (this.head.length) yield this.head.shift()!;
      if (!this.ended) {
        for (;;) {
          const next = await this.source.next();
          if (next.done) break;
          this.inspector.push(next.value);
          yield next.value;
        }
      }
      complete = true;
    } finally {
      // Stopped early (a failed write, an abort): stop the download too.
      if (!complete) await this.close();
    }
  }

  /** Ends inspection and returns the final verdict (throws the inspector's typed errors). */
  end(): InspectedImage {
    return this.inspector.end();
  }

  /** Closes the source early (stops a download). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // A generator busy in a stalled read only returns once that read settles: do not wait forever.
    const returned = Promise.resolve(this.source.return?.(undefined)).catch(() => undefined);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([returned, new Promise<void>((r) => (timer = setTimeout(r, 2_000)))]);
    clearTimeout(timer);
  }
}

/**
 * Checks an early verdict against the declared format: a non-raw header under a raw
 * declaration (or any mismatch, backing file, external data file, encryption) is refused before
 * anything is written.
 */
export function checkDeclared(
  img: InspectedImage,
  declaredFormat: string,
  backend: string,
  diskId: string,
): InspectedImage {
  try {
    return safetyCheck(img, { declaredFormat, allowEncrypted: false });
  } catch (e) {
    throw asContractUnsafe(e, backend, diskId);
  }
}

/**
 * Buffers of one block size for {@link blocks} to gather into, reused once the consumer gives
 * them back (after their aio write completed). A new 4 MiB ArrayBuffer per block made V8 run a
 * full collection every few dozen MiB, for its external memory (bench/README.md, case 4).
 */
export class BlockPool {
  private readonly free: Buffer[] = [];
  /** The pool's buffers by their memory: a block handed back may be another view of it. */
  private readonly mine = new WeakMap<ArrayBufferLike, Buffer>();

  /** `keep`: how many free buffers to hold at most (the rest are left to the GC). */
  constructor(
    readonly blockBytes: number,
    private readonly keep: number,
  ) {}

  take(): Buffer {
    const b = this.free.pop();
    if (b) return b;
    const fresh = Buffer.allocUnsafeSlow(this.blockBytes);
    this.mine.set(fresh.buffer, fresh);
    return fresh;
  }

  /**
   * Gives back a buffer of the pool, or any view of one (a block {@link blocks} yielded); other
   * memory (views of the source's chunks) is ignored.
   */
  give(b: Uint8Array): void {
    const own = this.mine.get(b.buffer);
    if (own && this.free.length < this.keep && !this.free.includes(own)) this.free.push(own);
  }
}

/**
 * Collects chunks of any size into fixed-size blocks (the last one may be short). Whole blocks
 * that lie inside one chunk are yielded as views of that chunk, not copied (a local file read
 * in block-sized chunks is never copied in JS); only blocks that straddle chunks are gathered,
 * into a buffer of `pool` (a new one without). Sources must not reuse a chunk's memory after
 * yielding it (Node's fs and HTTP streams never do): a view may still be in an aio write. A
 * consumer gives a block back to `pool` only when nothing uses it any more.
 */
export async function* blocks(
  source: AsyncIterable<Uint8Array>,
  blockBytes: number,
  pool?: BlockPool,
): AsyncGenerator<Buffer> {
  let buf: Buffer | undefined;
  let fill = 0;
  for await (const chunk of source) {
    let at = 0;
    while (at < chunk.byteLength) {
      if (fill === 0 && chunk.byteLength - at >= blockBytes) {
        yield Buffer.from(chunk.buffer, chunk.byteOffset + at, blockBytes);
        at += blockBytes;
        continue;
      }
      // The consumer may still hold a yielded block (an aio write in flight): only the pool,
      // which gets a block back after its write, may hand one out again.
      buf ??= pool && pool.blockBytes === blockBytes ? pool.take() : Buffer.allocUnsafe(blockBytes);
      const n = Math.min(blockBytes - fill, chunk.byteLength - at);
      buf.set(chunk.subarray(at, at + n), fill);
      fill += n;
      at += n;
      if (fill === blockBytes) {
        yield buf;
        buf = undefined;
        fill = 0;
      }
    }
  }
  if (buf && fill > 0) yield buf.subarray(0, fill);
}

const ZERO = Buffer.alloc(1024 * 1024);

/** True when every byte of `b` is zero (memcmp against a zero page, 1 MiB at a time). */
export function isAllZero(b: Uint8Array): boolean {
  const buf = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  for (let at = 0; at < buf.length; at += ZERO.length) {
    const n = Math.min(ZERO.length, buf.length - at);
    if (!buf.subarray(at, at + n).equals(ZERO.subarray(0, n))) return false;
  }
  return true;
}

/**
 * Runs async jobs with at most `limit` in flight. `push` waits while the window is full;
 * `drain` waits for all and rethrows the first failure. After a failure, `push` rethrows it.
 */
export class Window {
  private readonly inflight = new Set<Promise<void>>();
  private failure: { error: unknown } | undefined;

  constructor(private readonly limit: number) {}

  get size(): number {
    return this.inflight.size;
  }

  async push(job: () => Promise<void>): Promise<void> {
    if (this.failure) throw this.failure.error;
    while (this.inflight.size >= this.limit) {
      await Promise.race(this.inflight);
      const failed = this.failure as { error: unknown } | undefined;
      if (failed) throw failed.error;
    }
    const p: Promise<void> = job().then(
      () => {
        this.inflight.delete(p);
      },
      (error: unknown) => {
        this.inflight.delete(p);
        if (!this.failure) this.failure = { error };
      },
    );
    this.inflight.add(p);
  }

  /** Waits for every job; rethrows the first failure. */
  async drain(): Promise<void> {
    await Promise.all([...this.inflight]);
    if (this.failure) throw this.failure.error;
  }

  /** Waits for every job and ignores failures (rollback path). */
  async settle(): Promise<void> {
    await Promise.allSettled([...this.inflight]);
  }
}
