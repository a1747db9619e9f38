import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

/**
 * An image served to qemu-img over HTTP on 127.0.0.1 with byte ranges (qemu's curl driver: a
 * HEAD for the size, then ranged GETs), so `qemu-img convert` reads it without the image ever
 * being written to local disk. Subclasses say where the bytes of a range come from.
 *
 * The URL carries a random token; any other path is refused. Nothing but this process and
 * qemu-img ever sees the data.
 */
export abstract class RangeServer {
  readonly size: number;
  private readonly token = randomBytes(16).toString('hex');
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  private failure: { error: unknown } | undefined;
  private port = 0;
  /** Bytes served to qemu (for progress and tests). */
  servedBytes = 0;
  /** Largest offset qemu has asked for so far. */
  highestRequested = 0;
  /** Called once, on the first failure (the backend then stops qemu-img if it does not exit). */
  onFail: ((error: unknown) => void) | undefined;

  constructor(size: number) {
    this.size = size;
    this.server = createServer((req, res) => void this.handle(req, res));
    this.server.on('connection', (s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
  }

  /** Bytes [start, end] (inclusive; fewer only at the end of the image). */
  protected abstract read(start: number, end: number): Promise<Buffer>;

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

  /** The first error: of the source (read, hash, abort) or of a range it cannot serve. */
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

  /** Stops the server (open connections are cut). Idempotent. */
  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
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
