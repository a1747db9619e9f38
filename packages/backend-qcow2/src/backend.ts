import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, realpath, rename, rm, stat, statfs } from 'node:fs/promises';
import { isAbsolute, join, resolve } from 'node:path';
import {
  AlreadyExistsError,
  BusyError,
  IMAGE_BACKEND_API_VERSION,
  InsufficientCapacityError,
  InvalidArgumentError,
  NotFoundError,
  ProgressReporter,
  UnsupportedOperationError,
  assertValidSize,
  assertValidSnapshotName,
  diskId,
  isImageBackendError,
  listFilterPrefix,
  parseDiskId,
  retryWhileBusy,
  throwIfAborted,
  type BackendCapabilities,
  type Capacity,
  type CreateBlankOptions,
  type CreateFromImageOptions,
  type CreateResult,
  type DirectSnapshotResult,
  type DiskFormat,
  type DiskInfo,
  type DiskRef,
  type FileDiskSource,
  type ImageBackend,
  type ListFilter,
  type OperationOptions,
  type ProgressEvent,
  type RemoveOptions,
  type SnapshotInfo,
  type SourceImage,
} from '@ephemera/image-backend';
import { QemuImg } from '@ephemera/qemu-img-wrapper';
import { ACCEPTED_DISK_FORMATS, BaseCache, type CacheCleanupResult, type CachedBase } from './base-cache.js';
import { toContractError } from './errors.js';
import { errno, fsyncPath } from './fsutil.js';
import { processesHoldingOpen as openers } from '@ephemera/image-backend';
import { readQcow2Header } from './qcow2-header.js';

/** `preallocation` of new qcow2/raw files (`qemu-img create -o preallocation=`). */
export type Preallocation = 'off' | 'metadata' | 'falloc' | 'full';

/** Configuration of {@link Qcow2Backend}. */
export interface Qcow2BackendOptions {
  /** Directory of the instance disks (created if missing). Disk `<uuid>_<name>` lives in `<instancesDir>/<uuid>_<name>/`. */
  readonly instancesDir: string;
  /** The shared image cache (default `<instancesDir>/_base`). */
  readonly baseDir?: string;
  /**
   * Convert non-raw images (qcow2, vmdk, ...) to raw once when they enter the cache, as Nova's
   * `force_raw_images` (default true). When false, qcow2 images are cached as qcow2 (other
   * formats are always converted).
   */
  readonly forceRaw?: boolean;
  /**
   * Preallocation of blank disks (default `off`). `falloc`/`full` make the backend thick: it
   * then refuses blank disks larger than the free space. Overlays are never preallocated.
   */
  readonly preallocation?: Preallocation;
  /** qcow2 `cluster_size` of new disks and overlays (default qemu's 64 KiB). */
  readonly clusterSize?: number;
  /** Default age for {@link Qcow2Backend.cleanupBases}: bases unused for this long go (default 24 h). */
  readonly baseMaxAgeMs?: number;
  /** Timeout of short qemu-img commands (create, resize, snapshot; default 60 s). */
  readonly commandTimeoutMs?: number;
  /** Timeout of long qemu-img commands (convert into the cache, flatten; default 1 h). */
  readonly convertTimeoutMs?: number;
  /** Default `busyTimeoutMs` of `remove` (default 10 s). */
  readonly busyTimeoutMs?: number;
  /** A cache lock not refreshed for this long belongs to a dead process and is taken over (default 10 s, min 2 s). */
  readonly lockStaleMs?: number;
  /** Refuse images whose virtual size exceeds this (bytes). */
  readonly maxImageVirtualSize?: number;
  /** qemu-img binary (default `qemu-img` on PATH). */
  readonly qemuImgBinary?: string;
}

/** Where a disk lives. */
interface DiskLocation {
  readonly id: string;
  readonly dir: string;
  readonly path: string;
  readonly format: DiskFormat;
}

const NAME = 'qcow2';
const DISK_FILES: readonly [string, DiskFormat][] = [
  ['disk.qcow2', 'qcow2'],
  ['disk.raw', 'raw'],
];
/** Temporary directories of creates in progress (any process); swept by `cleanupBases` after this age. */
const TEMP_MAX_AGE_MS = 3_600_000;

