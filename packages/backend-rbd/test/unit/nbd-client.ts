// A minimal NBD client (fixed newstyle, NBD_OPT_GO, simple replies) to test the loopback server
// at the protocol level, as qemu's nbd driver talks to it.
import { connect, type Socket } from 'node:net';

export interface NbdReply {
  error: number;
  data: Buffer;
}

export interface NbdClient {
  size: number;
  flags: number;
  /** Replies to an unknown option seen during the handshake (its reply type). */
  unsupportedReply: number;
  read(offset: number, length: number): Promise<NbdReply>;
  /** Sends a write (which a read-only export must refuse). */
  write(offset: number, data: Buffer): Promise<NbdReply>;
  close(): void;
}

/** Connects, asks an unknown option (20), then NBD_OPT_GO; resolves once in transmission. */
export async function nbdConnect(path: string): Promise<NbdClient> {
  const sock: Socket = connect(path);
  let buf = Buffer.alloc(0);
  let waiter: (() => void) | undefined;
  let closed = false;
  sock.on('data', (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    waiter?.();
  });
  sock.on('close', () => {
    closed = true;
    waiter?.();
  });
  sock.on('error', () => undefined);
  const take = async (n: number): Promise<Buffer> => {
    while (buf.length < n) {
      if (closed) throw new Error('connection closed');
      await new Promise<void>((r) => (waiter = r));
    }
    const out = buf.subarray(0, n);
    buf = buf.subarray(n);
    return out;
  };
  const hello = await take(18);
  if (hello.toString('latin1', 0, 8) !== 'NBDMAGIC') throw new Error('not an NBD server');
  sock.write(Buffer.from([0, 0, 0, 3]));
  const option = (opt: number, data: Buffer = Buffer.alloc(0)): void => {
    const h = Buffer.alloc(16);
    h.writeBigUInt64BE(0x49484156454f5054n, 0);
    h.writeUInt32BE(opt, 8);
    h.writeUInt32BE(data.length, 12);
    sock.write(Buffer.concat([h, data]));
  };
  const optionReply = async (): Promise<{ type: number; data: Buffer }> => {
    const h = await take(20);
    return { type: h.readUInt32BE(12), data: await take(h.readUInt32BE(16)) };
  };
  option(20);
  const unsupportedReply = (await optionReply()).type;
  option(7, Buffer.alloc(6)); // NBD_OPT_GO: empty name, no info requests
  let size = 0;
  let flags = 0;
  for (;;) {
    const r = await optionReply();
    if (r.type === 3 && r.data.readUInt16BE(0) === 0) {
      size = Number(r.data.readBigUInt64BE(2));
      flags = r.data.readUInt16BE(10);
    } else if (r.type === 1) break;
    else throw new Error(`NBD_OPT_GO: reply type ${r.type}`);
  }
  let next = 1n;
  const request = async (type: number, offset: number, length: number, payload?: Buffer): Promise<NbdReply> => {
    const h = Buffer.alloc(28);
    h.writeUInt32BE(0x25609513, 0);
    h.writeUInt16BE(type, 6);
    h.writeBigUInt64BE(next++, 8);
    h.writeBigUInt64BE(BigInt(offset), 16);
    h.writeUInt32BE(length, 24);
    sock.write(payload ? Buffer.concat([h, payload]) : h);
    const r = await take(16);
    const error = r.readUInt32BE(4);
    return { error, data: type === 0 && error === 0 ? Buffer.from(await take(length)) : Buffer.alloc(0) };
  };
  return {
    size,
    flags,
    unsupportedReply,
    read: (offset, length) => request(0, offset, length),
    write: (offset, data) => request(1, offset, data.length, data),
    close: () => sock.destroy(),
  };
}
