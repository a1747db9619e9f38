import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { nbdLocation, type NbdLocation } from '@ephemera/qemu-img-wrapper';

// NBD protocol constants (https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md).
const IHAVEOPT = 0x49484156454f5054n;
const REPLY_MAGIC = 0x3e889045565a9n;
const REQUEST_MAGIC = 0x25609513;
const SIMPLE_REPLY_MAGIC = 0x67446698;
const FLAG_FIXED_NEWSTYLE = 1;
const FLAG_NO_ZEROES = 2;
const OPT_EXPORT_NAME = 1;
const OPT_ABORT = 2;
const OPT_INFO = 6;
const OPT_GO = 7;
const REP_ACK = 1;
const REP_INFO = 3;
const REP_ERR_UNSUP = 0x80000001;
const INFO_EXPORT = 0;
const TX_HAS_FLAGS = 1;
const TX_READ_ONLY = 2;
const CMD_READ = 0;
const CMD_WRITE = 1;
const CMD_DISC = 2;
const CMD_FLUSH = 3;
const EPERM = 1;
const EIO = 5;
const EINVAL = 22;
/** Largest read served (QEMU asks for at most 32 MiB). */
const MAX_READ = 32 * 1024 * 1024;

/**
 * An image served read-only to qemu-img as an NBD export on a Unix socket in a private
 * directory, so `qemu-img convert` reads it by random access without the image ever being
 * written to local disk. Subclasses say where the bytes of a range come from. NBD rather than
 * HTTP: QEMU's curl driver (qemu 7.2, libcurl 7.88) hangs after the last read of about one
 * conversion in 30 (docs/operations.md, "qemu-img and HTTP sources"); its nbd client does not.
 * Only the simple replies, `NBD_OPT_GO`/`INFO`/`EXPORT_NAME` and `NBD_CMD_READ`/`FLUSH`/`DISC`;
 * every other option is unsupported and every write is refused (EPERM).
 */
export abstract class RangeServer {
  readonly size: number;
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  private failure: { error: unknown } | undefined;
  private dir: string | undefined;
  /** Bytes served to qemu (for progress and tests). */
  servedBytes = 0;
  /** Largest offset qemu has asked for so far. */
  highestRequested = 0;
  /** Called once, on the first failure (the backend then stops qemu-img if it does not exit). */
  onFail: ((error: unknown) => void) | undefined;

  constructor(size: number) {
    this.size = size;
    this.server = createServer((s) => this.session(s));
  }

  /** Bytes [start, end] (inclusive; fewer only at the end of the image). */
  protected abstract read(start: number, end: number): Promise<Buffer>;

  /**
   * Starts listening on a Unix socket in a new directory only this user can enter, named after
   * this process; first removes the directories of processes that died (killed mid-conversion).
   */
  async listen(): Promise<void> {
    sweepDeadSocketDirs();
    this.dir = mkdtempSync(join(tmpdir(), `${DIR_PREFIX}${process.pid}-`));
    const path = join(this.dir, 's');
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(path, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
  }

  /** Where qemu-img reads from (after {@link listen}). */
  get location(): NbdLocation {
    if (!this.dir) throw new Error('the NBD server is not listening');
    return nbdLocation(join(this.dir, 's'));
  }

  /** The first error: of the source (read, hash, abort) or of a range it cannot serve. */
  get error(): unknown {
    return this.failure?.error;
  }

  /** Makes every pending and future read fail (qemu-img then exits on its own, cleanly). */
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

  /** Stops the server (open connections are cut) and removes its socket. Idempotent. */
  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    if (this.dir) rmSync(this.dir, { recursive: true, force: true });
  }