/**
 * The qcow2 image backend: each instance disk is a file, a qcow2 overlay on a raw (or qcow2)
 * base image from a host-wide cache, with the backing format written into the overlay (`-F`),
 * so qemu never probes a format.
 *
 * Layout: `<instancesDir>/<uuid>_<name>/disk.qcow2` (or `disk.raw` for raw blank disks). The
 * directory is built under a temporary name and renamed into place, so a disk appears
 * atomically with its format fixed by its file name (never by its content), and of two creates
 * of one disk, in any processes, exactly one wins. `remove` renames it away first.
 *
 * The cache (`<baseDir>`, default `<instancesDir>/_base`) holds one file per image named by
 * `sha1(image id)`; see {@link BaseCache}.
 */
export class Qcow2Backend implements ImageBackend {
  readonly name = NAME;
  readonly apiVersion = IMAGE_BACKEND_API_VERSION;
  readonly capabilities: Readonly<BackendCapabilities>;
  readonly diskFormats: readonly DiskFormat[] = Object.freeze(['qcow2', 'raw'] as const);

  /** Absolute directory of the instance disks. */
  readonly instancesDir: string;
  /** Absolute directory of the image cache. */
  readonly baseDir: string;
  /** Whether images enter the cache as raw. */
  readonly forceRaw: boolean;

  private readonly preallocation: Preallocation;
  private readonly clusterSize: number | undefined;
  private readonly baseMaxAgeMs: number;
  private readonly commandTimeoutMs: number;
  private readonly convertTimeoutMs: number;
  private readonly busyTimeoutMs: number;
  private readonly qemu: QemuImg;
  private readonly cache: BaseCache;
  private readonly pending = new Set<string>();
  private dirs: Promise<void> | undefined;

  constructor(options: Qcow2BackendOptions) {
    if (!options || typeof options.instancesDir !== 'string' || !isAbsolute(options.instancesDir))
      throw new InvalidArgumentError('instancesDir', 'an absolute directory path is required', { backend: NAME });
    if (options.baseDir !== undefined && (typeof options.baseDir !== 'string' || !isAbsolute(options.baseDir)))
      throw new InvalidArgumentError('baseDir', 'must be an absolute directory path', { backend: NAME });
    const prealloc = options.preallocation ?? 'off';
    if (!['off', 'metadata', 'falloc', 'full'].includes(prealloc))
      throw new InvalidArgumentError('preallocation', `expected off, metadata, falloc or full, got ${String(prealloc)}`, { backend: NAME });
    if (options.clusterSize !== undefined) {
      const c = options.clusterSize;
      if (!Number.isSafeInteger(c) || c < 512 || c > 2 * 1024 * 1024 || (c & (c - 1)) !== 0)
        throw new InvalidArgumentError('clusterSize', 'a power of two between 512 and 2 MiB', { backend: NAME });
    }
    for (const k of ['baseMaxAgeMs', 'commandTimeoutMs', 'convertTimeoutMs', 'busyTimeoutMs', 'lockStaleMs', 'maxImageVirtualSize'] as const) {
      const v = options[k];
      if (v !== undefined && (!Number.isSafeInteger(v) || v < 0)) throw new InvalidArgumentError(k, 'a non-negative integer', { backend: NAME });
    }
    this.instancesDir = resolve(options.instancesDir);
    this.baseDir = resolve(options.baseDir ?? join(this.instancesDir, '_base'));
    this.forceRaw = options.forceRaw ?? true;
    this.preallocation = prealloc;
    this.clusterSize = options.clusterSize;
    this.baseMaxAgeMs = options.baseMaxAgeMs ?? 24 * 3_600_000;
    this.commandTimeoutMs = options.commandTimeoutMs ?? 60_000;
    this.convertTimeoutMs = options.convertTimeoutMs ?? 3_600_000;
    this.busyTimeoutMs = options.busyTimeoutMs ?? 10_000;
    this.qemu = new QemuImg({ timeoutMs: this.commandTimeoutMs, ...(options.qemuImgBinary ? { binary: options.qemuImgBinary } : {}) });
    this.cache = new BaseCache({
      dir: this.baseDir,
      qemuImg: this.qemu,
      forceRaw: this.forceRaw,
      lockStaleMs: Math.max(options.lockStaleMs ?? 10_000, 2_000),
      convertTimeoutMs: this.convertTimeoutMs,
      maxVirtualSize: options.maxImageVirtualSize,
      backend: NAME,
    });
    const thick = prealloc === 'falloc' || prealloc === 'full';
    this.capabilities = Object.freeze({
      clone: true,
      snapshot: true,
      rollback: true,
      flatten: true,
      resize: true,
      sharedStorage: false,
      directSnapshot: false,
      encryption: false,
      discard: true,
      thin: !thick,
    });
  }

