import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { DiskRef } from '@ephemera/image-backend';
import { Qcow2Backend, type Qcow2BackendOptions } from '../../src/index.js';

export const exec = promisify(execFile);

/** A real Qcow2Backend over a fresh temporary directory. */
export interface Fixture {
  root: string;
  backend: Qcow2Backend;
  /** Reads `length` guest-visible bytes at `offset` of a disk through qemu-img (its real format). */
  read(disk: DiskRef, length: number, offset?: number): Promise<Uint8Array>;
  destroy(): Promise<void>;
}

export async function createFixture(options: Partial<Qcow2BackendOptions> = {}): Promise<Fixture> {
  const root = await mkdtemp(join(tmpdir(), 'ephemera-qcow2-test-'));
  const backend = await Qcow2Backend.create({ instancesDir: join(root, 'instances'), ...options });
  return {
    root,
    backend,
    read: (disk, length, offset = 0) => readGuestBytes(backend, disk, length, offset, root),
    destroy: () => rm(root, { recursive: true, force: true }),
  };
}

let seq = 0;

/** Guest-visible bytes of a disk, via `qemu-img dd` with the disk's known format (never probed). */
export async function readGuestBytes(
  backend: Qcow2Backend,
  disk: DiskRef,
  length: number,
  offset: number,
  scratch: string,
): Promise<Uint8Array> {
  const src = await backend.diskSource(disk);
  const out = join(scratch, `read-${process.pid}-${seq++}.raw`);
  const bs = 512;
  const skip = Math.floor(offset / bs);
  // qemu-img dd's count is where copying ends, in blocks from the start (it includes skip).
  const count = Math.ceil((offset + length) / bs);
  try {
    await exec(
      'qemu-img',
      [
        'dd',
        '-f',
        src.format,
        '-O',
        'raw',
        `bs=${bs}`,
        `skip=${skip}`,
        `count=${count}`,
        `if=${src.path}`,
        `of=${out}`,
      ],
      {
        timeout: 60_000,
      },
    );
    const buf = await readFile(out);
    const at = offset - skip * bs;
    if (buf.length < at + length)
      throw new Error(`read ${buf.length - at} of ${length} bytes at ${offset} of ${src.path}`);
    return buf.subarray(at, at + length);
  } finally {
    await rm(out, { force: true });
  }
}

/** `qemu-img info --output=json` of a file we made, format given (no probing). */
export async function qemuInfo(path: string, format: string, chain = false): Promise<Record<string, unknown>[]> {
  const args = ['info', '--output=json', '--force-share', '-f', format];
  if (chain) args.push('--backing-chain');
  const { stdout } = await exec('qemu-img', [...args, path], { timeout: 30_000 });
  const j = JSON.parse(stdout) as Record<string, unknown> | Record<string, unknown>[];
  return Array.isArray(j) ? j : [j];
}