  /** One client connection: fixed-newstyle handshake, option haggling, then reads. */
  private session(sock: Socket): void {
    this.sockets.add(sock);
    sock.on('close', () => this.sockets.delete(sock));
    sock.on('error', () => undefined);
    if (this.failure) {
      sock.destroy();
      return;
    }
    const hello = Buffer.alloc(18);
    hello.write('NBDMAGIC', 0, 'latin1');
    hello.writeBigUInt64BE(IHAVEOPT, 8);
    hello.writeUInt16BE(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES, 16);
    sock.write(hello);
    let buf: Buffer = Buffer.alloc(0);
    let phase: 'flags' | 'options' | 'transmission' = 'flags';
    // Requests are answered one at a time, in order. Answering qemu's several in-flight reads
    // concurrently was tried: test workers then died of SIGABRT twice in a few runs (not found why).
    let queue: Promise<void> = Promise.resolve();
    sock.on('data', (d: Buffer) => {
      buf = buf.length ? Buffer.concat([buf, d]) : d;
      for (;;) {
        if (phase === 'flags') {
          if (buf.length < 4) return;
          buf = buf.subarray(4);
          phase = 'options';
        } else if (phase === 'options') {
          if (buf.length < 16) return;
          const len = buf.readUInt32BE(12);
          if (buf.length < 16 + len) return;
          if (buf.readBigUInt64BE(0) !== IHAVEOPT) return void sock.destroy();
          const opt = buf.readUInt32BE(8);
          buf = buf.subarray(16 + len);
          if (opt === OPT_GO || opt === OPT_INFO) {
            const info = Buffer.alloc(12);
            info.writeUInt16BE(INFO_EXPORT, 0);
            info.writeBigUInt64BE(BigInt(this.size), 2);
            info.writeUInt16BE(TX_HAS_FLAGS | TX_READ_ONLY, 10);
            sock.write(optionReply(opt, REP_INFO, info));
            sock.write(optionReply(opt, REP_ACK));
            if (opt === OPT_GO) phase = 'transmission';
          } else if (opt === OPT_EXPORT_NAME) {
            const out = Buffer.alloc(10);
            out.writeBigUInt64BE(BigInt(this.size), 0);
            out.writeUInt16BE(TX_HAS_FLAGS | TX_READ_ONLY, 8);
            sock.write(out);
            phase = 'transmission';
          } else if (opt === OPT_ABORT) {
            sock.end(optionReply(opt, REP_ACK));
            return;
          } else sock.write(optionReply(opt, REP_ERR_UNSUP));
        } else {
          if (buf.length < 28) return;
          if (buf.readUInt32BE(0) !== REQUEST_MAGIC) return void sock.destroy();
          const type = buf.readUInt16BE(6);
          const length = buf.readUInt32BE(24);
          // A write carries its data: skip it whole (refused below) to stay in step.
          const payload = type === CMD_WRITE ? length : 0;
          if (buf.length < 28 + payload) return;
          const handle = Buffer.from(buf.subarray(8, 16));
          const offset = Number(buf.readBigUInt64BE(16));
          buf = buf.subarray(28 + payload);
          if (type === CMD_DISC) return void sock.end();
          queue = queue.then(() => this.answer(sock, type, handle, offset, length));
        }
      }
    });
  }

  private async answer(sock: Socket, type: number, handle: Buffer, offset: number, length: number): Promise<void> {
    if (sock.destroyed) return;
    const reply = (error: number): Buffer => {
      const h = Buffer.alloc(16);
      h.writeUInt32BE(SIMPLE_REPLY_MAGIC, 0);
      h.writeUInt32BE(error, 4);
      handle.copy(h, 8);
      return h;
    };
    if (type === CMD_FLUSH) return void sock.write(reply(0));
    if (type !== CMD_READ) return void sock.write(reply(EPERM));
    if (length === 0 || length > MAX_READ || offset + length > this.size) return void sock.write(reply(EINVAL));
    this.highestRequested = Math.max(this.highestRequested, offset + length - 1);
    try {
      if (this.failure) throw this.failure.error;
      const data = await this.read(offset, offset + length - 1);
      if (data.length !== length) throw new Error(`short read: ${data.length} of ${length} bytes at ${offset}`);
      this.servedBytes += data.length;
      if (!sock.destroyed && !sock.writableEnded) sock.write(Buffer.concat([reply(0), data]));
    } catch {
      // The source's own error is kept by whoever failed it; qemu-img sees EIO and exits.
      if (!sock.destroyed && !sock.writableEnded) sock.write(reply(EIO));
    }
  }
}

const DIR_PREFIX = 'ephemera-nbd-';

/** Removes `ephemera-nbd-<pid>-*` directories whose process is gone. */
export function sweepDeadSocketDirs(root: string = tmpdir()): string[] {
  const removed: string[] = [];
  let names: string[];
  try {
    names = readdirSync(root);
  } catch {
    return removed;
  }
  for (const name of names) {
    const m = /^ephemera-nbd-(\d+)-/.exec(name);
    if (!m || alive(Number(m[1]))) continue;
    rmSync(join(root, name), { recursive: true, force: true });
    removed.push(name);
  }
  return removed;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function optionReply(opt: number, type: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(20);
  h.writeBigUInt64BE(REPLY_MAGIC, 0);
  h.writeUInt32BE(opt, 8);
  h.writeUInt32BE(type, 12);
  h.writeUInt32BE(data.length, 16);
  return Buffer.concat([h, data]);
}