  /** Builds a backend and creates its directories. */
  static async create(options: Qcow2BackendOptions): Promise<Qcow2Backend> {
    const b = new Qcow2Backend(options);
    await b.ensureDirs();
    return b;
  }

  // --- the contract ---

  async exists(disk: DiskRef): Promise<boolean> {
    return (await this.locate(diskId(disk))) !== undefined;
  }

  async info(disk: DiskRef): Promise<DiskInfo> {
    const id = diskId(disk);
    const loc = await this.locate(id);
    if (!loc) throw this.notFound(id);
    return this.describe(loc);
  }

  async createFromImage(disk: DiskRef, image: SourceImage, options: CreateFromImageOptions = {}): Promise<CreateResult> {
    const started = Date.now();
    const id = diskId(disk);
    const ctx = { backend: NAME, diskId: id };
    if (options.encryption) throw new UnsupportedOperationError('encryption', 'createFromImage', ctx);
    if (options.sizeBytes !== undefined) assertValidSize(options.sizeBytes, 'options.sizeBytes');
    this.checkImage(image, id);
    const { signal } = options;
    throwIfAborted(signal, 'createFromImage');
    await this.claim(id);
    const progress = new ProgressReporter(options.onProgress);
    let tmp: string | undefined;
    try {
      await this.ensureDirs();
      const lease = await this.cache.acquire(image, { signal, progress });
      let base: CachedBase;
      let sizeBytes: number;
      try {
        base = lease.base;
        if (options.sizeBytes !== undefined && options.sizeBytes < base.virtualSize)
          throw new InvalidArgumentError('options.sizeBytes', `${options.sizeBytes} is smaller than the image's virtual size ${base.virtualSize}`, ctx);
        sizeBytes = roundUp(Math.max(options.sizeBytes ?? 0, base.virtualSize), 512);
        tmp = await mkdtemp(join(this.instancesDir, `.tmp-${id}-`));
        const file = join(tmp, 'disk.qcow2');
        if (options.forceImport) {
          // A standalone copy: no backing file, nothing shared with the cache.
          await this.qemu.convert(base.path, file, {
            sourceFormat: base.format,
            targetFormat: 'qcow2',
            untrusted: false,
            ...(this.clusterSize ? { targetOptions: { cluster_size: this.clusterSize } } : {}),
            timeoutMs: this.convertTimeoutMs,
            ...(signal ? { signal } : {}),
            onProgress: (pct) => progress.report('import', Math.floor((pct / 100) * base.virtualSize), base.virtualSize),
          });
          if (sizeBytes > base.virtualSize) await this.qemu.resize(file, sizeBytes, { format: 'qcow2', ...(signal ? { signal } : {}) });
        } else {
          progress.report('clone', 0, sizeBytes);
          await this.qemu.create(file, {
            format: 'qcow2',
            backing: { file: base.path, format: base.format },
            size: sizeBytes,
            ...(this.clusterSize ? { clusterSize: this.clusterSize } : {}),
            ...(signal ? { signal } : {}),
          });
        }
      } finally {
        // The overlay exists (in its temporary directory, which cleanup scans too): the base
        // is referenced from now on.
        await lease.release();
      }
      throwIfAborted(signal, 'createFromImage');
      await this.publish(tmp, id);
      tmp = undefined;
      const fetched = lease.bytesFetched;
      progress.finish(lease.fetched ? fetched : base.virtualSize, lease.fetched ? image.size : base.virtualSize);
      const durationMs = Date.now() - started;
      if (options.forceImport) {
        return {
          method: 'imported',
          reason: 'forceImport: a standalone qcow2 copy of the image, without a backing file',
          bytesWritten: base.virtualSize,
          sizeBytes,
          durationMs,
        };
      }
      if (lease.fetched) {
        return {
          method: 'imported',
          reason: `qcow2 backend: image fetched into the host cache (${base.format} base); the disk is a qcow2 overlay on it`,
          bytesWritten: fetched,
          sizeBytes,
          durationMs,
        };
      }
      return { method: 'cloned', sizeBytes, durationMs };
    } catch (e) {
      if (tmp) await rm(tmp, { recursive: true, force: true }).catch(() => undefined);
      throw toContractError(e, { ...ctx, signal });
    } finally {
      this.pending.delete(id);
    }
  }

