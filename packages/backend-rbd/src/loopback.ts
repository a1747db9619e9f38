import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

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
 * Serves a forward-only image stream to qemu-img over HTTP on 127.0.0.1, with byte ranges, so
 * `qemu-img convert` can read a qcow2 (which needs seeks) straight from the download without the
 * image ever being written to local disk. It keeps the first `headBytes` (headers, L1/refcount
 * tables) and a sliding window of the last `windowBytes`; a request for data that already left
 * the window restarts the source when `reopen` is given (at most {@link MAX_REOPENS} times), else
 * fails (the conversion then fails cleanly and says why). qemu-img's data reads of a qcow2
 * written by qemu-img (what image pipelines produce) are nearly sequential, but it reads every
 * L2 table first, so past 512 MiB of data the data pass starts behind the window once.
 *
 * The URL carries a random token; any other path is refused. Nothing but this process and
 * qemu-img ever sees the data.
 */
export class LoopbackImageServer {
  readonly size: number;
  private readonly headKeep: number;
  private readonly windowBytes: number;
  private readonly token = randomBytes(16).toString('hex');
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  private head: Buffer;
  private headFill = 0;
  /** Window chunks, contiguous, covering [winStart, pos). */
  private window: Buffer[] = [];
  private winStart = 0;
  private pos = 0;
  private ended = false;
  private lock: Promise<unknown> = Promise.resolve();
  private failure: { error: unknown } | undefined;
  private port = 0;
  /** Times the source was reopened. */
  reopened = 0;
  /** Bytes served to qemu (for progress and tests). */
  servedBytes = 0;
  /** Largest offset qemu has asked for so far. */
  highestRequested = 0;

  constructor(
    private source: AsyncIterator<Uint8Array>,
    private readonly options: LoopbackOptions,
  ) {
    this.size = options.size;
    this.headKeep = Math.min(options.headBytes ?? 8 * 1024 * 1024, options.size);
    this.windowBytes = options.windowBytes ?? 64 * 1024 * 1024;
    this.head = Buffer.alloc(this.headKeep);
    this.server = createServer((req, res) => void this.handle(req, res));
    this.server.on('connection', (s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
  }

  /** Starts listening on an ephemeral port of 127.0.0.1. */
  async listen(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    const addr = this.server.address();
    if (!addr || typeof addr === 'string') throw new Error('loopback server has no port');
    this.port = addr.port;
  }

  /** The URL qemu reads from. */
  get url(): string {
    return `http://127.0.0.1:${this.port}/${this.token}`;
  }

  /** The first error: of the source (download, hash, abort) or a range out of the window. */
  get error(): unknown {
    return this.failure?.error;
  }

  /** Makes every pending and future request fail (qemu-img then exits on its own, cleanly). */
  fail(error: unknown): void {
    if (!this.failure) {
      this.failure = { error };
      try {
        this.onFail?.(error);
      } catch {
        // A faulty listener must not break the server.
      }
    }
    for (const s of this.sockets) s.destroy();
  }

  /** Called once, on the first failure (the backend then stops qemu-img if it does not exit). */
  onFail: ((error: unknown) => void) | undefined;

  /**
   * Reads the rest of the source without keeping it (so the source verifies its size and hash
   * at the end), after qemu-img finished.
   */
  async drain(): Promise<void> {
    await this.exclusive(async () => {
      while (!this.ended) await this.pull(true);
    });
    if (this.failure) throw this.failure.error;
  }

  /** Stops the server and closes the source. Idempotent. */
  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
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
  private read(start: number, end: number): Promise<Buffer> {
    return this.exclusive(async () => {
      if (this.failure) throw this.failure.error;
      if (this.gone(start, end) && this.options.reopen && this.reopened < MAX_REOPENS) await this.restart();
      while (this.pos <= end && !this.ended) await this.pull();
      const failed = this.failure as { error: unknown } | undefined;
      if (failed) throw failed.error;
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

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (req.url !== `/${this.token}`) {
      res.writeHead(404).end();
      return;
    }
    if (this.failure) {
      res.writeHead(500).end();
      return;
    }
    if (req.method === 'HEAD') {
      res.writeHead(200, {
        'Content-Length': String(this.size),
        'Accept-Ranges': 'bytes',
        'Content-Type': 'application/octet-stream',
      });
      res.end();
      return;
    }
    if (req.method !== 'GET') {
      res.writeHead(405).end();
      return;
    }
    const m = /^bytes=(\d+)-(\d*)$/.exec(String(req.headers.range ?? ''));
    if (!m) {
      // Only ranges: a whole-image GET would need the whole image in memory.
      res.writeHead(416, { 'Content-Range': `bytes */${this.size}` }).end();
      return;
    }
    const start = Number(m[1]);
    const end = Math.min(m[2] ? Number(m[2]) : this.size - 1, this.size - 1);
    if (start > end || start >= this.size) {
      res.writeHead(416, { 'Content-Range': `bytes */${this.size}` }).end();
      return;
    }
    this.highestRequested = Math.max(this.highestRequested, end);
    try {
      const data = await this.read(start, end);
      this.servedBytes += data.length;
      res.writeHead(206, {
        'Content-Length': String(data.length),
        'Content-Range': `bytes ${start}-${start + data.length - 1}/${this.size}`,
        'Accept-Ranges': 'bytes',
      });
      res.end(data);
    } catch {
      if (!res.headersSent) res.writeHead(500);
      res.end();
      res.socket?.destroy();
    }
  }
}
