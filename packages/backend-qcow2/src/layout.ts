// Where disks live: `<instancesDir>/<uuid>_<name>/disk.qcow2|disk.raw`, the format fixed by the
// file name; finding, describing, claiming and publishing disk directories.
import { mkdir, readFile, readdir, realpath, rename, stat, statfs } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import {
  AlreadyExistsError,
  InsufficientCapacityError,
  InvalidArgumentError,
  NotFoundError,
  formatOwner,
  parseDiskId,
  parseOwner,
  type Capacity,
  type DiskFormat,
  type DiskInfo,
  type DiskOwner,
} from '@ephemera/image-backend';
import { toContractError } from './errors.js';
import { errno, fsyncPath, writeFileAtomic } from './fsutil.js';
import { readQcow2Header } from './qcow2-header.js';

/** @internal the backend's name in errors and disk records. */
export const NAME = 'qcow2';
const DISK_FILES: readonly [string, DiskFormat][] = [
  ['disk.qcow2', 'qcow2'],
  ['disk.raw', 'raw'],
];
/** @internal the owner record's sidecar in a disk's directory (written before the directory is published). */
export const OWNER_FILE = 'owner.json';

/** @internal the owner record of a disk directory; `null` when there is none (or it is not ours). */
export async function readOwner(dir: string): Promise<DiskOwner | null> {
  try {
    return parseOwner(await readFile(join(dir, OWNER_FILE), 'utf8'));
  } catch (e) {
    if (errno(e) === 'ENOENT') return null;
    throw e;
  }
}

/** @internal writes the owner record of a disk directory atomically (rename over the old one). */
export async function writeOwner(dir: string, owner: DiskOwner): Promise<void> {
  await writeFileAtomic(join(dir, OWNER_FILE), `${formatOwner(owner)}\n`);
}

/** @internal the encryption sidecar (format and libvirt secret UUID; never the key) of an encrypted disk. */
export const ENCRYPTION_FILE = 'encryption.json';

/** @internal the encryption of a disk directory, `undefined` when the disk is plain. */
export async function readEncryption(dir: string): Promise<{ format: 'luks'; secretUuid: string } | undefined> {
  try {
    const o = JSON.parse(await readFile(join(dir, ENCRYPTION_FILE), 'utf8')) as { secretUuid?: unknown };
    if (typeof o.secretUuid !== 'string') return undefined;
    return { format: 'luks', secretUuid: o.secretUuid };
  } catch (e) {
    if (errno(e) === 'ENOENT') return undefined;
    throw e;
  }
}

/** @internal writes the encryption sidecar (before the directory is published). */
export async function writeEncryption(dir: string, secretUuid: string): Promise<void> {
  await writeFileAtomic(join(dir, ENCRYPTION_FILE), `${JSON.stringify({ format: 'luks', secretUuid })}\n`);
}

/** @internal temporary directories of creates in progress (any process); swept by `cleanupBases` after this age. */
export const TEMP_MAX_AGE_MS = 3_600_000;

/** @internal where a disk lives. */
export interface DiskLocation {
  readonly id: string;
  readonly dir: string;
  readonly path: string;
  readonly format: DiskFormat;
}

/** @internal the instance disk directories of one backend. */
export class DiskStore {
  /** Disks being created by this process. */
  readonly pending = new Set<string>();
  #dirs: Promise<void> | undefined;

  constructor(
    readonly instancesDir: string,
    readonly baseDir: string,
  ) {}

  async capacity(): Promise<Capacity> {
    await this.ensureDirs();
    const s = await statfs(this.instancesDir);
    return { totalBytes: Number(s.blocks) * Number(s.bsize), freeBytes: Number(s.bavail) * Number(s.bsize) };
  }

  /** Absolute paths of every base a disk (or a disk being created) has as backing file. */
  async referencedBases(): Promise<Set<string>> {
    const refs = new Set<string>();
    for (const name of await this.entries()) {
      if (!parseDiskId(name) && !name.startsWith('.tmp-')) continue;
      const dir = join(this.instancesDir, name);
      const file = join(dir, 'disk.qcow2');
      let backing: string | undefined;
      try {
        backing = (await readQcow2Header(file)).backingFile;
      } catch {
        continue; // no qcow2 disk there (raw, being built, or gone)
      }
      if (!backing) continue;
      const abs = resolve(dir, backing);
      refs.add(abs);
      refs.add(await realpath(abs).catch(() => abs));
    }
    return refs;
  }

