import {
  AbortedError,
  AlreadyExistsError,
  BusyError,
  InsufficientCapacityError,
  InvalidArgumentError,
  NotFoundError,
} from './errors.js';
import {
  assertValidDiskRef,
  assertValidSize,
  assertValidSnapshotName,
  diskId,
  isUuid,
  parseDiskId,
} from './disk-ref.js';
import { IMAGE_BACKEND_API_VERSION, requireCapability } from './registry.js';
import { assertValidOwnerStamp, handOver, ownerRecord, type DiskOwner, type OwnerStamp } from './owner.js';
import { ProgressReporter, readImage, retryWhileBusy, throwIfAborted } from './support.js';
import type {
  BackendCapabilities,
  Capacity,
  CreateBlankOptions,
  CreateFromImageOptions,
  CreateResult,
  DirectSnapshotOptions,
  DirectSnapshotResult,
  DiskEncryption,
  DiskFormat,
  DiskInfo,
  DiskRef,
  DiskSource,
  ImageBackend,
  ImageLocation,
  ListFilter,
  OperationOptions,
  RemoveDirectSnapshotOptions,
  RemoveOptions,
  SnapshotInfo,
  SourceImage,
} from './types.js';

/** Options of `MemoryBackend`. */
export interface MemoryBackendOptions {
  /** Registry name (default `memory`). */
  name?: string;
  /** Capabilities to claim (default: all of them). */
  capabilities?: Partial<BackendCapabilities>;
  /** Formats for `createBlank` (default `['raw', 'qcow2']`). */
  diskFormats?: DiskFormat[];
  /** Size of the pretend pool (default 64 GiB). */
  totalBytes?: number;
  /** Default busy timeout of `remove` (default 2 000 ms). */
  busyTimeoutMs?: number;
  /** Declared contract version (default the current one); for registry tests. */
  apiVersion?: number;
}

interface MemSnapshot {
  sizeBytes: number;
  data: Uint8Array;
}

interface MemDisk {
  disk: DiskRef;
  sizeBytes: number;
  format: DiskFormat;
  /** Written data from offset 0; bytes past its end (up to sizeBytes) read as zeros. Shared with the parent until written. */
  data: Uint8Array;
  parent?: string;
  encryption?: DiskEncryption;
  owner: DiskOwner | null;
  snapshots: Map<string, MemSnapshot>;
}

const ALL_CAPABILITIES: BackendCapabilities = {
  clone: true,
  snapshot: true,
  rollback: true,
  flatten: true,
  resize: true,
  sharedStorage: false,
  directSnapshot: true,
  encryption: true,
  discard: true,
  thin: true,
};

/**
 * An in-memory image backend: the reference implementation of the contract, used to test the
 * conformance suite itself and as a fake in the driver's pure-logic tests. Nothing it stores
 * is bootable (its `diskSource` paths do not exist).
 *
 * Clones: an image is cloneable when one of its locations is `memory://<backend-name>/<id>` for
 * data given to `addBaseImage` (or made by `directSnapshot`).
 */
export class MemoryBackend implements ImageBackend {
  readonly name: string;
  readonly apiVersion: number;
  readonly capabilities: Readonly<BackendCapabilities>;
  readonly diskFormats: readonly DiskFormat[];
  private readonly totalBytes: number;
  private readonly busyTimeoutMs: number;
  private readonly disks = new Map<string, MemDisk>();
  private readonly pending = new Set<string>();
  private readonly bases = new Map<string, Uint8Array>();
  private readonly busy = new Map<string, number>();

  constructor(options: MemoryBackendOptions = {}) {
    this.name = options.name ?? 'memory';
    this.apiVersion = options.apiVersion ?? IMAGE_BACKEND_API_VERSION;
    this.capabilities = Object.freeze({ ...ALL_CAPABILITIES, ...options.capabilities });
    this.diskFormats = Object.freeze([...(options.diskFormats ?? ['raw', 'qcow2'])]);
    this.totalBytes = options.totalBytes ?? 64 * 1024 ** 3;
    this.busyTimeoutMs = options.busyTimeoutMs ?? 2_000;
  }

  /** Stores `data` as a clone source and returns the location to put in a `SourceImage`. */
  addBaseImage(imageId: string, data: Uint8Array): ImageLocation {
    this.bases.set(imageId, data);
    return { url: `memory://${this.name}/${imageId}`, metadata: {} };
  }

  /** Makes the next `attempts` removals of `disk` fail as busy (`Infinity`: until `setBusy(disk, 0)`). */
  setBusy(disk: DiskRef, attempts = Infinity): void {
    this.busy.set(diskId(disk), attempts);
  }

