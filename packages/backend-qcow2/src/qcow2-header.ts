import { open, type FileHandle } from 'node:fs/promises';

/** One internal snapshot from a qcow2 snapshot table. */
export interface Qcow2Snapshot {
  /** Unique id string qemu gave it (`1`, `2`, ...). */
  readonly id: string;
  readonly name: string;
  /** Guest-visible size of the disk when the snapshot was taken (qcow2 v3 extra data), if recorded. */
  readonly diskSize: number | undefined;
}

/** What {@link readQcow2Header} reads from a qcow2 file's header. */
export interface Qcow2Header {
  readonly version: number;
  /** Guest-visible size in bytes. */
  readonly virtualSize: number;
  readonly clusterSize: number;
  /** The backing file name as stored in the header (absolute for the overlays this backend makes). */
  readonly backingFile: string | undefined;
  readonly snapshots: readonly Qcow2Snapshot[];
}

const QCOW2_MAGIC = 0x514649fb;
const MAX_SNAPSHOTS = 65536;
const MAX_BACKING_NAME = 1023;

async function readExact(fh: FileHandle, offset: number, length: number): Promise<Buffer> {
  const buf = Buffer.alloc(length);
  let got = 0;
  while (got < length) {
    const { bytesRead } = await fh.read(buf, got, length - got, offset + got);
    if (bytesRead === 0) throw new Error(`qcow2 header: unexpected end of file at ${offset + got}`);
    got += bytesRead;
  }
  return buf;
}

function u64(buf: Buffer, at: number): number {
  const v = buf.readBigUInt64BE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error(`qcow2 header: 64-bit field at ${at} out of range`);
  return Number(v);
}

/**
 * Reads the header, backing file name and internal snapshot table of a qcow2 file this backend
 * created (a trusted file: the format is known, never probed). Pure TypeScript, no qemu-img
 * process, so `info`/`list` stay cheap. Throws on anything that is not a sane qcow2 header.
 */
export async function readQcow2Header(path: string): Promise<Qcow2Header> {
  const fh = await open(path, 'r');
  try {
    const h = await readExact(fh, 0, 72);
    if (h.readUInt32BE(0) !== QCOW2_MAGIC) throw new Error(`${path}: not a qcow2 file`);
    const version = h.readUInt32BE(4);
    if (version !== 2 && version !== 3) throw new Error(`${path}: unsupported qcow2 version ${version}`);
    const backingOffset = u64(h, 8);
    const backingSize = h.readUInt32BE(16);
    const clusterBits = h.readUInt32BE(20);
    if (clusterBits < 9 || clusterBits > 21) throw new Error(`${path}: invalid cluster_bits ${clusterBits}`);
    const virtualSize = u64(h, 24);
    const nbSnapshots = h.readUInt32BE(60);
    const snapshotsOffset = u64(h, 64);
    let backingFile: string | undefined;
    if (backingOffset !== 0 && backingSize > 0) {
      if (backingSize > MAX_BACKING_NAME) throw new Error(`${path}: backing file name too long`);
      backingFile = (await readExact(fh, backingOffset, backingSize)).toString('utf8');
    }
    if (nbSnapshots > MAX_SNAPSHOTS) throw new Error(`${path}: too many snapshots (${nbSnapshots})`);
    const snapshots: Qcow2Snapshot[] = [];
    let at = snapshotsOffset;
    for (let i = 0; i < nbSnapshots; i++) {
      const e = await readExact(fh, at, 40);
      const idSize = e.readUInt16BE(12);
      const nameSize = e.readUInt16BE(14);
      const extraSize = e.readUInt32BE(36);
      if (extraSize > 1024) throw new Error(`${path}: snapshot extra data too large`);
      const rest = await readExact(fh, at + 40, extraSize + idSize + nameSize);
      const diskSize = extraSize >= 16 ? u64(rest, 8) : undefined;
      const id = rest.subarray(extraSize, extraSize + idSize).toString('utf8');
      const name = rest.subarray(extraSize + idSize, extraSize + idSize + nameSize).toString('utf8');
      snapshots.push({ id, name, diskSize });
      const len = 40 + extraSize + idSize + nameSize;
      at += Math.ceil(len / 8) * 8;
    }
    return { version, virtualSize, clusterSize: 2 ** clusterBits, backingFile, snapshots };
  } finally {
    await fh.close();
  }
}
