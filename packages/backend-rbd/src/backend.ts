import {
  AbortedError,
  AlreadyExistsError,
  BackendUnavailableError,
  BusyError,
  IMAGE_BACKEND_API_VERSION,
  InvalidArgumentError,
  NotFoundError,
  ProgressReporter,
  UnsupportedOperationError,
  assertValidOwnerStamp,
  assertValidSize,
  assertValidSnapshotName,
  formatOwner,
  handOver,
  ownerRecord,
  diskId,
  isImageBackendError,
  listFilterPrefix,
  parseDiskId,
  throwIfAborted,
  type BackendCapabilities,
  type Capacity,
  type CreateBlankOptions,
  type CreateFromImageOptions,
  type CreateResult,
  type DirectSnapshotOptions,
  type RemoveDirectSnapshotOptions,
  type FinishDirectSnapshotOptions,
  type FlattenOptions,
  type DirectSnapshotResult,
  type DiskClient,
  type DiskFormat,
  type DiskInfo,
  type DiskOwner,
  type DiskRef,
  type ImageBackend,
  type ListFilter,
  type NetworkDiskSource,
  type NetworkHost,
  type OperationOptions,
  type OwnerStamp,
  type RemoveOptions,
  type SnapshotInfo,
  type SourceImage,
} from '@ephemera/image-backend';
import { connect, ImageExists, type Cluster, type Image, type IoCtx } from '@ephemera/ceph-rbd-napi';
import { cloneFormatPolicy, decideClone, type CloneFormatPolicy } from './clone.js';
import { getAnnotation, setAnnotation } from './annotations.js';
import { diskClients, fenceClients } from './clients.js';
import { cloneCandidates } from './clone-image.js';
import type { RbdContext } from './context.js';
import {
  SECRET_KEY,
  checkEncryption,
  createEncryptedBlank,
  createEncryptedFromImage,
  plainSourceRef,
} from './encrypted.js';
import { cloneDepth } from './clone-depth.js';
import { directSnapshot, removeDirectSnapshot } from './direct-snapshot.js';
import { flattenDisk } from './flatten.js';
import { finishDirectSnapshot, finishPendingDirectSnapshots, pendingDirectSnapshots } from './snapshot-flatten.js';
import { NAME } from './errors.js';
import { goldenRefusal } from './golden.js';
import { createFromGolden, goldenOpener, type GoldenContext } from './golden-build.js';
import { GoldenImageCache, type GoldenImages } from './golden-cache.js';
import { CONVERT_FORMATS, RAW_FORMATS, convertSource, importConverted, importRaw, type ImportJob } from './import.js';
import { IMPORT_WRITE_PATH, resolveMonitors, validateOptions, type RbdBackendOptions } from './options.js';
import { ParentSnapshotCache } from './parent-cache.js';
import { OWNER_KEY, RbdOps } from './rbd-ops.js';

const MiB = 1024 * 1024;

/**
 * The Ceph RBD image backend, as Nova's `Rbd` image backend:
 * - instance disks are RBD images `<instance-uuid>_<disk>` in one pool;
 * - an image whose Glance location is `rbd://<fsid>/<pool>/<image>/<snap>` in this cluster and
 *   which is raw is cloned copy-on-write (format 2 when the cluster allows, else format 1 of
 *   the protected snapshot), then grown to the requested size;
 * - anything else is streamed from its source into a new image with many aio writes in flight,
 *   skipping all-zero blocks, verifying the declared hash as it streams, never staged on local
 *   disk; non-raw images go through `qemu-img convert`, which reads the stream from a loopback
 *   NBD server inside the backend and writes to RBD directly;
 * - a failed create removes its partial image.
 *
 * Create with {@link RbdBackend.create}; `close()` releases the cluster connections.
 */
export class RbdBackend implements ImageBackend {
  readonly name = NAME;
  readonly apiVersion = IMAGE_BACKEND_API_VERSION;
  readonly diskFormats: readonly DiskFormat[] = Object.freeze(['raw'] as const);
  readonly capabilities: Readonly<BackendCapabilities>;
  /** The cluster's fsid. */
  readonly fsid: string;
  /** The pool of the instance disks. */
  readonly pool: string;
  /** Monitors `diskSource` names (msgr v1). */
  readonly monitors: readonly NetworkHost[];
  /** Golden images (plan per image, gc); undefined unless `goldenImages` is configured. */
  readonly golden: GoldenImages | undefined;