  async createBlank(disk: DiskRef, sizeBytes: number, options: CreateBlankOptions = {}): Promise<CreateResult> {
    const started = Date.now();
    const id = diskId(disk);
    const ctx = { backend: NAME, diskId: id };
    assertValidSize(sizeBytes);
    const format = options.format ?? this.diskFormats[0]!;
    if (!this.diskFormats.includes(format)) throw new InvalidArgumentError('options.format', `expected qcow2 or raw, got ${JSON.stringify(format)}`, ctx);
    if (options.encryption) throw new UnsupportedOperationError('encryption', 'createBlank', ctx);
    const { signal } = options;
    throwIfAborted(signal, 'createBlank');
    await this.claim(id);
    let tmp: string | undefined;
    try {
      await this.ensureDirs();
      const size = roundUp(sizeBytes, 512);
      if (!this.capabilities.thin) await this.checkFree(size, id);
      tmp = await mkdtemp(join(this.instancesDir, `.tmp-${id}-`));
      const prealloc = format === 'raw' && this.preallocation === 'metadata' ? 'off' : this.preallocation;
      await this.qemu.create(join(tmp, `disk.${format}`), {
        format,
        size,
        ...(format === 'qcow2' && this.clusterSize ? { clusterSize: this.clusterSize } : {}),
        ...(prealloc !== 'off' ? { preallocation: prealloc } : {}),
        ...(prealloc === 'full' || prealloc === 'falloc' ? { timeoutMs: this.convertTimeoutMs } : {}),
        ...(signal ? { signal } : {}),
      });
      throwIfAborted(signal, 'createBlank');
      await this.publish(tmp, id);
      tmp = undefined;
      return { method: 'blank', sizeBytes: size, durationMs: Date.now() - started };
    } catch (e) {
      if (tmp) await rm(tmp, { recursive: true, force: true }).catch(() => undefined);
      throw toContractError(e, { ...ctx, signal });
    } finally {
      this.pending.delete(id);
    }
  }

  async resize(disk: DiskRef, sizeBytes: number, options: OperationOptions = {}): Promise<void> {
    const id = diskId(disk);
    assertValidSize(sizeBytes);
    const { signal } = options;
    throwIfAborted(signal, 'resize');
    const loc = await this.locate(id);
    if (!loc) throw this.notFound(id);
    const current = (await this.describe(loc)).sizeBytes;
    if (sizeBytes < current)
      throw new InvalidArgumentError('sizeBytes', `${sizeBytes} is smaller than the disk (${current} bytes): shrinking is not supported`, { backend: NAME, diskId: id });
    const size = roundUp(sizeBytes, 512);
    if (size === current) return;
    const thick = !this.capabilities.thin;
    if (thick) await this.checkFree(size - current, id);
    try {
      await this.qemu.resize(loc.path, size, {
        format: loc.format,
        ...(thick && (loc.format === 'raw' || !(await this.describe(loc)).parent) ? { preallocation: this.preallocation } : {}),
        ...(signal ? { signal } : {}),
      });
    } catch (e) {
      throw toContractError(e, { backend: NAME, diskId: id, signal });
    }
  }

  async createSnapshot(disk: DiskRef, snapshot: string): Promise<SnapshotInfo> {
    const id = diskId(disk);
    assertValidSnapshotName(snapshot);
    const loc = await this.snapshotTarget(id, 'createSnapshot');
    const header = await readQcow2Header(loc.path);
    if (header.snapshots.some((s) => s.name === snapshot))
      throw new AlreadyExistsError(`snapshot ${snapshot} of ${id} exists`, { backend: NAME, diskId: id });
    await this.qemuCall(id, () => this.qemu.createSnapshot(loc.path, snapshot, { format: 'qcow2' }));
    return { name: snapshot, sizeBytes: header.virtualSize };
  }

