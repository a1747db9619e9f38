import { RangeServer } from './range-server.js';

/** A range qemu asked for that has already streamed out of the window. */
export class RangeUnavailableError extends Error {
  constructor(
    readonly start: number,
    readonly end: number,
    readonly windowStart: number,
  ) {
    super(
      `qemu-img asked for bytes ${start}-${end} of the image after the stream had moved past them ` +
        `(window starts at ${windowStart}): the image's layout is not sequential enough to convert from a stream`,
    );
    this.name = 'RangeUnavailableError';
  }
}

/** Options of {@link LoopbackImageServer}. */
export interface LoopbackOptions {
  /** Total bytes the source yields (the image's `size`). */
  size: number;
  /** Leading bytes kept for the whole conversion (qcow2 header, L1 and refcount tables). Default 8 MiB. */
  headBytes?: number;
  /** Most recent bytes kept to serve overlapping and out-of-order range requests. Default 64 MiB. */
  windowBytes?: number;
  /**
   * Opens the same source again from its first byte. When given, a request for bytes that
   * already left the window restarts the stream (at most {@link MAX_REOPENS} times) instead of
   * failing: qemu-img convert reads every qcow2 L2 table (spread through the file, one per
   * 512 MiB of data) before it reads any data, so its data pass starts behind the window.
   */
  reopen?: () => AsyncIterator<Uint8Array>;
}

/** Restarts of the source per conversion: each one downloads again up to the bytes asked for. */
export const MAX_REOPENS = 2;

/**
 * Serves a forward-only image stream to qemu-img (an NBD export, see {@link RangeServer}), so
 * `qemu-img convert` can read a qcow2 (which needs seeks) straight from the download without the
 * image ever being written to local disk. It keeps the first `headBytes` (headers, L1/refcount
 * tables) and a sliding window of the last `windowBytes`; a request for data that already left
 * the window restarts the source when `reopen` is given (at most {@link MAX_REOPENS} times), else
 * fails (the conversion then fails cleanly and says why). qemu-img's data reads of a qcow2
 * written by qemu-img (what image pipelines produce) are nearly sequential, but it reads every
 * L2 table first, so past 512 MiB of data the data pass starts behind the window once.
 */
export class LoopbackImageServer extends RangeServer {
  private readonly headKeep: number;
  private readonly windowBytes: number;
  private head: Buffer;
  private headFill = 0;
  /** Window chunks, contiguous, covering [winStart, pos). */
  private window: Buffer[] = [];
  private winStart = 0;
  private pos = 0;
  private ended = false;
  private lock: Promise<unknown> = Promise.resolve();
  /** Times the source was reopened. */
  reopened = 0;

  constructor(
    private source: AsyncIterator<Uint8Array>,
    private readonly options: LoopbackOptions,
  ) {
    super(options.size);
    this.headKeep = Math.min(options.headBytes ?? 8 * 1024 * 1024, options.size);
    this.windowBytes = options.windowBytes ?? 64 * 1024 * 1024;
    this.head = Buffer.alloc(this.headKeep);
  }

  /**
   * Reads the rest of the source without keeping it (so the source verifies its size and hash
   * at the end), after qemu-img finished.
   */
  async drain(): Promise<void> {
    await this.exclusive(async () => {
      while (!this.ended) await this.pull(true);
    });
    if (this.error !== undefined) throw this.error;
  }

  /** Stops the server and closes the source. Idempotent. */
  override async close(): Promise<void> {
    await super.close();
    if (!this.ended) {
      this.ended = true;
      await this.returnSource();
    }
    this.window = [];
    this.head = Buffer.alloc(0);
  }

  /** Closes the current source. Bounded: a source stalled in a read only returns once that read settles. */
  private async returnSource(): Promise<void> {
    const returned = Promise.resolve(this.source.return?.(undefined)).catch(() => undefined);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([returned, new Promise<void>((r) => (timer = setTimeout(r, 2_000)))]);
    clearTimeout(timer);
  }

  /** Whether [start, end] needs bytes that neither the head nor the window (nor the stream ahead) hold. */
  private gone(start: number, end: number): boolean {
    if (end < this.headFill) return false;
    return start < this.winStart && !(start < this.headFill && this.headFill >= this.winStart);
  }

  /** Starts the source again from byte 0 (the head is kept: same bytes). */
  private async restart(): Promise<void> {
    const reopen = this.options.reopen!;
    if (!this.ended) await this.returnSource();
    this.reopened++;
    this.source = reopen();
    this.pos = 0;
    this.winStart = 0;
    this.window = [];
    this.ended = false;
  }

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.lock.then(fn, fn);
    this.lock = run.catch(() => undefined);
    return run;
  }

  /** Pulls one chunk from the source into head/window (or drops it when `discard`). */
  private async pull(discard = false): Promise<void> {
    let next: IteratorResult<Uint8Array>;
    try {
      next = await this.source.next();
    } catch (err) {
      this.ended = true;
      this.fail(err);
      throw err;
    }
    if (next.done) {
      this.ended = true;
      return;
    }
    const chunk = Buffer.from(next.value.buffer, next.value.byteOffset, next.value.byteLength);
    const start = this.pos;
    if (start < this.headKeep) {
      const n = Math.min(this.headKeep - start, chunk.length);
      chunk.copy(this.head, start, 0, n);
      this.headFill = Math.max(this.headFill, start + n);
    }
    this.pos += chunk.length;
    if (discard) {
      this.window = [];
      this.winStart = this.pos;
      return;
    }
    // Copy: the source may reuse its buffers.
    this.window.push(Buffer.from(chunk));
    let kept = this.pos - this.winStart;
    while (this.window.length > 1 && kept - this.window[0]!.length >= this.windowBytes) {
      const dropped = this.window.shift()!;
      this.winStart += dropped.length;
      kept -= dropped.length;
    }
  }

  /** Bytes [start, end] (inclusive), pulling the source forward as needed. */
  protected read(start: number, end: number): Promise<Buffer> {
    return this.exclusive(async () => {
      if (this.error !== undefined) throw this.error;
      if (this.gone(start, end) && this.options.reopen && this.reopened < MAX_REOPENS) await this.restart();
      while (this.pos <= end && !this.ended) await this.pull();
      if (this.error !== undefined) throw this.error;
      end = Math.min(end, this.pos - 1);
      if (end < start) return Buffer.alloc(0);
      if (end < this.headFill) return Buffer.from(this.head.subarray(start, end + 1));
      if (this.gone(start, end)) {
        const err = new RangeUnavailableError(start, end, this.winStart);
        this.fail(err);
        throw err;
      }
      const out = Buffer.allocUnsafe(end - start + 1);
      let filled = 0;
      if (start < this.winStart) {
        // Served partly from the head (which reaches into the window).
        filled = this.head.copy(out, 0, start, this.winStart);
      }
      let at = this.winStart;
      for (const c of this.window) {
        const cEnd = at + c.length;
        const from = Math.max(start + filled, at);
        if (from < cEnd && from <= end) {
          const to = Math.min(cEnd, end + 1);
          filled += c.copy(out, from - start, from - at, to - at);
        }
        at = cEnd;
        if (at > end) break;
      }
      return out;
    });
  }
}
