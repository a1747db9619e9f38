// The qcow2 backend's face: options, the ImageBackend contract and the image cache operations;
// the work itself is in create.ts, snapshots.ts, resize.ts, remove.ts and layout.ts.
import { isAbsolute, join, resolve } from 'node:path';
import {
  IMAGE_BACKEND_API_VERSION,
  InvalidArgumentError,
  ProgressReporter,
  UnsupportedOperationError,
  assertValidOwnerStamp,
  diskId,
  handOver,
  isImageBackendError,
  listFilterPrefix,
  ownerRecord,
  parseDiskId,
  type BackendCapabilities,
  type Capacity,
  type CreateBlankOptions,
  type CreateFromImageOptions,
  type CreateResult,
  type DirectSnapshotResult,
  type DiskFormat,
  type DiskInfo,
  type DiskOwner,
  type DiskRef,
  type FileDiskSource,
  type ImageBackend,
  type ListFilter,
  type OperationOptions,
  type OwnerStamp,
  type ProgressEvent,
  type RemoveOptions,
  type SnapshotInfo,
  type SourceImage,
} from '@ephemera/image-backend';
import { QemuImg } from '@ephemera/qemu-img-wrapper';
import { BaseCache, type CacheCleanupResult, type CachedBase } from './base-cache.js';
import type { Qcow2Context } from './context.js';
import { checkImage, createBlank, createFromImage } from './create.js';
import { toContractError } from './errors.js';
import { DiskStore, NAME, readEncryption, readOwner, writeOwner } from './layout.js';
import { migrationDiskSpec, prepareIncomingDisk, type IncomingDisk, type MigrationDiskSpec } from './migration.js';
import { remove, sweepLeftovers } from './remove.js';
import { flatten, resize } from './resize.js';
import { createSnapshot, listSnapshots, removeSnapshot, rollbackToSnapshot } from './snapshots.js';

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

  private readonly baseMaxAgeMs: number;
  private readonly cache: BaseCache;
  private readonly store: DiskStore;
  private readonly ctx: Qcow2Context;

  constructor(options: Qcow2BackendOptions) {
    if (!options || typeof options.instancesDir !== 'string' || !isAbsolute(options.instancesDir))
      throw new InvalidArgumentError('instancesDir', 'an absolute directory path is required', { backend: NAME });
    if (options.baseDir !== undefined && (typeof options.baseDir !== 'string' || !isAbsolute(options.baseDir)))
      throw new InvalidArgumentError('baseDir', 'must be an absolute directory path', { backend: NAME });
    const prealloc = options.preallocation ?? 'off';
    if (!['off', 'metadata', 'falloc', 'full'].includes(prealloc))
      throw new InvalidArgumentError(
        'preallocation',
        `expected off, metadata, falloc or full, got ${String(prealloc)}`,
        { backend: NAME },
      );
    if (options.clusterSize !== undefined) {
      const c = options.clusterSize;
      if (!Number.isSafeInteger(c) || c < 512 || c > 2 * 1024 * 1024 || (c & (c - 1)) !== 0)
        throw new InvalidArgumentError('clusterSize', 'a power of two between 512 and 2 MiB', { backend: NAME });
    }
    for (const k of [
      'baseMaxAgeMs',
      'commandTimeoutMs',
      'convertTimeoutMs',
      'busyTimeoutMs',
      'lockStaleMs',
      'maxImageVirtualSize',
    ] as const) {
      const v = options[k];
      if (v !== undefined && (!Number.isSafeInteger(v) || v < 0))
        throw new InvalidArgumentError(k, 'a non-negative integer', { backend: NAME });
    }
    this.instancesDir = resolve(options.instancesDir);
    this.baseDir = resolve(options.baseDir ?? join(this.instancesDir, '_base'));
    this.forceRaw = options.forceRaw ?? true;
    this.baseMaxAgeMs = options.baseMaxAgeMs ?? 24 * 3_600_000;
    const convertTimeoutMs = options.convertTimeoutMs ?? 3_600_000;
    const qemu = new QemuImg({
      timeoutMs: options.commandTimeoutMs ?? 60_000,
      ...(options.qemuImgBinary ? { binary: options.qemuImgBinary } : {}),
    });
    this.cache = new BaseCache({
      dir: this.baseDir,
      qemuImg: qemu,
      forceRaw: this.forceRaw,
      lockStaleMs: Math.max(options.lockStaleMs ?? 10_000, 2_000),
      convertTimeoutMs,
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
      encryption: true,
      discard: true,
      thin: !thick,
    });
    this.store = new DiskStore(this.instancesDir, this.baseDir);
    this.ctx = {
      store: this.store,
      qemu,
      cache: this.cache,
      diskFormats: this.diskFormats,
      preallocation: prealloc,
      clusterSize: options.clusterSize,
      convertTimeoutMs,
      busyTimeoutMs: options.busyTimeoutMs ?? 10_000,
      thin: !thick,
    };
  }

  /** Builds a backend and creates its directories. */
  static async create(options: Qcow2BackendOptions): Promise<Qcow2Backend> {
    const b = new Qcow2Backend(options);
    await b.store.ensureDirs();
    return b;
  }

  // --- the contract ---

  async exists(disk: DiskRef): Promise<boolean> {
    return (await this.store.locate(diskId(disk))) !== undefined;
  }

  async info(disk: DiskRef): Promise<DiskInfo> {
    const id = diskId(disk);
    const loc = await this.store.locate(id);
    if (!loc) throw this.store.notFound(id);
    return this.store.describe(loc);
  }

  /** The owner recorded in the disk directory's `owner.json`, `null` when none. */
  async getOwner(disk: DiskRef): Promise<DiskOwner | null> {
    const id = diskId(disk);
    const loc = await this.store.locate(id);
    if (!loc) throw this.store.notFound(id);
    return readOwner(loc.dir).catch((e) => {
      throw toContractError(e, { backend: NAME, diskId: id });
    });
  }

  /** Hands the disk over: `owner.json` replaced by one rename (atomic). */
  async setOwner(disk: DiskRef, owner: OwnerStamp): Promise<DiskOwner> {
    const id = diskId(disk);
    assertValidOwnerStamp(owner);
    const loc = await this.store.locate(id);
    if (!loc) throw this.store.notFound(id);
    try {
      const cur = await readOwner(loc.dir);
      const next = cur ? handOver(cur, owner) : ownerRecord(disk, owner);
      await writeOwner(loc.dir, next);
      return next;
    } catch (e) {
      throw toContractError(e, { backend: NAME, diskId: id });
    }
  }

  async createFromImage(
    disk: DiskRef,
    image: SourceImage,
    options: CreateFromImageOptions = {},
  ): Promise<CreateResult> {
    return createFromImage(this.ctx, disk, image, options);
  }

  async createBlank(disk: DiskRef, sizeBytes: number, options: CreateBlankOptions = {}): Promise<CreateResult> {
    return createBlank(this.ctx, disk, sizeBytes, options);
  }

  async resize(disk: DiskRef, sizeBytes: number, options: OperationOptions = {}): Promise<void> {
    return resize(this.ctx, disk, sizeBytes, options);
  }

  async createSnapshot(disk: DiskRef, snapshot: string): Promise<SnapshotInfo> {
    return createSnapshot(this.ctx, disk, snapshot);
  }

  async listSnapshots(disk: DiskRef): Promise<SnapshotInfo[]> {
    return listSnapshots(this.ctx, disk);
  }

  async removeSnapshot(disk: DiskRef, snapshot: string): Promise<boolean> {
    return removeSnapshot(this.ctx, disk, snapshot);
  }

  async rollbackToSnapshot(disk: DiskRef, snapshot: string): Promise<void> {
    return rollbackToSnapshot(this.ctx, disk, snapshot);
  }

  /**
   * Copies the base's data into the overlay (`qemu-img rebase -b ''`, safe mode) so the disk no
   * longer depends on the cache. A disk with internal snapshots is refused (their unallocated
   * clusters would lose the data they read from the base): remove the snapshots first.
   */
  async flatten(disk: DiskRef, options: OperationOptions = {}): Promise<void> {
    return flatten(this.ctx, disk, options);
  }

  async directSnapshot(disk: DiskRef): Promise<DirectSnapshotResult> {
    throw new UnsupportedOperationError('directSnapshot', 'directSnapshot', { backend: NAME, diskId: diskId(disk) });
  }

  async remove(disk: DiskRef, options: RemoveOptions = {}): Promise<boolean> {
    return remove(this.ctx, disk, options);
  }

  async list(filter: ListFilter = {}): Promise<DiskInfo[]> {
    const prefix = listFilterPrefix(filter, NAME);
    const out: DiskInfo[] = [];
    for (const name of await this.store.entries()) {
      if (prefix !== undefined && !name.startsWith(prefix)) continue;
      if (!parseDiskId(name)) continue;
      const loc = await this.store.locate(name);
      if (!loc) continue;
      try {
        out.push(await this.store.describe(loc));
      } catch (e) {
        if (!isImageBackendError(e, 'NOT_FOUND')) throw e;
      }
    }
    return out.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  async capacity(): Promise<Capacity> {
    return this.store.capacity();
  }

  async diskSource(disk: DiskRef): Promise<FileDiskSource> {
    const id = diskId(disk);
    const loc = await this.store.locate(id);
    if (!loc) throw this.store.notFound(id);
    const enc = await readEncryption(loc.dir);
    return { type: 'file', path: loc.path, format: loc.format, ...(enc ? { encryption: enc } : {}) };
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
    checkImage(image, undefined);
    await this.store.ensureDirs();
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
    if (!Number.isSafeInteger(olderThanMs) || olderThanMs < 0)
      throw new InvalidArgumentError('olderThanMs', 'a non-negative integer', { backend: NAME });
    await this.store.ensureDirs();
    const result = await this.cache.cleanup({
      olderThanMs,
      referenced: () => this.referencedBases(),
      signal: options.signal,
    });
    await sweepLeftovers(this.ctx, olderThanMs, result.removed);
    return result;
  }

  /** Absolute paths of every base a disk (or a disk being created) has as backing file. */
  async referencedBases(): Promise<Set<string>> {
    return this.store.referencedBases();
  }

  // --- live block migration (the driver's workflow calls these on both hosts) ---

  /**
   * Source host: size, format and whether the disk is an overlay on the cached base of `imageId`
   * (any other backing file: UNSUPPORTED_OPERATION, the destination could not rebuild the chain).
   */
  async migrationDiskSpec(disk: DiskRef, imageId: string): Promise<MigrationDiskSpec> {
    return migrationDiskSpec(this.ctx, disk, imageId);
  }

  /**
   * Destination host: the empty copy libvirt copies a migrating disk into (it does not create
   * files outside storage pools): an overlay of the same virtual size on this host's cached base
   * of `image` (fetched once, then reused), or a blank disk for an unbacked one. Without an owner
   * sidecar until `setOwner` (the driver calls it once the guest runs here); `remove` undoes it.
   */
  async prepareIncomingDisk(
    disk: DiskRef,
    spec: MigrationDiskSpec,
    image?: SourceImage,
    options: OperationOptions & { onProgress?: (event: ProgressEvent) => void } = {},
  ): Promise<IncomingDisk> {
    return prepareIncomingDisk(this.ctx, disk, spec, image, options);
  }
}