  /** Reads `length` bytes at `offset` (zeros past the written data). */
  async read(disk: DiskRef, offset: number, length: number): Promise<Uint8Array> {
    const d = this.get(disk);
    const out = new Uint8Array(Math.max(0, Math.min(length, d.sizeBytes - offset)));
    out.set(d.data.subarray(offset, offset + out.length));
    return out;
  }

  /** Writes `bytes` at `offset` (the guest writing), copying shared data first. */
  async write(disk: DiskRef, offset: number, bytes: Uint8Array): Promise<void> {
    const d = this.get(disk);
    if (offset + bytes.length > d.sizeBytes) throw new InvalidArgumentError('offset', 'write past the end of the disk');
    const data = new Uint8Array(Math.max(d.data.length, offset + bytes.length));
    data.set(d.data);
    data.set(bytes, offset);
    d.data = data;
  }

  async exists(disk: DiskRef): Promise<boolean> {
    return this.disks.has(diskId(disk));
  }

  async info(disk: DiskRef): Promise<DiskInfo> {
    return this.toInfo(this.get(disk));
  }

  async createFromImage(
    disk: DiskRef,
    image: SourceImage,
    options: CreateFromImageOptions = {},
  ): Promise<CreateResult> {
    const started = Date.now();
    if (options.owner !== undefined) assertValidOwnerStamp(options.owner, 'options.owner');
    const id = this.reserve(disk, options.signal);
    try {
      if (options.encryption) requireCapability(this, 'encryption', 'createFromImage');
      if (options.sizeBytes !== undefined) assertValidSize(options.sizeBytes, 'options.sizeBytes');
      if (image.diskFormat !== 'raw') {
        throw new InvalidArgumentError(
          'image.diskFormat',
          `the memory backend imports raw images only, not '${image.diskFormat}'`,
          { backend: this.name },
        );
      }
      const virtualSize = image.virtualSize ?? image.size;
      if (options.sizeBytes !== undefined && options.sizeBytes < virtualSize) {
        throw new InvalidArgumentError('options.sizeBytes', `smaller than the image's virtual size ${virtualSize}`, {
          backend: this.name,
        });
      }
      const sizeBytes = Math.max(options.sizeBytes ?? 0, virtualSize);
      const progress = new ProgressReporter(options.onProgress);

      const base = this.cloneSource(image, options);
      if (typeof base !== 'string') {
        this.checkSpace(0, sizeBytes);
        progress.report('clone', 0, sizeBytes);
        throwIfAborted(options.signal, 'createFromImage');
        this.commit(id, disk, {
          sizeBytes,
          format: 'raw',
          data: base.data,
          parent: `memory/${image.id}`,
          ...this.enc(options.encryption),
          owner: this.owner(disk, options.owner),
        });
        progress.finish(sizeBytes, sizeBytes);
        return { method: 'cloned', sizeBytes, durationMs: Date.now() - started };
      }

      this.checkSpace(image.size, sizeBytes);
      const chunks: Uint8Array[] = [];
      let written = 0;
      for await (const chunk of readImage(image, { signal: options.signal, progress, backend: this.name })) {
        chunks.push(chunk);
        written += chunk.byteLength;
      }
      const data = new Uint8Array(written);
      let at = 0;
      for (const c of chunks) {
        data.set(c, at);
        at += c.byteLength;
      }
      throwIfAborted(options.signal, 'createFromImage');
      this.commit(id, disk, {
        sizeBytes,
        format: 'raw',
        data,
        ...this.enc(options.encryption),
        owner: this.owner(disk, options.owner),
      });
      progress.finish(written, image.size);
      return { method: 'imported', reason: base, bytesWritten: written, sizeBytes, durationMs: Date.now() - started };
    } finally {
      this.pending.delete(id);
    }
  }

  async createBlank(disk: DiskRef, sizeBytes: number, options: CreateBlankOptions = {}): Promise<CreateResult> {
    const started = Date.now();
    assertValidSize(sizeBytes);
    const format = options.format ?? this.diskFormats[0]!;
    if (!this.diskFormats.includes(format)) {
      throw new InvalidArgumentError(
        'options.format',
        `'${String(format)}' is not one of ${this.diskFormats.join(', ')}`,
        { backend: this.name },
      );
    }
    if (options.encryption) requireCapability(this, 'encryption', 'createBlank');
    if (options.owner !== undefined) assertValidOwnerStamp(options.owner, 'options.owner');
    const id = this.reserve(disk, options.signal);
    try {
      this.checkSpace(0, sizeBytes);
      this.commit(id, disk, {
        sizeBytes,
        format,
        data: new Uint8Array(0),
        ...this.enc(options.encryption),
        owner: this.owner(disk, options.owner),
      });
      return { method: 'blank', sizeBytes, durationMs: Date.now() - started };
    } finally {
      this.pending.delete(id);
    }
  }