  async listSnapshots(disk: DiskRef): Promise<SnapshotInfo[]> {
    const id = diskId(disk);
    const loc = await this.locate(id);
    if (!loc) throw this.notFound(id);
    if (loc.format !== 'qcow2') return [];
    const header = await readQcow2Header(loc.path);
    return header.snapshots.map((s) => ({ name: s.name, sizeBytes: s.diskSize ?? header.virtualSize }));
  }

  async removeSnapshot(disk: DiskRef, snapshot: string): Promise<boolean> {
    const id = diskId(disk);
    assertValidSnapshotName(snapshot);
    const loc = await this.locate(id);
    if (!loc) throw this.notFound(id);
    if (loc.format !== 'qcow2') return false;
    if (!(await readQcow2Header(loc.path)).snapshots.some((s) => s.name === snapshot)) return false;
    await this.qemuCall(id, () => this.qemu.deleteSnapshot(loc.path, snapshot, { format: 'qcow2' }));
    return true;
  }

  async rollbackToSnapshot(disk: DiskRef, snapshot: string): Promise<void> {
    const id = diskId(disk);
    assertValidSnapshotName(snapshot);
    const loc = await this.locate(id);
    if (!loc) throw this.notFound(id);
    if (loc.format !== 'qcow2' || !(await readQcow2Header(loc.path)).snapshots.some((s) => s.name === snapshot))
      throw new NotFoundError(`snapshot ${snapshot} of ${id} not found`, { backend: NAME, diskId: id });
    await this.qemuCall(id, () => this.qemu.applySnapshot(loc.path, snapshot, { format: 'qcow2' }));
  }

  /**
   * Copies the base's data into the overlay (`qemu-img rebase -b ''`, safe mode) so the disk no
   * longer depends on the cache. A disk with internal snapshots is refused (their unallocated
   * clusters would lose the data they read from the base): remove the snapshots first.
   */
  async flatten(disk: DiskRef, options: OperationOptions = {}): Promise<void> {
    const id = diskId(disk);
    const { signal } = options;
    throwIfAborted(signal, 'flatten');
    const loc = await this.locate(id);
    if (!loc) throw this.notFound(id);
    if (loc.format !== 'qcow2') return;
    const header = await readQcow2Header(loc.path);
    if (!header.backingFile) return;
    if (header.snapshots.length > 0)
      throw new InvalidArgumentError('disk', `${id} has internal snapshots (${header.snapshots.map((s) => s.name).join(', ')}): remove them before flatten`, {
        backend: NAME,
        diskId: id,
      });
    await this.qemuCall(
      id,
      () => this.qemu.rebase(loc.path, { format: 'qcow2', backing: null, timeoutMs: this.convertTimeoutMs, ...(signal ? { signal } : {}) }),
      signal,
    );
  }

  async directSnapshot(disk: DiskRef): Promise<DirectSnapshotResult> {
    throw new UnsupportedOperationError('directSnapshot', 'directSnapshot', { backend: NAME, diskId: diskId(disk) });
  }

  async remove(disk: DiskRef, options: RemoveOptions = {}): Promise<boolean> {
    const id = diskId(disk);
    return retryWhileBusy(
      async () => {
        if (this.pending.has(id)) throw new BusyError(`${id} is being created`, { backend: NAME, diskId: id });
        const loc = await this.locate(id);
        if (!loc) return false;
        const pids = await openers(loc.path);
        if (pids.length > 0) throw new BusyError(`${id} is open (${loc.path}) by pid ${pids.join(', ')}`, { backend: NAME, diskId: id });
        const trash = join(this.instancesDir, `.trash-${id}-${randomBytes(6).toString('hex')}`);
        try {
          await rename(loc.dir, trash);
        } catch (e) {
          if (errno(e) === 'ENOENT') return false;
          throw toContractError(e, { backend: NAME, diskId: id });
        }
        await rm(trash, { recursive: true, force: true });
        return true;
      },
      { timeoutMs: options.busyTimeoutMs ?? this.busyTimeoutMs, ...(options.signal ? { signal: options.signal } : {}) },
    );
  }