  private readonly clientId: string;
  /** librbd mechanics (no policy). */
  private readonly ops: RbdOps;
  /** What the clone, import and direct-snapshot concerns share. */
  private readonly ctx: RbdContext;
  private cloneFormatPromise: Promise<CloneFormatPolicy> | undefined;
  /** The golden pool's context (opened once; retried after a failure). */
  private readonly goldenContext: () => Promise<GoldenContext>;

  private constructor(
    private readonly options: RbdBackendOptions,
    private readonly cluster: Cluster,
    io: IoCtx,
    fsid: string,
    monitors: NetworkHost[],
  ) {
    this.pool = options.pool;
    this.fsid = fsid.toLowerCase();
    this.monitors = Object.freeze(monitors.map((m) => Object.freeze({ ...m })));
    this.clientId = options.clientId ?? 'admin';
    this.ops = new RbdOps(cluster, io, {
      pool: options.pool,
      clientId: this.clientId,
      confPath: options.confPath,
      keyringPath: options.keyringPath,
      connectTimeoutMs: options.connectTimeoutMs ?? 10_000,
      busyTimeoutMs: options.busyTimeoutMs ?? 30_000,
      blockBytes: options.importBlockBytes ?? 4 * MiB,
      inFlight: options.importInFlight ?? 8,
      monitors: this.monitors,
    });
    this.ctx = {
      ops: this.ops,
      options,
      fsid: this.fsid,
      parents: new ParentSnapshotCache(),
      cloneFormat: () => this.cloneFormat(),
    };
    this.goldenContext = goldenOpener(this.ctx, options.goldenImages ?? {});
    this.golden = options.goldenImages ? new GoldenImageCache(this.goldenContext) : undefined;
    this.capabilities = Object.freeze({
      clone: true,
      snapshot: true,
      rollback: true,
      flatten: true,
      resize: true,
      sharedStorage: true,
      directSnapshot: options.directSnapshot !== undefined,
      encryption: true,
      discard: true,
      thin: true,
    });
  }

  /**
   * Connects (within `connectTimeoutMs`), opens the pool, reads the fsid and the monitors, and
   * returns a ready backend. `BackendUnavailableError` when the cluster or pool cannot be reached.
   */
  static async create(options: RbdBackendOptions): Promise<RbdBackend> {
    validateOptions(options);
    const monitors = await resolveMonitors(options);
    let cluster: Cluster;
    try {
      cluster = await connect({
        confPath: options.confPath,
        clientId: options.clientId ?? 'admin',
        ...(options.keyringPath ? { keyringPath: options.keyringPath } : {}),
        timeoutMs: options.connectTimeoutMs ?? 10_000,
        options: IMPORT_WRITE_PATH,
      });
    } catch (e) {
      throw new BackendUnavailableError(
        `cannot connect to the cluster as client.${options.clientId ?? 'admin'}: ${(e as Error).message}`,
        {
          backend: NAME,
          cause: e,
        },
      );
    }
    try {
      const io = await cluster.openIoCtx(options.pool);
      const fsid = await cluster.fsid();
      const backend = new RbdBackend(options, cluster, io, fsid, monitors);
      backend.warm();
      return backend;
    } catch (e) {
      await cluster.close().catch(() => undefined);
      throw new BackendUnavailableError(`cannot open pool ${options.pool}: ${(e as Error).message}`, {
        backend: NAME,
        cause: e,
      });
    }
  }

  // -------------------------------------------------------------------------------------------
  // Queries

  async exists(disk: DiskRef): Promise<boolean> {
    return this.ops.exists(diskId(disk));
  }

  async info(disk: DiskRef): Promise<DiskInfo> {
    const id = diskId(disk);
    return this.ops.withImage(id, { readOnly: true }, (img) => this.ops.describe(id, img));
  }

  async list(filter: ListFilter = {}): Promise<DiskInfo[]> {
    const prefix = listFilterPrefix(filter, NAME);
    let names: string[];
    try {
      // One instance's disks by their name prefix: the spawn asks before every create, and a full
      // listing reads the whole pool directory (26 ms at 500 images here, growing with the pool).
      names = prefix === undefined ? await this.ops.io.list() : await this.ops.io.listPrefixed(prefix);
    } catch (e) {
      throw this.ops.translate(e);
    }
    const out: DiskInfo[] = [];
    for (const name of names.sort()) {
      const ref = parseDiskId(name);
      if (!ref || (prefix !== undefined && !name.startsWith(prefix))) continue;
      try {
        out.push(await this.ops.withImage(name, { readOnly: true }, (img) => this.ops.describe(name, img)));
      } catch (e) {
        if (isImageBackendError(e, 'NOT_FOUND')) continue; // removed meanwhile
        throw e;
      }
    }
    return out;
  }