  async resize(disk: DiskRef, sizeBytes: number, options: OperationOptions = {}): Promise<void> {
    assertValidDiskRef(disk);
    requireCapability(this, 'resize', 'resize');
    assertValidSize(sizeBytes);
    throwIfAborted(options.signal, 'resize');
    const d = this.get(disk);
    if (sizeBytes < d.sizeBytes) {
      throw new InvalidArgumentError('sizeBytes', `cannot shrink ${diskId(disk)} from ${d.sizeBytes} to ${sizeBytes}`, {
        backend: this.name,
      });
    }
    this.checkSpace(0, sizeBytes - d.sizeBytes);
    d.sizeBytes = sizeBytes;
  }

  async createSnapshot(disk: DiskRef, snapshot: string): Promise<SnapshotInfo> {
    assertValidDiskRef(disk);
    requireCapability(this, 'snapshot', 'createSnapshot');
    assertValidSnapshotName(snapshot);
    const d = this.get(disk);
    if (d.snapshots.has(snapshot)) {
      throw new AlreadyExistsError(`snapshot ${diskId(disk)}@${snapshot} exists`, {
        backend: this.name,
        diskId: diskId(disk),
      });
    }
    d.snapshots.set(snapshot, { sizeBytes: d.sizeBytes, data: d.data });
    return { name: snapshot, sizeBytes: d.sizeBytes };
  }

  async listSnapshots(disk: DiskRef): Promise<SnapshotInfo[]> {
    assertValidDiskRef(disk);
    requireCapability(this, 'snapshot', 'listSnapshots');
    return [...this.get(disk).snapshots].map(([name, s]) => ({ name, sizeBytes: s.sizeBytes }));
  }

  async removeSnapshot(disk: DiskRef, snapshot: string): Promise<boolean> {
    assertValidDiskRef(disk);
    requireCapability(this, 'snapshot', 'removeSnapshot');
    assertValidSnapshotName(snapshot);
    return this.get(disk).snapshots.delete(snapshot);
  }

  async rollbackToSnapshot(disk: DiskRef, snapshot: string): Promise<void> {
    assertValidDiskRef(disk);
    requireCapability(this, 'rollback', 'rollbackToSnapshot');
    assertValidSnapshotName(snapshot);
    const d = this.get(disk);
    const s = d.snapshots.get(snapshot);
    if (!s)
      throw new NotFoundError(`snapshot ${diskId(disk)}@${snapshot} not found`, {
        backend: this.name,
        diskId: diskId(disk),
      });
    d.data = s.data;
    d.sizeBytes = s.sizeBytes;
  }

  async flatten(disk: DiskRef, options: OperationOptions = {}): Promise<void> {
    assertValidDiskRef(disk);
    requireCapability(this, 'flatten', 'flatten');
    throwIfAborted(options.signal, 'flatten');
    const d = this.get(disk);
    if (d.parent === undefined) return;
    d.data = d.data.slice();
    delete d.parent;
  }

  async directSnapshot(disk: DiskRef, options: DirectSnapshotOptions): Promise<DirectSnapshotResult> {
    assertValidDiskRef(disk);
    requireCapability(this, 'directSnapshot', 'directSnapshot');
    if (typeof options?.imageId !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(options.imageId)) {
      throw new InvalidArgumentError('options.imageId', 'expected an image id', { backend: this.name });
    }
    throwIfAborted(options.signal, 'directSnapshot');
    const d = this.get(disk);
    const data = d.data.slice(0, d.sizeBytes);
    this.bases.set(options.imageId, data);
    return { url: `memory://${this.name}/${options.imageId}`, metadata: { source: diskId(disk) } };
  }

  /** Forgets the base image a `directSnapshot` made for `options.imageId` (idempotent). */
  async removeDirectSnapshot(disk: DiskRef, options: RemoveDirectSnapshotOptions): Promise<boolean> {
    assertValidDiskRef(disk);
    requireCapability(this, 'directSnapshot', 'directSnapshot');
    return this.bases.delete(options.imageId);
  }

  async remove(disk: DiskRef, options: RemoveOptions = {}): Promise<boolean> {
    const id = diskId(disk);
    return retryWhileBusy(
      async () => {
        if (this.pending.has(id)) throw new BusyError(`${id} is being created`, { backend: this.name, diskId: id });
        if (!this.disks.has(id)) return false;
        const left = this.busy.get(id) ?? 0;
        if (left > 0) {
          this.busy.set(id, left - 1);
          throw new BusyError(`${id} is in use`, { backend: this.name, diskId: id });
        }
        this.busy.delete(id);
        this.disks.delete(id);
        return true;
      },
      {
        timeoutMs: options.busyTimeoutMs ?? this.busyTimeoutMs,
        intervalMs: 10,
        maxIntervalMs: 200,
        ...(options.signal ? { signal: options.signal } : {}),
      },
    );
  }