  async ensureDirs(): Promise<void> {
    this.#dirs ??= (async () => {
      await mkdir(this.instancesDir, { recursive: true, mode: 0o755 });
      await mkdir(this.baseDir, { recursive: true, mode: 0o755 });
    })().catch((e) => {
      this.#dirs = undefined;
      throw toContractError(e, { backend: NAME, what: `creating ${this.instancesDir}` });
    });
    return this.#dirs;
  }

  async entries(): Promise<string[]> {
    try {
      return await readdir(this.instancesDir);
    } catch (e) {
      if (errno(e) === 'ENOENT') return [];
      throw toContractError(e, { backend: NAME, what: this.instancesDir });
    }
  }

  async locate(id: string): Promise<DiskLocation | undefined> {
    const dir = join(this.instancesDir, id);
    let names: string[];
    try {
      names = await readdir(dir);
    } catch (e) {
      const c = errno(e);
      if (c === 'ENOENT' || c === 'ENOTDIR') return undefined;
      throw toContractError(e, { backend: NAME, diskId: id });
    }
    for (const [file, format] of DISK_FILES) {
      if (names.includes(file)) return { id, dir, path: join(dir, file), format };
    }
    return undefined;
  }

  async describe(loc: DiskLocation): Promise<DiskInfo> {
    const ref = parseDiskId(loc.id)!;
    try {
      const owner = await readOwner(loc.dir);
      const encrypted = (await readEncryption(loc.dir)) !== undefined;
      if (loc.format === 'raw') {
        const st = await stat(loc.path);
        return { disk: ref, id: loc.id, sizeBytes: st.size, format: 'raw', encrypted: false, owner };
      }
      const h = await readQcow2Header(loc.path);
      return {
        disk: ref,
        id: loc.id,
        sizeBytes: h.virtualSize,
        format: 'qcow2',
        ...(h.backingFile ? { parent: resolve(loc.dir, h.backingFile) } : {}),
        encrypted,
        owner,
      };
    } catch (e) {
      if (errno(e) === 'ENOENT') throw this.notFound(loc.id);
      throw toContractError(e, { backend: NAME, diskId: loc.id });
    }
  }

  async snapshotTarget(id: string, operation: string): Promise<DiskLocation> {
    const loc = await this.locate(id);
    if (!loc) throw this.notFound(id);
    if (loc.format !== 'qcow2')
      throw new InvalidArgumentError('disk', `${operation}: ${id} is a raw disk; internal snapshots need qcow2`, {
        backend: NAME,
        diskId: id,
      });
    return loc;
  }

  /** Claims a disk name in this process, then checks that no process made it already. */
  async claim(id: string): Promise<void> {
    if (this.pending.has(id))
      throw new AlreadyExistsError(`disk ${id} is being created`, { backend: NAME, diskId: id });
    this.pending.add(id);
    try {
      if (await this.locate(id))
        throw new AlreadyExistsError(`disk ${id} exists in ${this.instancesDir}`, { backend: NAME, diskId: id });
    } catch (e) {
      this.pending.delete(id);
      throw e;
    }
  }

  /** Renames the finished temporary directory into place: atomic, and fails if the disk exists. */
  async publish(tmp: string, id: string): Promise<void> {
    try {
      await rename(tmp, join(this.instancesDir, id));
    } catch (e) {
      const c = errno(e);
      if (c === 'ENOTEMPTY' || c === 'EEXIST' || c === 'ENOTDIR' || c === 'EISDIR')
        throw new AlreadyExistsError(`disk ${id} exists in ${this.instancesDir}`, {
          backend: NAME,
          diskId: id,
          cause: e,
        });
      throw e;
    }
    await fsyncPath(this.instancesDir);
  }

  async checkFree(bytes: number, id: string): Promise<void> {
    const { freeBytes } = await this.capacity();
    if (bytes > freeBytes)
      throw new InsufficientCapacityError(`${id}: need ${bytes} bytes, ${freeBytes} free in ${this.instancesDir}`, {
        backend: NAME,
        diskId: id,
        requestedBytes: bytes,
        availableBytes: freeBytes,
      });
  }

  notFound(id: string): NotFoundError {
    return new NotFoundError(`disk ${id} not found in ${this.instancesDir}`, { backend: NAME, diskId: id });
  }
}

/** @internal runs a qemu-img call, its failure mapped to the contract's errors. */
export async function qemuCall(id: string, fn: () => Promise<void>, signal?: AbortSignal): Promise<void> {
  try {
    await fn();
  } catch (e) {
    throw toContractError(e, { backend: NAME, diskId: id, signal });
  }
}

/** @internal */
export function roundUp(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}