  /** The owner recorded in the image metadata (`ephemera.owner`), `null` when none. */
  async getOwner(disk: DiskRef): Promise<DiskOwner | null> {
    const id = diskId(disk);
    return this.ops.withImage(id, { readOnly: true }, (img) => this.ops.readOwner(img));
  }

  /**
   * Hands the disk over: one `rbd_metadata_set` of `ephemera.owner` (atomic on the image header).
   * Works while QEMU has the disk open (metadata needs no exclusive lock).
   */
  async setOwner(disk: DiskRef, owner: OwnerStamp): Promise<DiskOwner> {
    const id = diskId(disk);
    assertValidOwnerStamp(owner);
    return this.ops.withImage(id, {}, async (img) => {
      const cur = await this.ops.readOwner(img);
      const next = cur ? handOver(cur, owner) : ownerRecord(parseDiskId(id)!, owner);
      await img.metadataSet(OWNER_KEY, formatOwner(next));
      return next;
    });
  }

  /** Watchers and exclusive-lock owners of the disk, each marked `blocklisted` (`ceph osd blocklist ls`). */
  async diskClients(disk: DiskRef): Promise<DiskClient[]> {
    return diskClients(this.ops, diskId(disk));
  }

  /** Blocklists the disk's watchers and lock owners (not this client): see the contract. */
  async fenceClients(disk: DiskRef): Promise<DiskClient[]> {
    return fenceClients(this.ops, diskId(disk));
  }

  /** The annotation `key` (image metadata `ephemera.note.<key>`), `null` when none. */
  getAnnotation(disk: DiskRef, key: string): Promise<string | null> {
    return getAnnotation(this.ops, diskId(disk), key);
  }

  /** Records the annotation `key` (image metadata `ephemera.note.<key>`). */
  setAnnotation(disk: DiskRef, key: string, value: string): Promise<void> {
    return setAnnotation(this.ops, diskId(disk), key, value);
  }

  async capacity(): Promise<Capacity> {
    try {
      const s = await this.cluster.poolStats(this.pool);
      const free = Math.max(0, s.maxAvailBytes ?? s.cluster.availBytes);
      return { totalBytes: Math.max(1, s.bytesUsed + free), freeBytes: free };
    } catch (e) {
      throw this.ops.translate(e);
    }
  }

  async diskSource(disk: DiskRef): Promise<NetworkDiskSource> {
    const id = diskId(disk);
    const secretUuid = await this.withImage(id, { readOnly: true }, (img) => img.metadataGet(SECRET_KEY));
    return {
      type: 'network',
      protocol: 'rbd',
      name: `${this.pool}/${id}`,
      hosts: this.monitors.map((m) => ({ host: m.host, port: m.port })),
      ...(this.options.secretUuid ? { auth: { username: this.clientId, secretUuid: this.options.secretUuid } } : {}),
      format: 'raw',
      ...(secretUuid ? { encryption: { format: 'luks', secretUuid } } : {}),
    };
  }

  // -------------------------------------------------------------------------------------------
  // Creates

  async createBlank(disk: DiskRef, sizeBytes: number, options: CreateBlankOptions = {}): Promise<CreateResult> {
    const started = Date.now();
    const id = diskId(disk);
    assertValidSize(sizeBytes);
    const format = options.format ?? 'raw';
    if (format !== 'raw')
      throw new InvalidArgumentError(
        'options.format',
        `the rbd backend stores raw disks only, not '${String(format)}'`,
        { backend: NAME, diskId: id },
      );
    if (options.encryption) checkEncryption(options.encryption, { backend: NAME, diskId: id });
    if (options.owner !== undefined) assertValidOwnerStamp(options.owner, 'options.owner');
    throwIfAborted(options.signal, 'createBlank');
    await this.ops.requireMonitor(id);
    if (options.encryption) return createEncryptedBlank(this.ctx, id, sizeBytes, options.encryption, options, started);
    try {
      await this.ops.io.create(id, sizeBytes);
    } catch (e) {
      throw this.ops.translate(e, id, options.signal);
    }
    try {
      await this.ops.stampOwner(id, options.owner);
    } catch (e) {
      await this.ops.removeQuietly(id);
      throw this.ops.translate(e, id, options.signal);
    }
    if (options.signal?.aborted) {
      await this.ops.removeQuietly(id);
      throw new AbortedError('createBlank aborted', { backend: NAME, diskId: id, cause: options.signal.reason });
    }
    return { method: 'blank', sizeBytes, durationMs: Date.now() - started };
  }