  async list(filter: ListFilter = {}): Promise<DiskInfo[]> {
    if (filter.instance !== undefined && !isUuid(filter.instance)) {
      throw new InvalidArgumentError('filter.instance', 'not a UUID', { backend: this.name });
    }
    const want = filter.instance?.toLowerCase();
    return [...this.disks.entries()]
      .filter(([id]) => parseDiskId(id) !== undefined && (want === undefined || id.startsWith(`${want}_`)))
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([, d]) => this.toInfo(d));
  }

  async getOwner(disk: DiskRef): Promise<DiskOwner | null> {
    const o = this.get(disk).owner;
    return o ? { ...o } : null;
  }

  async setOwner(disk: DiskRef, owner: OwnerStamp): Promise<DiskOwner> {
    const d = this.get(disk);
    assertValidOwnerStamp(owner);
    d.owner = d.owner ? handOver(d.owner, owner) : ownerRecord(d.disk, owner);
    return { ...d.owner };
  }

  async capacity(): Promise<Capacity> {
    return { totalBytes: this.totalBytes, freeBytes: Math.max(0, this.totalBytes - this.used()) };
  }

  async diskSource(disk: DiskRef): Promise<DiskSource> {
    const d = this.get(disk);
    return {
      type: 'file',
      path: `/memory/${encodeURIComponent(this.name)}/${diskId(disk)}`,
      format: d.format,
      ...(d.encryption ? { encryption: d.encryption } : {}),
    };
  }

  private get(disk: DiskRef): MemDisk {
    const id = diskId(disk);
    const d = this.disks.get(id);
    if (!d) throw new NotFoundError(`disk ${id} not found`, { backend: this.name, diskId: id });
    return d;
  }

  private reserve(disk: DiskRef, signal: AbortSignal | undefined): string {
    const id = diskId(disk);
    if (signal?.aborted)
      throw new AbortedError('create aborted', { backend: this.name, diskId: id, cause: signal.reason });
    if (this.disks.has(id) || this.pending.has(id)) {
      throw new AlreadyExistsError(`disk ${id} exists`, { backend: this.name, diskId: id });
    }
    this.pending.add(id);
    return id;
  }

  private commit(id: string, disk: DiskRef, d: Omit<MemDisk, 'disk' | 'snapshots'>): void {
    this.disks.set(id, {
      disk: { instance: disk.instance.toLowerCase(), name: disk.name },
      snapshots: new Map(),
      ...d,
    });
  }

  private owner(disk: DiskRef, stamp: OwnerStamp | undefined): DiskOwner | null {
    return stamp ? ownerRecord(disk, stamp) : null;
  }

  private enc(e: DiskEncryption | undefined): { encryption?: DiskEncryption } {
    return e ? { encryption: { format: e.format, secretUuid: e.secretUuid } } : {};
  }

  /** The clone source, or the reason there is none. */
  private cloneSource(image: SourceImage, options: CreateFromImageOptions): { data: Uint8Array } | string {
    if (!this.capabilities.clone) return `backend '${this.name}' cannot clone`;
    if (options.forceImport) return 'import forced by the caller';
    const prefix = `memory://${this.name}/`;
    for (const loc of image.locations) {
      if (loc.url.startsWith(prefix)) {
        const data = this.bases.get(decodeURIComponent(loc.url.slice(prefix.length)));
        if (data) return { data };
      }
    }
    return `no ${prefix} location with known data`;
  }

  private used(): number {
    let used = 0;
    for (const d of this.disks.values()) used += this.capabilities.thin ? d.data.length : d.sizeBytes;
    return used;
  }

  /** Refuses when the new allocation does not fit (`thin`: the bytes written; thick: the full size). */
  private checkSpace(dataBytes: number, sizeBytes: number): void {
    const need = this.capabilities.thin ? dataBytes : sizeBytes;
    const free = this.totalBytes - this.used();
    if (need > free) {
      throw new InsufficientCapacityError(`need ${need} bytes, ${free} free`, {
        backend: this.name,
        requestedBytes: need,
        availableBytes: free,
      });
    }
  }

  private toInfo(d: MemDisk): DiskInfo {
    return {
      disk: d.disk,
      id: diskId(d.disk),
      sizeBytes: d.sizeBytes,
      format: d.format,
      ...(d.parent === undefined ? {} : { parent: d.parent }),
      encrypted: d.encryption !== undefined,
      owner: d.owner ? { ...d.owner } : null,
    };
  }
}