  async list(filter: ListFilter = {}): Promise<DiskInfo[]> {
    const prefix = listFilterPrefix(filter, NAME);
    const out: DiskInfo[] = [];
    for (const name of await this.entries()) {
      if (prefix !== undefined && !name.startsWith(prefix)) continue;
      if (!parseDiskId(name)) continue;
      const loc = await this.locate(name);
      if (!loc) continue;
      try {
        out.push(await this.describe(loc));
      } catch (e) {
        if (!isImageBackendError(e, 'NOT_FOUND')) throw e;
      }
    }
    return out.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  async capacity(): Promise<Capacity> {
    await this.ensureDirs();
    const s = await statfs(this.instancesDir);
    return { totalBytes: Number(s.blocks) * Number(s.bsize), freeBytes: Number(s.bavail) * Number(s.bsize) };
  }

  async diskSource(disk: DiskRef): Promise<FileDiskSource> {
    const id = diskId(disk);
    const loc = await this.locate(id);
    if (!loc) throw this.notFound(id);
    return { type: 'file', path: loc.path, format: loc.format };
  }

  async close(): Promise<void> {}

  // --- beyond the contract ---

  /**
   * Puts an image into the host cache (or finds it there) without making a disk: pre-caching
   * before a burst of spawns. `fetched` says whether this call downloaded it.
   */
  async cacheImage(
    image: SourceImage,
    options: OperationOptions & { onProgress?: (event: ProgressEvent) => void } = {},
  ): Promise<{ base: CachedBase; fetched: boolean }> {
    this.checkImage(image, undefined);
    await this.ensureDirs();
    const progress = new ProgressReporter(options.onProgress);
    try {
      const lease = await this.cache.acquire(image, { signal: options.signal, progress });
      await lease.release();
      progress.finish(lease.bytesFetched, lease.fetched ? image.size : lease.base.virtualSize);
      return { base: lease.base, fetched: lease.fetched };
    } catch (e) {
      throw toContractError(e, { backend: NAME, signal: options.signal, what: `image ${image.id}` });
    }
  }

  /** The cached base of an image, if it is in the cache. */
  async cachedBase(imageId: string): Promise<CachedBase | undefined> {
    return this.cache.lookup(imageId);
  }

  /**
   * Image cache clean-up: deletes bases unused (mtime, refreshed on every use) for
   * `olderThanMs` (default `baseMaxAgeMs`) that no disk's overlay references, never one locked
   * by a fetch or a create in progress in any process; also deletes temporary files of dead
   * fetches and creates.
   */
  async cleanupBases(options: { olderThanMs?: number; signal?: AbortSignal } = {}): Promise<CacheCleanupResult> {
    const olderThanMs = options.olderThanMs ?? this.baseMaxAgeMs;
    if (!Number.isSafeInteger(olderThanMs) || olderThanMs < 0) throw new InvalidArgumentError('olderThanMs', 'a non-negative integer', { backend: NAME });
    await this.ensureDirs();
    const result = await this.cache.cleanup({ olderThanMs, referenced: () => this.referencedBases(), signal: options.signal });
    // Directories of removes that died midway, and of creates that died long ago.
    const now = Date.now();
    for (const name of await this.entries()) {
      const trash = name.startsWith('.trash-');
      if (!trash && !name.startsWith('.tmp-')) continue;
      const path = join(this.instancesDir, name);
      try {
        if (!trash && now - (await stat(path)).mtimeMs < Math.max(TEMP_MAX_AGE_MS, olderThanMs)) continue;
        await rm(path, { recursive: true, force: true });
        result.removed.push(path);
      } catch {
        // raced with its owner
      }
    }
    return result;
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

  // --- internals ---

  private async ensureDirs(): Promise<void> {
    this.dirs ??= (async () => {
      await mkdir(this.instancesDir, { recursive: true, mode: 0o755 });
      await mkdir(this.baseDir, { recursive: true, mode: 0o755 });
    })().catch((e) => {
      this.dirs = undefined;
      throw toContractError(e, { backend: NAME, what: `creating ${this.instancesDir}` });
    });
    return this.dirs;
  }

  private async entries(): Promise<string[]> {
    try {
      return await readdir(this.instancesDir);
    } catch (e) {
      if (errno(e) === 'ENOENT') return [];
      throw toContractError(e, { backend: NAME, what: this.instancesDir });
    }
  }

  private checkImage(image: SourceImage, id: string | undefined): void {
    const ctx = { backend: NAME, ...(id ? { diskId: id } : {}) };
    if (!image || typeof image !== 'object' || typeof image.open !== 'function')
      throw new InvalidArgumentError('image', 'expected a SourceImage', ctx);
    if (typeof image.id !== 'string' || image.id.length === 0) throw new InvalidArgumentError('image.id', 'a non-empty string is required', ctx);
    if (!Number.isSafeInteger(image.size) || image.size < 0) throw new InvalidArgumentError('image.size', 'a non-negative integer is required', ctx);
    const format = String(image.diskFormat ?? '').toLowerCase();
    if (!ACCEPTED_DISK_FORMATS.includes(format))
      throw new InvalidArgumentError('image.diskFormat', `the qcow2 backend accepts ${ACCEPTED_DISK_FORMATS.join(', ')}, not '${String(image.diskFormat)}'`, ctx);
  }

  private async locate(id: string): Promise<DiskLocation | undefined> {
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

  private async describe(loc: DiskLocation): Promise<DiskInfo> {
    const ref = parseDiskId(loc.id)!;
    try {
      if (loc.format === 'raw') {
        const st = await stat(loc.path);
        return { disk: ref, id: loc.id, sizeBytes: st.size, format: 'raw', encrypted: false };
      }
      const h = await readQcow2Header(loc.path);
      return {
        disk: ref,
        id: loc.id,
        sizeBytes: h.virtualSize,
        format: 'qcow2',
        ...(h.backingFile ? { parent: resolve(loc.dir, h.backingFile) } : {}),
        encrypted: false,
      };
    } catch (e) {
      if (errno(e) === 'ENOENT') throw this.notFound(loc.id);
      throw toContractError(e, { backend: NAME, diskId: loc.id });
    }
  }

  private async snapshotTarget(id: string, operation: string): Promise<DiskLocation> {
    const loc = await this.locate(id);
    if (!loc) throw this.notFound(id);
    if (loc.format !== 'qcow2')
      throw new InvalidArgumentError('disk', `${operation}: ${id} is a raw disk; internal snapshots need qcow2`, { backend: NAME, diskId: id });
    return loc;
  }

  /** Claims a disk name in this process, then checks that no process made it already. */
  private async claim(id: string): Promise<void> {
    if (this.pending.has(id)) throw new AlreadyExistsError(`disk ${id} is being created`, { backend: NAME, diskId: id });
    this.pending.add(id);
    try {
      if (await this.locate(id)) throw new AlreadyExistsError(`disk ${id} exists in ${this.instancesDir}`, { backend: NAME, diskId: id });
    } catch (e) {
      this.pending.delete(id);
      throw e;
    }
  }

  /** Renames the finished temporary directory into place: atomic, and fails if the disk exists. */
  private async publish(tmp: string, id: string): Promise<void> {
    try {
      await rename(tmp, join(this.instancesDir, id));
    } catch (e) {
      const c = errno(e);
      if (c === 'ENOTEMPTY' || c === 'EEXIST' || c === 'ENOTDIR' || c === 'EISDIR')
        throw new AlreadyExistsError(`disk ${id} exists in ${this.instancesDir}`, { backend: NAME, diskId: id, cause: e });
      throw e;
    }
    await fsyncPath(this.instancesDir);
  }

  private async checkFree(bytes: number, id: string): Promise<void> {
    const { freeBytes } = await this.capacity();
    if (bytes > freeBytes)
      throw new InsufficientCapacityError(`${id}: need ${bytes} bytes, ${freeBytes} free in ${this.instancesDir}`, {
        backend: NAME,
        diskId: id,
        requestedBytes: bytes,
        availableBytes: freeBytes,
      });
  }

  private async qemuCall(id: string, fn: () => Promise<void>, signal?: AbortSignal): Promise<void> {
    try {
      await fn();
    } catch (e) {
      throw toContractError(e, { backend: NAME, diskId: id, signal });
    }
  }

  private notFound(id: string): NotFoundError {
    return new NotFoundError(`disk ${id} not found in ${this.instancesDir}`, { backend: NAME, diskId: id });
  }
}

function roundUp(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}