  async createFromImage(
    disk: DiskRef,
    image: SourceImage,
    options: CreateFromImageOptions = {},
  ): Promise<CreateResult> {
    const started = Date.now();
    const id = diskId(disk);
    const encryption = options.encryption;
    if (encryption) return createEncryptedFromImage(this, this.ctx, disk, image, { ...options, encryption }, started);
    if (options.sizeBytes !== undefined) assertValidSize(options.sizeBytes, 'options.sizeBytes');
    if (options.owner !== undefined) assertValidOwnerStamp(options.owner, 'options.owner');
    if (!image || typeof image !== 'object' || typeof image.open !== 'function')
      throw new InvalidArgumentError('image', 'expected a SourceImage', { backend: NAME, diskId: id });
    if (!Number.isSafeInteger(image.size) || image.size <= 0)
      throw new InvalidArgumentError('image.size', `expected a positive size, got ${String(image.size)}`, {
        backend: NAME,
        diskId: id,
      });
    throwIfAborted(options.signal, 'createFromImage');
    const monitor = this.ops.monitorCheck(id); // beside a clone; an import waits for it first
    const progress = new ProgressReporter(options.onProgress);

    const decision = decideClone(image, this.fsid, options.forceImport === true);
    let importReason: string;
    let rbdLocation: string | undefined;
    if (decision.kind === 'clone') {
      const job = { id, image, options, progress, started };
      const cloned = await cloneCandidates(this.ctx, job, decision.candidates, monitor);
      if (cloned.kind === 'cloned') return cloned.result;
      importReason = cloned.reason;
      rbdLocation = decision.candidates.map((c) => c.location).join(', ');
    } else {
      importReason = decision.reason;
      rbdLocation = decision.rbdLocation;
    }
    const down = await monitor;
    if (down) throw down.error;
    // The clone path relies on the clone's own EEXIST; an import checks first (before any download).
    if (await this.exists(disk))
      throw new AlreadyExistsError(`disk ${id} already exists`, { backend: NAME, diskId: id });
    if (this.options.neverDownloadIfOnRbd && rbdLocation && options.forceImport !== true) {
      throw new InvalidArgumentError(
        'image',
        `image ${image.id} is on RBD (${rbdLocation}) but cannot be cloned (${importReason}); ` +
          'neverDownloadIfOnRbd refuses to download it (fix the image or pass forceImport)',
        { backend: NAME, diskId: id },
      );
    }
    const format = String(image.diskFormat ?? '').toLowerCase();
    const job: ImportJob = { id, image, format, reason: importReason, options, progress, started };
    const known = RAW_FORMATS.has(format) || CONVERT_FORMATS.has(format);
    if (this.options.goldenImages && known && options.forceImport !== true) {
      const refused = goldenRefusal(image);
      if (!refused) return createFromGolden(this.ctx, await this.goldenContext(), job);
      job.reason = `${importReason}; no golden image: ${refused}`;
    }
    if (RAW_FORMATS.has(format)) return importRaw(this.ctx, job);
    if (CONVERT_FORMATS.has(format)) {
      const { source, skipped } =
        this.options.convertFromRbd === false
          ? { source: { kind: 'image-stream' } as const, skipped: [] }
          : await convertSource(this.ctx, image);
      const why = skipped.length ? `${job.reason}; ${skipped.join('; ')}` : job.reason;
      return importConverted(this.ctx, { ...job, reason: why }, source);
    }
    throw new InvalidArgumentError('image.diskFormat', `the rbd backend cannot import '${image.diskFormat}' images`, {
      backend: NAME,
      diskId: id,
    });
  }

  /**
   * Starts, without waiting, what the first clone would otherwise wait for: the cluster's clone
   * format and the images pool's ioctx (when known: the direct-snapshot pool is Glance's).
   * Failures are ignored here; the clone asks again.
   */
  private warm(): void {
    this.cloneFormat().catch(() => undefined);
    const imagesPool = this.options.directSnapshot?.pool;
    if (imagesPool) this.cluster.parentIoCtx(imagesPool, '').catch(() => undefined);
  }

  /** The clone format to use and why (the cluster's setting is read once, retried while unknown). */
  private cloneFormat(): Promise<CloneFormatPolicy> {
    const configured = this.options.cloneFormat ?? 'auto';
    if (configured !== 'auto') return Promise.resolve(cloneFormatPolicy(configured, undefined));
    this.cloneFormatPromise ??= this.ops.minCompatClient().then((value) => {
      // Unknown: decided per clone (format 1 if the snapshot is protected, else 2), asked again next time.
      if (!value) this.cloneFormatPromise = undefined;
      return cloneFormatPolicy('auto', value);
    });
    return this.cloneFormatPromise;
  }

  // -------------------------------------------------------------------------------------------
  // Changes

  async resize(disk: DiskRef, sizeBytes: number, options: OperationOptions = {}): Promise<void> {
    const id = diskId(disk);
    assertValidSize(sizeBytes);
    throwIfAborted(options.signal, 'resize');
    await this.withImage(id, {}, async (img) => {
      // Growing needs the LUKS payload grown with the key, which resize is not given.
      if (await img.metadataGet(SECRET_KEY))
        throw new UnsupportedOperationError('encryption', 'resize', { backend: NAME, diskId: id });
      const current = await img.size();
      if (sizeBytes < current)
        throw new InvalidArgumentError('sizeBytes', `${sizeBytes} would shrink ${id} (${current} bytes): grow only`, {
          backend: NAME,
          diskId: id,
        });
      if (sizeBytes > current) await img.resize(sizeBytes, { allowShrink: false });
    });
  }

  async createSnapshot(disk: DiskRef, snapshot: string): Promise<SnapshotInfo> {
    const id = diskId(disk);
    assertValidSnapshotName(snapshot);
    return this.withImage(id, {}, async (img) => {
      const snaps = await img.listSnapshots();
      if (snaps.some((s) => s.name === snapshot && s.namespace === 'user'))
        throw new AlreadyExistsError(`snapshot ${id}@${snapshot} already exists`, { backend: NAME, diskId: id });
      try {
        await img.createSnapshot(snapshot);
      } catch (e) {
        if (e instanceof ImageExists)
          throw new AlreadyExistsError(`snapshot ${id}@${snapshot} already exists`, {
            backend: NAME,
            diskId: id,
            cause: e,
          });
        throw e;
      }
      return { name: snapshot, sizeBytes: await img.size() };
    });
  }

  async listSnapshots(disk: DiskRef): Promise<SnapshotInfo[]> {
    const id = diskId(disk);
    return this.withImage(id, { readOnly: true }, async (img) =>
      (await img.listSnapshots())
        .filter((s) => s.namespace === 'user')
        .map((s) => ({ name: s.name, sizeBytes: s.size })),
    );
  }

  async removeSnapshot(disk: DiskRef, snapshot: string): Promise<boolean> {
    const id = diskId(disk);
    assertValidSnapshotName(snapshot);
    return this.withImage(id, {}, async (img) => {
      const snap = (await img.listSnapshots()).find((s) => s.name === snapshot && s.namespace === 'user');
      if (!snap) return false;
      await this.ops.dropSnapshot(id, img, snap.name, snap.protected);
      return true;
    });
  }

  async rollbackToSnapshot(disk: DiskRef, snapshot: string): Promise<void> {
    const id = diskId(disk);
    assertValidSnapshotName(snapshot);
    await this.withImage(id, {}, async (img) => {
      const snap = (await img.listSnapshots()).find((s) => s.name === snapshot && s.namespace === 'user');
      if (!snap) throw new NotFoundError(`snapshot ${id}@${snapshot} does not exist`, { backend: NAME, diskId: id });
      const watchers = await img.watchers();
      if (watchers.length > 1)
        throw new BusyError(
          `${id} is in use (${watchers.length - 1} other watcher(s)): stop the guest before a rollback`,
          { backend: NAME, diskId: id },
        );
      await img.rollbackToSnapshot(snapshot);
      if ((await img.size()) !== snap.size) await img.resize(snap.size, { allowShrink: true });
    });
  }

  /** Flattens the disk (a no-op without a parent), with `flatten` progress events. */
  async flatten(disk: DiskRef, options: FlattenOptions = {}): Promise<void> {
    await flattenDisk(this.ctx, disk, options);
  }

  /** The disk's clone chain depth (see `cloneDepth` in clone-depth.ts: rbd_get_parent up the chain). */
  async cloneDepth(disk: DiskRef): Promise<number> {
    return cloneDepth(this.ctx, disk);
  }

  /**
   * Snapshots the disk and turns the snapshot into a standalone image in the images pool, as
   * Nova's direct snapshot: snapshot `<disk>@<imageId>`, clone it into `<pool>/<imageId>`,
   * flatten, snapshot `snap`, protect, drop the temporary snapshot, and return
   * `rbd://<fsid>/<pool>/<imageId>/snap` for Glance. With `deferFlatten` the clone is not
   * flattened and the temporary snapshot stays (`flattenPending`): see `finishDirectSnapshot`. When the configured images-pool client may
   * not read this backend's pool (a Glance user usually cannot), the clone+flatten is done as a
   * streamed copy of the snapshot instead (same result: a flat image), read with this backend's
   * client and written with the images-pool client. Rolls back on failure.
   */
  async directSnapshot(disk: DiskRef, options: DirectSnapshotOptions): Promise<DirectSnapshotResult> {
    return directSnapshot(this.ctx, disk, options);
  }

  /**
   * Undoes an interrupted `directSnapshot(disk, { imageId })`: removes `<images pool>/<imageId>`
   * with its snapshots, then the temporary snapshot `ephemera-direct-<imageId>` of the disk (also
   * from the trash namespace when childless). A dead process's watch on the image is evicted;
   * other busy states are retried up to `busyTimeoutMs`. Idempotent: false when nothing was there.
   * `orphaned` (crash recovery): when neither was there, the snapshot creation may still land
   * (see `PROXIED_SNAP_SETTLE_MS` and `LOCAL_SNAP_SETTLE_MS` in direct-snapshot.ts): the disk is
   * watched for it for that long after this call began, and one that appears is removed.
   */
  async removeDirectSnapshot(disk: DiskRef, options: RemoveDirectSnapshotOptions): Promise<boolean> {
    return removeDirectSnapshot(this.ctx, disk, options);
  }

  /** Flattens a deferred direct snapshot's image, then drops its temporary snapshot (snapshot-flatten.ts). */
  async finishDirectSnapshot(disk: DiskRef, options: FinishDirectSnapshotOptions): Promise<boolean> {
    return finishDirectSnapshot(this.ctx, disk, options);
  }

  /** Image ids of the disk's deferred direct snapshots not yet finished (read from the cluster). */
  async pendingDirectSnapshots(disk: DiskRef): Promise<string[]> {
    return pendingDirectSnapshots(this.ctx, disk);
  }

  /**
   * Removes the disk and its snapshots; retries while it is busy (watchers: a running or just
   * killed QEMU) up to `busyTimeoutMs`. A disk whose snapshot has clones (e.g. a direct snapshot
   * not yet flattened, or a clone v2 child) is refused at once with `BusyError`: flatten or
   * remove the clones first. A half-removed disk (directory entry without header) is cleaned too.
   * Idempotent: true when something was removed, false when nothing existed.
   */
  async remove(disk: DiskRef, options: RemoveOptions = {}): Promise<boolean> {
    const id = diskId(disk);
    throwIfAborted(options.signal, 'remove');
    // An encrypted create killed midway may have left its plain copy.
    if (!disk.name.endsWith('.plain')) await this.ops.removeQuietly(diskId(plainSourceRef(disk)));
    // Deferred direct snapshots are Glance images of their own: finish them, or the disk would be busy.
    await finishPendingDirectSnapshots(this.ctx, disk);
    return this.ops.removeDisk(id, options);
  }

  /**
   * Resolves when a Ceph monitor answers; `BackendUnavailableError` within `connectTimeoutMs`
   * otherwise (the contract's optional health check, called by the driver before a spawn).
   */
  async checkAvailable(): Promise<void> {
    await this.ops.requireMonitor();
  }

  async close(): Promise<void> {
    await this.ops.close();
  }

  /** Opens `id`, runs `fn`, closes; errors translated (ImageNotFound -> NotFoundError). */
  private withImage<T>(
    id: string,
    opts: { readOnly?: boolean },
    fn: (img: Image) => Promise<T>,
    signal?: AbortSignal,
  ): Promise<T> {
    return this.ops.withImage(id, opts, fn, signal);
  }
}
