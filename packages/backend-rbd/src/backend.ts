import { execFile } from 'node:child_process';
import {
  AbortedError,
  AlreadyExistsError,
  BackendUnavailableError,
  BusyError,
  IMAGE_BACKEND_API_VERSION,
  ImageSourceError,
  InsufficientCapacityError,
  InvalidArgumentError,
  NotFoundError,
  ProgressReporter,
  UnsafeImageError,
  UnsupportedOperationError,
  assertValidSize,
  assertValidSnapshotName,
  diskId,
  isImageBackendError,
  listFilterPrefix,
  parseDiskId,
  readImage,
  retryWhileBusy,
  sleep,
  throwIfAborted,
  type BackendCapabilities,
  type Capacity,
  type CreateBlankOptions,
  type CreateFromImageOptions,
  type CreateResult,
  type DirectSnapshotOptions,
  type RemoveDirectSnapshotOptions,
  type DirectSnapshotResult,
  type DiskFormat,
  type DiskInfo,
  type DiskRef,
  type ImageBackend,
  type ListFilter,
  type NetworkDiskSource,
  type NetworkHost,
  type OperationOptions,
  type RemoveOptions,
  type SnapshotInfo,
  type SourceImage,
} from '@ephemera/image-backend';
import {
  connect,
  ConnectionShutdown,
  DiskQuotaExceeded,
  ImageBusy,
  ImageExists,
  ImageHasSnapshots,
  ImageNotFound,
  InvalidArgument,
  NoSpace,
  ObjectNotFound,
  PermissionDenied,
  RbdError,
  Timeout,
  type Cluster,
  type Image,
  type IoCtx,
} from '@ephemera/ceph-rbd-napi';
import { LoopbackImageServer, RangeUnavailableError } from './loopback.js';
import { formatRbdUrl, parseMonHost, parseRbdUrl, readMonHost, type RbdUrl } from './locations.js';
import { allowsCloneV2, validateOptions, type RbdBackendOptions } from './options.js';
import { QemuConvertError, httpSource, rbdTargetUri, runConvert } from './qemu.js';
import { InspectedStream, Window, blocks, checkDeclared, isAllZero } from './stream.js';
import { withParentDeathSignal } from '@ephemera/qemu-img-wrapper';


const NAME = 'rbd';
const MiB = 1024 * 1024;
/**
 * How long, after a killed process's direct snapshot, its temporary snapshot may still appear
 * when another client holds the disk's exclusive lock (a running QEMU). The killed client's
 * `rbd_snap_create` was then forwarded to that lock owner as a watch-notify; librbd sends it with
 * a 5 s notify timeout (`Notifier::NOTIFY_TIMEOUT`, src/librbd/watcher/Notifier.cc): the OSD
 * delivers it to the owner at once or not at all (no redelivery after the timeout), and the owner
 * then runs the snapshot creation itself (quiesce its I/O, a snapshot id from a monitor, the
 * header update: tens of ms). 5 s + 2 s for the owner's work. The killed client's own wait for
 * the owner's answer (`rbd_request_timed_out_seconds`, 30 s) bounds nothing: it is dead.
 */
const PROXIED_SNAP_SETTLE_MS = 7_000;
/**
 * The same without another lock owner: the killed client did the work itself, and only OSD and
 * monitor requests it had already sent can still land (each step is sent after the previous one
 * answered), within the OSD's queueing time.
 */
const LOCAL_SNAP_SETTLE_MS = 1_000;

/** Declared formats imported byte for byte (qemu reads them as raw). */
const RAW_FORMATS = new Set(['raw', 'iso', 'ami', 'ari', 'aki']);
/** Declared formats converted with qemu-img (vetted by the inspector first). */
const CONVERT_FORMATS = new Set(['qcow2', 'vmdk', 'vhd', 'vpc', 'vhdx', 'vdi', 'qed']);

/** How a clone was (or would be) made. */
interface ClonePlan {
  url: RbdUrl;
  location: string;
}

/**
 * What `createFromImage` decided before doing anything: clone candidates (every `rbd://` location
 * in this cluster, in the order given, tried one after the other as Nova's `Rbd.clone` does), or
 * an import and why.
 */
type Decision = { kind: 'clone'; candidates: ClonePlan[] } | { kind: 'import'; reason: string; rbdLocation?: string };

/** Where `qemu-img convert` reads a non-raw image from. */
type ConvertSource =
  /** qemu-img opens the snapshot itself (this client has write caps on its pool). */
  | { kind: 'rbd-direct'; url: RbdUrl }
  /** The binding reads the snapshot read-only and serves it to qemu-img on the loopback. */
  | { kind: 'rbd-stream'; url: RbdUrl }
  /** `SourceImage.open()` (Glance's download), served on the loopback. */
  | { kind: 'image-stream' };

/**
 * The Ceph RBD image backend, as Nova's `Rbd` image backend:
 * - instance disks are RBD images `<instance-uuid>_<disk>` in one pool;
 * - an image whose Glance location is `rbd://<fsid>/<pool>/<image>/<snap>` in this cluster and
 *   which is raw is cloned copy-on-write (format 2 when the cluster allows, else format 1 of
 *   the protected snapshot), then grown to the requested size;
 * - anything else is streamed from its source into a new image with many aio writes in flight,
 *   skipping all-zero blocks, verifying the declared hash as it streams, never staged on local
 *   disk; non-raw images go through `qemu-img convert`, which reads the stream from a loopback
 *   HTTP server inside the backend and writes to RBD directly;
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

  private readonly clientId: string;
  private readonly busyTimeoutMs: number;
  private readonly blockBytes: number;
  private readonly inFlight: number;
  private cloneFormatPromise: Promise<{ format: 1 | 2 | undefined; why: string }> | undefined;
  private dsCluster: Promise<Cluster> | undefined;
  private lockCluster: Promise<{ cluster: Cluster; io: IoCtx }> | undefined;

  private constructor(
    private readonly options: RbdBackendOptions,
    private readonly cluster: Cluster,
    private readonly io: IoCtx,
    fsid: string,
    monitors: NetworkHost[],
  ) {
    this.pool = options.pool;
    this.fsid = fsid.toLowerCase();
    this.monitors = Object.freeze(monitors.map((m) => Object.freeze({ ...m })));
    this.clientId = options.clientId ?? 'admin';
    this.busyTimeoutMs = options.busyTimeoutMs ?? 30_000;
    this.blockBytes = options.importBlockBytes ?? 4 * MiB;
    this.inFlight = options.importInFlight ?? 16;
    this.capabilities = Object.freeze({
      clone: true,
      snapshot: true,
      rollback: true,
      flatten: true,
      resize: true,
      sharedStorage: true,
      directSnapshot: options.directSnapshot !== undefined,
      encryption: false,
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
    let monitors = options.monitors ? [...options.monitors] : undefined;
    if (!monitors) {
      let monHost: string | undefined;
      try {
        monHost = await readMonHost(options.confPath);
      } catch (e) {
        throw new BackendUnavailableError(`cannot read ceph.conf ${options.confPath}: ${(e as Error).message}`, { backend: NAME, cause: e });
      }
      monitors = monHost ? parseMonHost(monHost) : [];
      if (monitors.length === 0) throw new InvalidArgumentError('monitors', `no mon_host in ${options.confPath}: give monitors explicitly`, { backend: NAME });
    }
    let cluster: Cluster;
    try {
      cluster = await connect({
        confPath: options.confPath,
        clientId: options.clientId ?? 'admin',
        ...(options.keyringPath ? { keyringPath: options.keyringPath } : {}),
        timeoutMs: options.connectTimeoutMs ?? 10_000,
      });
    } catch (e) {
      throw new BackendUnavailableError(`cannot connect to the cluster as client.${options.clientId ?? 'admin'}: ${(e as Error).message}`, {
        backend: NAME,
        cause: e,
      });
    }
    try {
      const io = await cluster.openIoCtx(options.pool);
      const fsid = await cluster.fsid();
      return new RbdBackend(options, cluster, io, fsid, monitors);
    } catch (e) {
      await cluster.close().catch(() => undefined);
      throw new BackendUnavailableError(`cannot open pool ${options.pool}: ${(e as Error).message}`, { backend: NAME, cause: e });
    }
  }

  // -------------------------------------------------------------------------------------------
  // Queries

  async exists(disk: DiskRef): Promise<boolean> {
    const id = diskId(disk);
    try {
      const img = await this.io.open(id, { readOnly: true });
      await img.close();
      return true;
    } catch (e) {
      if (e instanceof ImageNotFound) return false;
      throw this.translate(e, id);
    }
  }

  async info(disk: DiskRef): Promise<DiskInfo> {
    const id = diskId(disk);
    return this.withImage(id, { readOnly: true }, (img) => this.describe(id, img));
  }

  async list(filter: ListFilter = {}): Promise<DiskInfo[]> {
    const prefix = listFilterPrefix(filter, NAME);
    let names: string[];
    try {
      names = await this.io.list();
    } catch (e) {
      throw this.translate(e);
    }
    const out: DiskInfo[] = [];
    for (const name of names.sort()) {
      const ref = parseDiskId(name);
      if (!ref || (prefix !== undefined && !name.startsWith(prefix))) continue;
      try {
        out.push(await this.withImage(name, { readOnly: true }, (img) => this.describe(name, img)));
      } catch (e) {
        if (isImageBackendError(e, 'NOT_FOUND')) continue; // removed meanwhile
        throw e;
      }
    }
    return out;
  }

  async capacity(): Promise<Capacity> {
    try {
      const s = await this.cluster.poolStats(this.pool);
      const free = Math.max(0, s.maxAvailBytes ?? s.cluster.availBytes);
      return { totalBytes: Math.max(1, s.bytesUsed + free), freeBytes: free };
    } catch (e) {
      throw this.translate(e);
    }
  }

  async diskSource(disk: DiskRef): Promise<NetworkDiskSource> {
    const id = diskId(disk);
    if (!(await this.exists(disk))) throw this.notFound(id);
    return {
      type: 'network',
      protocol: 'rbd',
      name: `${this.pool}/${id}`,
      hosts: this.monitors.map((m) => ({ host: m.host, port: m.port })),
      ...(this.options.secretUuid ? { auth: { username: this.clientId, secretUuid: this.options.secretUuid } } : {}),
      format: 'raw',
    };
  }

  // -------------------------------------------------------------------------------------------
  // Creates

  async createBlank(disk: DiskRef, sizeBytes: number, options: CreateBlankOptions = {}): Promise<CreateResult> {
    const started = Date.now();
    const id = diskId(disk);
    assertValidSize(sizeBytes);
    const format = options.format ?? 'raw';
    if (format !== 'raw') throw new InvalidArgumentError('options.format', `the rbd backend stores raw disks only, not '${String(format)}'`, { backend: NAME, diskId: id });
    if (options.encryption) throw new UnsupportedOperationError('encryption', 'createBlank', { backend: NAME, diskId: id });
    throwIfAborted(options.signal, 'createBlank');
    await this.requireMonitor(id);
    try {
      await this.io.create(id, sizeBytes);
    } catch (e) {
      throw this.translate(e, id, options.signal);
    }
    if (options.signal?.aborted) {
      await this.removeQuietly(id);
      throw new AbortedError('createBlank aborted', { backend: NAME, diskId: id, cause: options.signal.reason });
    }
    return { method: 'blank', sizeBytes, durationMs: Date.now() - started };
  }

  async createFromImage(disk: DiskRef, image: SourceImage, options: CreateFromImageOptions = {}): Promise<CreateResult> {
    const started = Date.now();
    const id = diskId(disk);
    if (options.encryption) throw new UnsupportedOperationError('encryption', 'createFromImage', { backend: NAME, diskId: id });
    if (options.sizeBytes !== undefined) assertValidSize(options.sizeBytes, 'options.sizeBytes');
    if (!image || typeof image !== 'object' || typeof image.open !== 'function')
      throw new InvalidArgumentError('image', 'expected a SourceImage', { backend: NAME, diskId: id });
    if (!Number.isSafeInteger(image.size) || image.size <= 0)
      throw new InvalidArgumentError('image.size', `expected a positive size, got ${String(image.size)}`, { backend: NAME, diskId: id });
    throwIfAborted(options.signal, 'createFromImage');
    await this.requireMonitor(id);
    if (await this.exists(disk)) throw new AlreadyExistsError(`disk ${id} already exists`, { backend: NAME, diskId: id });
    const progress = new ProgressReporter(options.onProgress);

    const decision = this.decide(image, options.forceImport === true);
    let importReason: string;
    let rbdLocation: string | undefined;
    if (decision.kind === 'clone') {
      // Every local candidate before any import; each one skipped says why (in the result).
      const skipped: string[] = [];
      for (const plan of decision.candidates) {
        throwIfAborted(options.signal, 'createFromImage');
        const cloned = await this.tryClone(id, image, plan, options, progress, started);
        if (cloned.kind === 'cloned') {
          const r = cloned.result;
          return skipped.length ? { ...r, reason: `${r.reason}; ${skipped.join('; ')}` } : r;
        }
        skipped.push(`skipped ${plan.location}: ${cloned.reason}`);
      }
      importReason = `no rbd location in this cluster could be cloned: ${skipped.join('; ')}`;
      rbdLocation = decision.candidates.map((c) => c.location).join(', ');
    } else {
      importReason = decision.reason;
      rbdLocation = decision.rbdLocation;
    }
    if (this.options.neverDownloadIfOnRbd && rbdLocation && options.forceImport !== true) {
      throw new InvalidArgumentError(
        'image',
        `image ${image.id} is on RBD (${rbdLocation}) but cannot be cloned (${importReason}); ` +
          'neverDownloadIfOnRbd refuses to download it (fix the image or pass forceImport)',
        { backend: NAME, diskId: id },
      );
    }
    const format = String(image.diskFormat ?? '').toLowerCase();
    if (RAW_FORMATS.has(format)) return this.importRaw(id, image, format, importReason, options, progress, started);
    if (CONVERT_FORMATS.has(format)) {
      const { source, skipped } =
        this.options.convertFromRbd === false ? { source: { kind: 'image-stream' } as const, skipped: [] } : await this.convertSource(image);
      const why = skipped.length ? `${importReason}; ${skipped.join('; ')}` : importReason;
      return this.importConverted(id, image, format, why, options, progress, started, source);
    }
    throw new InvalidArgumentError('image.diskFormat', `the rbd backend cannot import '${image.diskFormat}' images`, { backend: NAME, diskId: id });
  }

  /** Picks clone or import from the image record alone (no I/O). */
  private decide(image: SourceImage, forceImport: boolean): Decision {
    const rbd = (image.locations ?? [])
      .map((l) => ({ location: l.url, url: parseRbdUrl(l.url) }))
      .filter((l): l is { location: string; url: RbdUrl } => l.url !== undefined);
    const local = this.localRbdLocations(image);
    const here = local[0];
    const anyRbd = here?.location ?? rbd[0]?.location;
    const withLoc = (reason: string): Decision => ({ kind: 'import', reason, ...(anyRbd ? { rbdLocation: anyRbd } : {}) });
    if (forceImport) return withLoc('forceImport: clone not attempted');
    if (rbd.length === 0) return withLoc('no rbd:// location (image not in an RBD store)');
    if (!here) return withLoc(`rbd location is in another cluster (fsid ${rbd[0]!.url.fsid}, this cluster ${this.fsid})`);
    const format = String(image.diskFormat ?? '').toLowerCase();
    if (format !== 'raw') return withLoc(`image is ${format || 'of unknown format'}, not raw: a clone would hand QEMU ${format} data as a raw disk`);
    return { kind: 'clone', candidates: local };
  }

  /** Every `rbd://` location of the image in this cluster, in the order of `image.locations`. */
  private localRbdLocations(image: SourceImage): ClonePlan[] {
    const out: ClonePlan[] = [];
    for (const l of image.locations ?? []) {
      const u = parseRbdUrl(l.url);
      if (u && u.fsid === this.fsid) out.push({ url: u, location: l.url });
    }
    return out;
  }

  /**
   * Where qemu-img reads a non-raw image: the first local `rbd://` snapshot this client can open
   * read-only (what the resolver's rbd-copy plan promises, `read <pool>/<image>@<snap>`), by
   * qemu-img itself when it may open it, else through the binding; Glance's stream only when no
   * local snapshot is readable. Each skipped location says why.
   */
  private async convertSource(image: SourceImage): Promise<{ source: ConvertSource; skipped: string[] }> {
    const skipped: string[] = [];
    for (const { url, location } of this.localRbdLocations(image)) {
      try {
        const io = await this.cluster.parentIoCtx(url.pool, '');
        const img = await io.open(url.image, { snapshot: url.snapshot, readOnly: true });
        await img.close();
      } catch (e) {
        if (!(e instanceof RbdError)) throw e;
        skipped.push(`skipped ${location}: ${url.pool}/${url.image}@${url.snapshot} is not readable (${e.code}: ${e.message})`);
        continue;
      }
      return { source: { kind: (await this.qemuCanRead(url)) ? 'rbd-direct' : 'rbd-stream', url }, skipped };
    }
    return { source: { kind: 'image-stream' }, skipped };
  }

  /**
   * Whether qemu-img could open this snapshot as our client: QEMU's rbd driver always uses
   * `rbd_open`, which registers a watch and so needs write caps on the pool (a Nova-style
   * `profile rbd-read-only pool=images` user cannot; the stream path is used then).
   */
  private async qemuCanRead(u: RbdUrl): Promise<boolean> {
    try {
      const io = await this.cluster.parentIoCtx(u.pool, '');
      const img = await io.open(u.image, { snapshot: u.snapshot });
      await img.close();
      return true;
    } catch {
      return false;
    }
  }

  /** The clone format to use and why. */
  private cloneFormat(): Promise<{ format: 1 | 2 | undefined; why: string }> {
    const configured = this.options.cloneFormat ?? 'auto';
    if (configured !== 'auto') return Promise.resolve({ format: configured, why: 'configured' });
    this.cloneFormatPromise ??= new Promise((resolve) => {
      const connectTimeout = String(Math.max(1, Math.ceil((this.options.connectTimeoutMs ?? 10_000) / 1000)));
      this.cephCli(['--connect-timeout', connectTimeout, 'osd', 'get-require-min-compat-client'], (err, stdout) => {
        const value = String(stdout ?? '').trim();
        if (err || !value) {
          // Unknown: decided per clone (format 1 if the snapshot is protected, else 2).
          this.cloneFormatPromise = undefined;
          resolve({ format: undefined, why: 'require_min_compat_client unknown' });
          return;
        }
        resolve(allowsCloneV2(value) ? { format: 2, why: `require_min_compat_client ${value} >= mimic` } : { format: 1, why: `require_min_compat_client ${value} < mimic` });
      });
    });
    return this.cloneFormatPromise;
  }

  private async tryClone(
    id: string,
    image: SourceImage,
    plan: ClonePlan,
    options: CreateFromImageOptions,
    progress: ProgressReporter,
    started: number,
  ): Promise<{ kind: 'cloned'; result: CreateResult } | { kind: 'import'; reason: string }> {
    const { pool, image: parentName, snapshot: snap } = plan.url;
    const parentLabel = `${pool}/${parentName}@${snap}`;
    // Look at the parent snapshot: it must exist and be readable; its size and protection.
    let parentSize: number;
    let isProtected: boolean;
    try {
      const parentIo = await this.cluster.parentIoCtx(pool, '');
      const parent = await parentIo.open(parentName, { snapshot: snap, readOnly: true });
      try {
        parentSize = await parent.size();
        isProtected = await parent.isSnapshotProtected(snap);
      } finally {
        await parent.close().catch(() => undefined);
      }
    } catch (e) {
      if (e instanceof RbdError) return { kind: 'import', reason: `parent ${parentLabel} is not usable (${e.code}: ${e.message})` };
      throw e;
    }
    const wanted = options.sizeBytes ?? parentSize;
    if (wanted < parentSize)
      throw new InvalidArgumentError('options.sizeBytes', `${wanted} is smaller than the image (${parentSize} bytes)`, { backend: NAME, diskId: id });
    throwIfAborted(options.signal, 'createFromImage');
    const cf = await this.cloneFormat();
    let format: 1 | 2;
    let why: string;
    if (cf.format === 2) [format, why] = [2, cf.why];
    else if (cf.format === 1) {
      if (!isProtected)
        return { kind: 'import', reason: `clone format 2 not allowed (${cf.why}) and parent snapshot ${parentLabel} is not protected` };
      [format, why] = [1, `${cf.why}; parent snapshot protected`];
    } else [format, why] = isProtected ? [1, `${cf.why}; parent snapshot protected`] : [2, `${cf.why}; parent snapshot unprotected`];
    progress.report('clone', 0, wanted);
    try {
      await this.io.clone({ parent: { pool, image: parentName, snap }, dest: { name: id }, cloneFormat: format });
    } catch (e) {
      if (e instanceof ImageExists) throw new AlreadyExistsError(`disk ${id} already exists`, { backend: NAME, diskId: id, cause: e });
      if (e instanceof PermissionDenied || e instanceof InvalidArgument || e instanceof ImageNotFound || e instanceof ObjectNotFound)
        return { kind: 'import', reason: `clone of ${parentLabel} failed (${e.code}: ${e.message})` };
      throw this.translate(e, id, options.signal);
    }
    try {
      if (wanted > parentSize) {
        progress.report('resize', 0, wanted);
        await this.withImage(id, {}, (img) => img.resize(wanted, { allowShrink: false }));
      }
      throwIfAborted(options.signal, 'createFromImage');
    } catch (e) {
      await this.removeQuietly(id);
      throw this.translate(e, id, options.signal);
    }
    progress.finish(wanted, wanted);
    return {
      kind: 'cloned',
      result: {
        method: 'cloned',
        reason: `clone format ${format} of ${parentLabel} (${why}) for image ${image.id}`,
        sizeBytes: wanted,
        durationMs: Date.now() - started,
      },
    };
  }

  /**
   * Streams a raw image into a new RBD image: the inspector vets the first bytes before
   * anything is created; blocks of `importBlockBytes` are written with up to `importInFlight`
   * aio writes in flight; all-zero blocks are skipped (the new image reads as zeros already);
   * the declared hash is checked as the bytes pass (`readImage`). Any failure removes the image.
   */
  private async importRaw(
    id: string,
    image: SourceImage,
    format: string,
    reason: string,
    options: CreateFromImageOptions,
    progress: ProgressReporter,
    started: number,
  ): Promise<CreateResult> {
    const size = Math.max(options.sizeBytes ?? 0, image.size);
    if (options.sizeBytes !== undefined && options.sizeBytes < image.size)
      throw new InvalidArgumentError('options.sizeBytes', `${options.sizeBytes} is smaller than the image (${image.size} bytes)`, { backend: NAME, diskId: id });
    const stream = new InspectedStream(readImage(image, { signal: options.signal, progress, backend: NAME })[Symbol.asyncIterator]());
    let created = false;
    let img: Image | undefined;
    const window = new Window(this.inFlight);
    try {
      const head = await stream.readHead();
      if (head) checkDeclared(head, format, NAME, id); // e.g. qcow2 declared raw: refused, nothing created
      await this.io.create(id, size);
      created = true;
      img = await this.io.open(id);
      let offset = 0;
      for await (const block of blocks(stream.chunks(), this.blockBytes)) {
        const at = offset;
        offset += block.length;
        if (isAllZero(block)) continue;
        const target = img;
        await window.push(() => target.write(at, block));
      }
      await window.drain();
      await img.flush();
      checkDeclared(stream.end(), format, NAME, id);
      throwIfAborted(options.signal, 'createFromImage');
      const done = img;
      img = undefined;
      await done.close();
      progress.finish(image.size, image.size);
      return { method: 'imported', reason, bytesWritten: image.size, sizeBytes: size, durationMs: Date.now() - started };
    } catch (e) {
      await stream.close();
      // Close before removing: an open handle keeps its watch (and the exclusive lock), so the
      // removal would be EBUSY. close() waits for the in-flight writes (each bounded by
      // rados_osd_op_timeout) and releases the handle even when the lock release fails (OSD
      // down); remove() then clears the lock this client left (see removeOwnStaleLock).
      await window.settle();
      if (img) {
        const open = img;
        img = undefined;
        await open.close().catch(() => undefined);
      }
      if (created) await this.removeQuietly(id);
      throw this.translate(e, id, options.signal, created ? undefined : 'create');
    } finally {
      // Never leave the handle open (e.g. close() of the success path threw).
      if (img) await img.close().catch(() => undefined);
    }
  }

  /**
   * Converts a non-raw image with `qemu-img convert -O raw` straight into RBD; nothing is
   * staged on local disk. The inspector vets the first bytes (declared format, no backing or
   * data file, no encryption, a virtual size) before the target exists. Where qemu-img reads
   * (`from`, see `convertSource`):
   * - `rbd-direct` (an `rbd://` location in this cluster that qemu may open): the Glance snapshot
   *   itself, through librbd (random access, so any qcow2 layout works), while the same bytes are
   *   read through the binding to check the declared hash; a mismatch stops qemu-img and removes
   *   the target;
   * - otherwise a stream (`rbd-stream`: that snapshot read read-only through the binding, for a
   *   client without write caps there; `image-stream`: `SourceImage.open()`), served by a
   *   loopback HTTP server with byte ranges from a bounded memory window (qemu-img's reads of a
   *   qcow2 written by qemu-img are nearly sequential); afterwards the rest of the stream is read
   *   so its size and hash are checked.
   * Any failure removes the target.
   */
  private async importConverted(
    id: string,
    image: SourceImage,
    format: string,
    reason: string,
    options: CreateFromImageOptions,
    progress: ProgressReporter,
    started: number,
    from: ConvertSource,
  ): Promise<CreateResult> {
    const direct = from.kind === 'rbd-direct' ? from.url : undefined;
    const fromRbd = from.kind === 'image-stream' ? undefined : from.url;
    const source: SourceImage = fromRbd ? { ...image, open: async () => this.readRbd(fromRbd) } : image;
    // Direct: progress comes from qemu-img only (the hash read runs alongside).
    const stream = new InspectedStream(
      readImage(source, { signal: options.signal, ...(direct ? {} : { progress }), backend: NAME })[Symbol.asyncIterator](),
    );
    const declared = format === 'vpc' ? 'vhd' : format;
    let created = false;
    let killed = false;
    let server: LoopbackImageServer | undefined;
    try {
      const head = await stream.readHead();
      if (!head) {
        // The inspector found no header it knows at offset 0: for formats whose header is there,
        // that means the content is not what Glance declares (say so, not just "undecided").
        const atStart = ['qcow2', 'vmdk', 'vdi', 'vhdx', 'qed'].includes(declared);
        throw new UnsafeImageError(
          atStart ? 'format-mismatch' : 'format-undecided',
          atStart
            ? `image ${image.id}: declared ${declared} but it does not start with a ${declared} header (the content looks like raw data)`
            : `image ${image.id}: its ${format} headers could not be vetted from the first bytes`,
          { backend: NAME, diskId: id },
        );
      }
      const vetted = checkDeclared(head, declared, NAME, id);
      const virtualSize = vetted.virtualSize;
      if (virtualSize === undefined || !Number.isSafeInteger(virtualSize) || virtualSize <= 0)
        throw new UnsafeImageError('virtual-size', `image ${image.id}: no valid virtual size in its header`, { backend: NAME, diskId: id });
      if (options.sizeBytes !== undefined && options.sizeBytes < virtualSize)
        throw new InvalidArgumentError('options.sizeBytes', `${options.sizeBytes} is smaller than the image's virtual size ${virtualSize}`, { backend: NAME, diskId: id });
      const size = Math.max(options.sizeBytes ?? 0, virtualSize);
      await this.io.create(id, size);
      created = true;
      const rbd = (pool: string, name: string, snapshot?: string): string =>
        rbdTargetUri({
          pool,
          image: name,
          ...(snapshot ? { snapshot } : {}),
          user: this.clientId,
          confPath: this.options.confPath,
          ...(this.options.keyringPath ? { keyringPath: this.options.keyringPath } : {}),
        });
      const target = rbd(this.pool, id);
      const common = {
        timeoutMs: this.options.convertTimeoutMs ?? 3_600_000,
        ...(this.options.qemuImgBinary ? { binary: this.options.qemuImgBinary } : {}),
        onProgress: (pct: number) => progress.report('convert', Math.floor((pct / 100) * virtualSize), virtualSize),
      };
      const args = ['-n', '--target-is-zero', '-f', vetted.qemuFormat, '-O', 'raw'];
      if (direct) {
        const stop = new AbortController();
        const onAbort = (): void => stop.abort(options.signal?.reason);
        options.signal?.addEventListener('abort', onAbort, { once: true });
        const verify = (async () => {
          for await (const chunk of stream.chunks()) void chunk; // readImage hashes and counts
        })();
        verify.catch((e: unknown) => stop.abort(e));
        const convert = runConvert([...args, rbd(direct.pool, direct.image, direct.snapshot), target], {
          ...common,
          signal: stop.signal,
          graceMs: 200,
          onKill: () => (killed = true),
        });
        const [c, v] = await Promise.allSettled([convert, verify]);
        options.signal?.removeEventListener('abort', onAbort);
        if (v.status === 'rejected') throw v.reason;
        if (c.status === 'rejected') throw c.reason;
      } else {
        server = new LoopbackImageServer(stream.chunks()[Symbol.asyncIterator](), {
          size: image.size,
          ...(this.options.convertStream?.headBytes ? { headBytes: this.options.convertStream.headBytes } : {}),
          ...(this.options.convertStream?.windowBytes ? { windowBytes: this.options.convertStream.windowBytes } : {}),
        });
        await server.listen();
        const srv = server;
        // Stop qemu-img on an abort or when the stream fails (download, hash, window): first
        // cooperatively (its reads fail and it exits, closing librbd cleanly), then with signals
        // (qemu's curl driver can miss a closed connection and wait for its own timeout).
        const stop = new AbortController();
        const onAbort = (): void => stop.abort(options.signal?.reason);
        options.signal?.addEventListener('abort', onAbort, { once: true });
        if (options.signal?.aborted) onAbort();
        srv.onFail = (err) => stop.abort(err);
        try {
          await runConvert([...args, httpSource(srv.url, { timeoutSeconds: 600 }), target], {
            ...common,
            signal: stop.signal,
            graceMs: 2_000,
            onAbort: () => srv.fail(new AbortedError('createFromImage aborted', { backend: NAME, diskId: id })),
            onKill: () => (killed = true),
          });
        } catch (e) {
          // The stream's own failure (download, hash, abort, window) explains qemu-img's.
          throw srv.error ?? e;
        } finally {
          options.signal?.removeEventListener('abort', onAbort);
        }
        await srv.drain();
      }
      checkDeclared(stream.end(), declared, NAME, id);
      throwIfAborted(options.signal, 'createFromImage');
      progress.finish(image.size, image.size);
      const via =
        from.kind === 'rbd-direct'
          ? `; converted by qemu-img reading ${from.url.pool}/${from.url.image}@${from.url.snapshot}`
          : from.kind === 'rbd-stream'
            ? `; converted by qemu-img from the stream of ${from.url.pool}/${from.url.image}@${from.url.snapshot} (read-only through librbd)`
            : '; converted by qemu-img from the stream';
      return { method: 'imported', reason: reason + via, bytesWritten: image.size, sizeBytes: size, durationMs: Date.now() - started };
    } catch (e) {
      if (server) await server.close().catch(() => undefined);
      await stream.close();
      if (created) {
        // A killed qemu-img leaves its watch on the target until the OSD times it out (~30 s):
        // evict it (only qemu-img can watch an image this call just created).
        if (killed) await this.evictWatchers(id);
        await this.removeQuietly(id);
      }
      if (e instanceof RangeUnavailableError)
        throw new ImageSourceError(`image ${image.id}: ${e.message}`, { backend: NAME, diskId: id, cause: e });
      if (e instanceof QemuConvertError)
        throw new ImageSourceError(`image ${image.id}: ${e.message}`, { backend: NAME, diskId: id, cause: e });
      throw this.translate(e, id, options.signal, created ? undefined : 'create');
    } finally {
      if (server) await server.close().catch(() => undefined);
    }
  }

  /** Reads an RBD snapshot sequentially, a few aio reads ahead. */
  private async *readRbd(u: RbdUrl): AsyncGenerator<Uint8Array> {
    const io = await this.cluster.parentIoCtx(u.pool, '');
    const img = await io.open(u.image, { snapshot: u.snapshot, readOnly: true });
    const pending: Promise<Buffer>[] = [];
    try {
      const size = await img.size();
      let next = 0;
      const issue = (): void => {
        while (pending.length < 4 && next < size) {
          const len = Math.min(this.blockBytes, size - next);
          const p = img.read(next, len);
          p.catch(() => undefined);
          pending.push(p);
          next += len;
        }
      };
      issue();
      while (pending.length) {
        const block = await pending.shift()!;
        issue();
        yield block;
      }
    } finally {
      await Promise.allSettled(pending);
      await img.close().catch(() => undefined);
    }
  }

  /** Blocklists (60 s) the clients watching `id` (in `io`, default this pool) with the ceph CLI (`profile rbd` allows it). */
  private async evictWatchers(id: string, io: IoCtx = this.io): Promise<void> {
    let addresses: string[] = [];
    try {
      const img = await io.open(id, { readOnly: true });
      try {
        addresses = (await img.watchers()).map((w) => w.address);
      } finally {
        await img.close();
      }
    } catch {
      return;
    }
    for (const addr of addresses) {
      await new Promise<void>((resolve) => this.cephCli(['osd', 'blocklist', 'add', addr, '60'], () => resolve()));
    }
  }

  /**
   * Runs the ceph CLI as this backend's client (`--conf`, `--id`, `--keyring` then `args`; argv,
   * 30 s timeout, C locale) under `setpriv --pdeathsig KILL`, so that it dies with this process.
   */
  private cephCli(args: string[], callback: (err: Error | null, stdout: string) => void): void {
    const auth = ['--conf', this.options.confPath, '--id', this.clientId, ...(this.options.keyringPath ? ['--keyring', this.options.keyringPath] : [])];
    const [file, ...argv] = withParentDeathSignal([this.options.cephBinary ?? 'ceph', ...auth, ...args]);
    execFile(file!, argv, { timeout: 30_000, env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', LC_ALL: 'C' } }, (err, stdout) => callback(err, String(stdout ?? '')));
  }

  // -------------------------------------------------------------------------------------------
  // Changes

  async resize(disk: DiskRef, sizeBytes: number, options: OperationOptions = {}): Promise<void> {
    const id = diskId(disk);
    assertValidSize(sizeBytes);
    throwIfAborted(options.signal, 'resize');
    await this.withImage(id, {}, async (img) => {
      const current = await img.size();
      if (sizeBytes < current) throw new InvalidArgumentError('sizeBytes', `${sizeBytes} would shrink ${id} (${current} bytes): grow only`, { backend: NAME, diskId: id });
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
        if (e instanceof ImageExists) throw new AlreadyExistsError(`snapshot ${id}@${snapshot} already exists`, { backend: NAME, diskId: id, cause: e });
        throw e;
      }
      return { name: snapshot, sizeBytes: await img.size() };
    });
  }

  async listSnapshots(disk: DiskRef): Promise<SnapshotInfo[]> {
    const id = diskId(disk);
    return this.withImage(id, { readOnly: true }, async (img) =>
      (await img.listSnapshots()).filter((s) => s.namespace === 'user').map((s) => ({ name: s.name, sizeBytes: s.size })),
    );
  }

  async removeSnapshot(disk: DiskRef, snapshot: string): Promise<boolean> {
    const id = diskId(disk);
    assertValidSnapshotName(snapshot);
    return this.withImage(id, {}, async (img) => {
      const snap = (await img.listSnapshots()).find((s) => s.name === snapshot && s.namespace === 'user');
      if (!snap) return false;
      await this.dropSnapshot(id, img, snap.name, snap.protected);
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
        throw new BusyError(`${id} is in use (${watchers.length - 1} other watcher(s)): stop the guest before a rollback`, { backend: NAME, diskId: id });
      await img.rollbackToSnapshot(snapshot);
      if ((await img.size()) !== snap.size) await img.resize(snap.size, { allowShrink: true });
    });
  }

  async flatten(disk: DiskRef, options: OperationOptions = {}): Promise<void> {
    const id = diskId(disk);
    throwIfAborted(options.signal, 'flatten');
    await this.withImage(id, {}, async (img) => {
      if ((await img.parent()) === null) return;
      await img.flatten();
    }, options.signal);
  }

  /** Validated arguments of `directSnapshot`/`removeDirectSnapshot`, and the temporary snapshot's name. */
  private directSnapshotArgs(disk: DiskRef, options: DirectSnapshotOptions, op: string) {
    const id = diskId(disk);
    const ds = this.options.directSnapshot;
    if (!ds) throw new UnsupportedOperationError('directSnapshot', 'directSnapshot', { backend: NAME, diskId: id });
    const imageId = options?.imageId;
    if (typeof imageId !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/.test(imageId))
      throw new InvalidArgumentError('options.imageId', 'expected an image id (letters, digits, ., _, -)', { backend: NAME, diskId: id });
    throwIfAborted(options.signal, op);
    return { id, ds, imageId, tmpSnap: `ephemera-direct-${imageId}` };
  }

  /**
   * Snapshots the disk and turns the snapshot into a standalone image in the images pool, as
   * Nova's direct snapshot: snapshot `<disk>@<imageId>`, clone it into `<pool>/<imageId>`,
   * flatten, snapshot `snap`, protect, drop the temporary snapshot, and return
   * `rbd://<fsid>/<pool>/<imageId>/snap` for Glance. When the configured images-pool client may
   * not read this backend's pool (a Glance user usually cannot), the clone+flatten is done as a
   * streamed copy of the snapshot instead (same result: a flat image), read with this backend's
   * client and written with the images-pool client. Rolls back on failure.
   */
  async directSnapshot(disk: DiskRef, options: DirectSnapshotOptions): Promise<DirectSnapshotResult> {
    const { id, ds, imageId, tmpSnap } = this.directSnapshotArgs(disk, options, 'directSnapshot');
    if (!(await this.exists(disk))) throw this.notFound(id);
    let dsIo: IoCtx | undefined;
    let snapMade = false;
    let snapProtected = false;
    let destMade = false;
    try {
      const dsCluster = await this.directSnapshotCluster();
      dsIo = await dsCluster.openIoCtx(ds.pool);
      await this.withImage(id, {}, async (img) => {
        await img.createSnapshot(tmpSnap);
        snapMade = true;
      });
      let method: 'clone' | 'copy' = 'copy';
      // Clone + flatten when the images-pool client can read this pool.
      try {
        const srcViaDs = await dsCluster.openIoCtx(this.pool);
        try {
          const probe = await srcViaDs.open(id, { snapshot: tmpSnap, readOnly: true });
          await probe.close();
          const cf = await this.cloneFormat();
          if (cf.format !== 2) {
            await this.withImage(id, {}, (img) => img.protectSnapshot(tmpSnap));
            snapProtected = true;
          }
          await dsIo.clone({ parent: { ioctx: srcViaDs, image: id, snap: tmpSnap }, dest: { name: imageId }, cloneFormat: cf.format === 2 ? 2 : 1 });
          destMade = true;
          const dest = await dsIo.open(imageId);
          try {
            await dest.flatten();
          } finally {
            await dest.close();
          }
          method = 'clone';
        } finally {
          await srcViaDs.close().catch(() => undefined);
        }
      } catch (e) {
        if (!(e instanceof PermissionDenied || e instanceof ObjectNotFound)) throw e;
      }
      if (method === 'copy') await this.copySnapshot(id, tmpSnap, dsIo, imageId, options.signal).then(() => (destMade = true));
      throwIfAborted(options.signal, 'directSnapshot');
      const dest = await dsIo.open(imageId);
      try {
        await dest.createSnapshot('snap');
        await dest.protectSnapshot('snap');
      } finally {
        await dest.close();
      }
      await this.withImage(id, {}, async (img) => {
        if (snapProtected) await img.unprotectSnapshot(tmpSnap);
        await img.removeSnapshot(tmpSnap);
      });
      snapMade = false;
      return { url: formatRbdUrl({ fsid: this.fsid, pool: ds.pool, image: imageId, snapshot: 'snap' }), metadata: { method } };
    } catch (e) {
      if (destMade && dsIo) await removeImageFully(dsIo, imageId).catch(() => undefined);
      if (snapMade) {
        await this.withImage(id, {}, async (img) => {
          if (snapProtected) await img.unprotectSnapshot(tmpSnap).catch(() => undefined);
          await img.removeSnapshot(tmpSnap);
        }).catch(() => undefined);
      }
      if (e instanceof ImageExists) throw new AlreadyExistsError(`${ds.pool}/${imageId} already exists`, { backend: NAME, diskId: id, cause: e });
      throw this.translate(e, id, options.signal);
    } finally {
      if (dsIo) await dsIo.close().catch(() => undefined);
    }
  }

  /**
   * Undoes an interrupted `directSnapshot(disk, { imageId })` (the process died inside it, or the
   * Glance image it was for was never completed): removes `<images pool>/<imageId>` with its
   * snapshots (unprotecting them), then the temporary snapshot `ephemera-direct-<imageId>` of the
   * disk (unprotecting it). A dead process's watch on the image (it died while writing it) is
   * evicted (blocklisted 60 s) rather than waited out; other busy states are retried up to
   * `busyTimeoutMs`. The temporary snapshot is also purged when it is in the disk's trash
   * namespace without children (removed while the clone existed, the clone removed since, and the
   * process killed before librbd purged it). Idempotent: false when nothing was there (the disk
   * may be gone).
   *
   * `orphaned` (crash recovery: the snapshotting process died): when neither the image nor the
   * temporary snapshot was there, the process may have died inside the snapshot creation, which
   * can still complete (see {@link PROXIED_SNAP_SETTLE_MS}): the disk is watched for the
   * temporary snapshot (every 200 ms) until 7 s after this call began when another client holds
   * its exclusive lock, 1 s otherwise (the kill preceded the call), and a snapshot that appears is
   * removed. Nothing is waited for when either was
   * found (the creation had completed: the image is cloned from it).
   */
  async removeDirectSnapshot(disk: DiskRef, options: RemoveDirectSnapshotOptions): Promise<boolean> {
    const started = Date.now();
    const { id, ds, imageId, tmpSnap } = this.directSnapshotArgs(disk, options, 'removeDirectSnapshot');
    const retry = { timeoutMs: options.busyTimeoutMs ?? this.busyTimeoutMs, ...(options.signal ? { signal: options.signal } : {}) };
    let removed = false;
    // 1. The image written for Glance first: it may be a clone child of the temporary snapshot.
    const dsIo = await (await this.directSnapshotCluster()).openIoCtx(ds.pool).catch((e: unknown) => {
      throw this.translate(e, `${ds.pool}/${imageId}`, options.signal);
    });
    try {
      let evicted = false;
      removed = await retryWhileBusy(async () => {
        try {
          await removeImageFully(dsIo, imageId);
          return true;
        } catch (e) {
          if (e instanceof ImageNotFound) {
            // Nothing there, or half-removed (directory entry without header): rbd_remove cleans that.
            try {
              await dsIo.remove(imageId);
              return true;
            } catch (e2) {
              if (e2 instanceof ImageNotFound) return false;
              throw this.translate(e2, `${ds.pool}/${imageId}`, options.signal);
            }
          }
          if (e instanceof ImageBusy && !evicted) {
            // Only the process that was making this snapshot ever watches the image: it is dead
            // (or this call is its own rollback, whose handles are closed). Its watch lingers
            // until osd_client_watch_timeout: evict it instead of waiting.
            evicted = true;
            await this.evictWatchers(imageId, dsIo);
          }
          if (e instanceof ImageBusy || e instanceof ImageHasSnapshots) throw new BusyError(`${ds.pool}/${imageId} is busy: ${(e as Error).message}`, { backend: NAME, diskId: id, cause: e });
          throw this.translate(e, `${ds.pool}/${imageId}`, options.signal);
        }
      }, retry);
    } finally {
      await dsIo.close().catch(() => undefined);
    }
    // 2. The temporary snapshot on the disk.
    const dropTmpSnap = () => retryWhileBusy(async () => {
      try {
        return await this.withImage(id, {}, async (img) => {
          const snaps = await img.listSnapshots();
          let dropped = false;
          // The temporary snapshot as a trash snapshot: removed while the clone written from it
          // existed (clone v2), and the clone removed since, but not purged (a kill in between).
          for (const t of snaps.filter((x) => x.namespace === 'trash' && x.originalName === tmpSnap)) {
            const children = await img.snapshotChildren(t.id).catch((e: unknown) => (e instanceof ImageNotFound ? [] : Promise.reject(e)));
            if (children.length === 0) dropped = (await this.purgeTrashSnapshot(id, img, t)) || dropped;
          }
          const snap = snaps.find((x) => x.name === tmpSnap && x.namespace === 'user');
          if (!snap) return dropped;
          await this.dropSnapshot(id, img, snap.name, snap.protected);
          return true;
        });
      } catch (e) {
        if (isImageBackendError(e, 'NOT_FOUND')) return false;
        throw e;
      }
    }, retry);
    let snapGone = await dropTmpSnap();
    if (options.orphaned && !removed && !snapGone) {
      // The process may have died inside the snapshot creation, which may still land.
      const window = (await this.lockHolders(id)).others ? PROXIED_SNAP_SETTLE_MS : LOCAL_SNAP_SETTLE_MS;
      while (!snapGone && Date.now() - started < window) {
        throwIfAborted(options.signal, 'removeDirectSnapshot');
        await sleep(Math.min(200, Math.max(0, window - (Date.now() - started))), options.signal);
        snapGone = await dropTmpSnap();
      }
    }
    return removed || snapGone;
  }

  /**
   * Who holds the disk's exclusive lock: this client (`mine`, `client.<instanceId>`) and/or
   * others. Both false when it is unlocked, or the disk cannot be read (gone).
   */
  private async lockHolders(id: string): Promise<{ mine: boolean; others: boolean }> {
    try {
      const self = `client.${this.cluster.instanceId()}`;
      const { lockers } = await this.withImage(id, { readOnly: true }, (img) => img.lockers());
      return { mine: lockers.some((l) => l.client === self), others: lockers.some((l) => l.client !== self) };
    } catch {
      return { mine: false, others: false };
    }
  }

  /** Copies `<id>@<snap>` into a new image `name` of `dest` (aio, zero blocks skipped). */
  private async copySnapshot(id: string, snap: string, dest: IoCtx, name: string, signal: AbortSignal | undefined): Promise<void> {
    const src = await this.io.open(id, { snapshot: snap, readOnly: true });
    let out: Image | undefined;
    const window = new Window(this.inFlight);
    try {
      const size = await src.size();
      await dest.create(name, size);
      out = await dest.open(name);
      for (let at = 0; at < size; at += this.blockBytes) {
        throwIfAborted(signal, 'directSnapshot');
        const block = await src.read(at, Math.min(this.blockBytes, size - at));
        if (isAllZero(block)) continue;
        const o = out;
        const pos = at;
        await window.push(() => o.write(pos, block));
      }
      await window.drain();
      await out.flush();
    } finally {
      await window.settle();
      if (out) await out.close().catch(() => undefined);
      await src.close().catch(() => undefined);
    }
  }

  private directSnapshotCluster(): Promise<Cluster> {
    const ds = this.options.directSnapshot!;
    this.dsCluster ??= connect({
      confPath: ds.confPath,
      clientId: ds.clientId,
      ...(ds.keyringPath ? { keyringPath: ds.keyringPath } : {}),
      timeoutMs: this.options.connectTimeoutMs ?? 10_000,
    });
    this.dsCluster.catch(() => (this.dsCluster = undefined));
    return this.dsCluster;
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
    await this.checkNoChildren(id);
    return retryWhileBusy(
      async () => {
        try {
          let img: Image;
          try {
            // Read-only (no watch) to list the snapshots: a read-write open registers a header
            // watch, and a process killed while that WATCH op commits can leave a watch the OSD
            // never times out (Ceph tracker 58120, Pacific): see docs/operations.md. Only a disk
            // with snapshots to drop is opened read-write.
            img = await this.io.open(id, { readOnly: true });
          } catch (e) {
            if (!(e instanceof ImageNotFound)) throw e;
            // Not openable, but maybe half-removed (a kill inside rbd_remove: the directory entry
            // without a header, still listed): rbd_remove cleans that as `rbd rm` does, and
            // fails with ImageNotFound when nothing is there at all.
            try {
              await this.io.remove(id);
              return true;
            } catch (e2) {
              if (e2 instanceof ImageNotFound) return false;
              throw e2;
            }
          }
          let snaps: RbdSnapshot[];
          try {
            // User snapshots, and trash ones (checkNoChildren refused those with children).
            snaps = (await img.listSnapshots()).filter((s) => s.namespace === 'user' || s.namespace === 'trash');
          } finally {
            await img.close();
          }
          if (snaps.length) {
            const rw = await this.io.open(id);
            try {
              for (const s of snaps) {
                if (s.namespace === 'trash') await this.purgeTrashSnapshot(id, rw, s);
                else await this.dropSnapshot(id, rw, s.name, s.protected);
              }
            } finally {
              await rw.close();
            }
          }
          try {
            await this.io.remove(id);
          } catch (e) {
            // An exclusive lock this very client left behind (an image closed while the OSDs were
            // unreachable: the lock release timed out) cannot be broken by this client: librbd
            // refuses to blocklist itself. No handle of this backend still holds it: a live one
            // keeps a watch, which librbd checks before breaking the lock (removeOwnStaleLock).
            if (!(e instanceof ImageBusy) || !(await this.lockHolders(id)).mine) throw e;
            await this.removeOwnStaleLock(id);
          }
          return true;
        } catch (e) {
          if (e instanceof ImageNotFound) return false;
          if (e instanceof ImageHasSnapshots) throw new BusyError(`${id}: a snapshot appeared during removal`, { backend: NAME, diskId: id, cause: e });
          throw this.translate(e, id, options.signal);
        }
      },
      { timeoutMs: options.busyTimeoutMs ?? this.busyTimeoutMs, ...(options.signal ? { signal: options.signal } : {}) },
    ).catch(async (e: unknown) => {
      throw e instanceof BusyError && !options.signal?.aborted ? await this.busyWithWatchers(e, id) : e;
    });
  }

  /**
   * `e` with the disk's watchers named (address, client) and what to do when none of them is a
   * live client: a watch left by a process killed while registering it never times out on a
   * Pacific OSD (Ceph tracker 58120); re-peering its PG clears it (docs/operations.md).
   */
  private async busyWithWatchers(e: BusyError, id: string): Promise<BusyError> {
    let watchers: { address: string; id: number }[];
    try {
      watchers = await this.withImage(id, { readOnly: true }, (img) => img.watchers());
    } catch {
      return e;
    }
    if (!watchers.length) return e;
    const list = watchers.map((w) => `client.${w.id} at ${w.address}`).join(', ');
    return new BusyError(
      `${this.pool}/${id} is busy: still watched by ${list} after the busy timeout. ` +
        `If no such client is alive (not listed by the OSD's \`ceph daemon osd.N dump_watchers\`), it is a Ceph zombie watch ` +
        `(tracker 58120): blocklist the address, then \`ceph pg repeer\` the PG of rbd_header.<image id> (see docs/operations.md, "A disk that stays busy")`,
      { backend: NAME, diskId: id, cause: e },
    );
  }

  /**
   * Resolves when a Ceph monitor answers; `BackendUnavailableError` within `connectTimeoutMs`
   * otherwise (the contract's optional health check, called by the driver before a spawn).
   */
  async checkAvailable(): Promise<void> {
    await this.requireMonitor();
  }

  /**
   * Fails with `BackendUnavailableError` (within `connectTimeoutMs`) when no monitor answers. A
   * connected client clones and writes on its cached OSD sessions without monitors, but every new
   * client (QEMU's librbd opening the disk, qemu-img) needs one: without this check a spawn would
   * create the disk and then hang in the domain start until `client_mount_timeout`.
   */
  private async requireMonitor(id?: string): Promise<void> {
    try {
      await this.cluster.pingMonitor();
    } catch (e) {
      // Any answer (even a refusal such as EACCES for a user without `mon r`) means a monitor is there.
      if (e instanceof RbdError && !(e instanceof Timeout) && !(e instanceof ConnectionShutdown) && e.code !== 'ENOTCONN') return;
      const mons = this.monitors.map((m) => `${m.host}:${m.port}`).join(', ');
      throw new BackendUnavailableError(
        `the Ceph monitor is unreachable (${mons} did not answer within ${this.options.connectTimeoutMs ?? 10_000} ms)${id ? `: nothing was created for ${id}` : ''}`,
        { backend: NAME, ...(id ? { diskId: id } : {}), cause: e },
      );
    }
  }

  /**
   * Removes `id` through a second connection of the same user that does not blocklist on lock
   * breaks: librbd breaks the stale lock of this client only once its holder has no watch (a
   * watch the OSD kept lingers `osd_client_watch_timeout`, ~30 s, after the OSD returns: until
   * then this fails with ImageBusy and the caller retries). Without blocklisting, because the
   * holder is this process's own connection.
   */
  private async removeOwnStaleLock(id: string): Promise<void> {
    this.lockCluster ??= (async () => {
      const cluster = await connect({
        confPath: this.options.confPath,
        clientId: this.clientId,
        ...(this.options.keyringPath ? { keyringPath: this.options.keyringPath } : {}),
        timeoutMs: this.options.connectTimeoutMs ?? 10_000,
        options: { rbd_blocklist_on_break_lock: 'false' },
      });
      try {
        return { cluster, io: await cluster.openIoCtx(this.pool) };
      } catch (e) {
        await cluster.close().catch(() => undefined);
        throw e;
      }
    })();
    this.lockCluster.catch(() => (this.lockCluster = undefined));
    const { io } = await this.lockCluster;
    await io.remove(id);
  }

  async close(): Promise<void> {
    if (this.lockCluster) await (await this.lockCluster.catch(() => undefined))?.cluster.close().catch(() => undefined);
    if (this.dsCluster) await (await this.dsCluster.catch(() => undefined))?.close().catch(() => undefined);
    await this.cluster.close();
  }

  // -------------------------------------------------------------------------------------------
  // Helpers

  /** Refuses (BusyError, no retry) a disk whose snapshots have clone children. */
  private async checkNoChildren(id: string): Promise<void> {
    let img: Image;
    try {
      img = await this.io.open(id, { readOnly: true });
    } catch (e) {
      if (e instanceof ImageNotFound) return;
      throw this.translate(e, id);
    }
    try {
      for (const s of await img.listSnapshots()) {
        if (s.namespace === 'trash') {
          // A removed snapshot kept for its clone v2 children; one left without children (a
          // process killed before librbd purged it) is purged by remove() instead.
          const children = await img.snapshotChildren(s.id).catch((e: unknown) => {
            if (e instanceof ImageNotFound) return []; // purged meanwhile
            throw e;
          });
          if (children.length > 0) {
            const names = children.map((c) => `${c.pool}/${c.image}`).join(', ');
            throw new BusyError(`${id} has clone (format 2) children (${names}) of a removed snapshot${s.originalName ? ` (${s.originalName})` : ''}: remove or flatten them first`, { backend: NAME, diskId: id });
          }
          continue;
        }
        if (s.namespace !== 'user') continue; // format 2 children need no protection: check all
        const at = await this.io.open(id, { snapshot: s.name, readOnly: true });
        try {
          const children = await at.children();
          if (children.length > 0) {
            const names = children.map((c) => `${c.pool}/${c.image}`).join(', ');
            throw new BusyError(`${id}@${s.name} has clones (${names}): flatten or remove them first`, { backend: NAME, diskId: id });
          }
        } finally {
          await at.close().catch(() => undefined);
        }
      }
    } catch (e) {
      throw this.translate(e, id);
    } finally {
      await img.close().catch(() => undefined);
    }
  }

  /** Unprotects (when protected, refusing with BusyError if it has clones) and removes a snapshot. */
  private async dropSnapshot(id: string, img: Image, name: string, isProtected: boolean): Promise<void> {
    if (isProtected) {
      try {
        await img.unprotectSnapshot(name);
      } catch (e) {
        if (e instanceof ImageBusy) throw new BusyError(`${id}@${name} has clones: flatten or remove them first`, { backend: NAME, diskId: id, cause: e });
        if (!(e instanceof InvalidArgument)) throw e; // InvalidArgument: not protected (any more)
      }
    }
    try {
      await img.removeSnapshot(name);
    } catch (e) {
      if (e instanceof ImageNotFound) return;
      throw e;
    }
  }

  /**
   * Removes a `trash` snapshot (by id: it has no usable name) that has no clone children left;
   * false when it was already gone. `BusyError` when it still has children.
   */
  private async purgeTrashSnapshot(id: string, img: Image, snap: RbdSnapshot): Promise<boolean> {
    try {
      await img.removeSnapshotById(snap.id);
      return true;
    } catch (e) {
      if (e instanceof ImageNotFound) return false; // purged meanwhile (by librbd)
      if (e instanceof ImageBusy)
        throw new BusyError(`${id}: the removed snapshot ${snap.originalName ?? snap.name} still has clone (format 2) children`, { backend: NAME, diskId: id, cause: e });
      throw e;
    }
  }

  private async describe(id: string, img: Image): Promise<DiskInfo> {
    const ref = parseDiskId(id)!;
    const [size, parent] = await Promise.all([img.size(), img.parent()]);
    return {
      disk: ref,
      id,
      sizeBytes: size,
      format: 'raw',
      ...(parent ? { parent: `${parent.pool}/${parent.namespace ? `${parent.namespace}/` : ''}${parent.image}@${parent.snap}` } : {}),
    };
  }

  /** Opens `id`, runs `fn`, closes; errors translated (ImageNotFound -> NotFoundError). */
  private async withImage<T>(id: string, opts: { readOnly?: boolean }, fn: (img: Image) => Promise<T>, signal?: AbortSignal): Promise<T> {
    let img: Image;
    try {
      img = await this.io.open(id, opts);
    } catch (e) {
      throw this.translate(e, id, signal);
    }
    try {
      return await fn(img);
    } catch (e) {
      throw this.translate(e, id, signal);
    } finally {
      await img.close().catch(() => undefined);
    }
  }

  /** Removes a partial image (and snapshots), waiting out our own lingering watches briefly. */
  private async removeQuietly(id: string): Promise<void> {
    await this.remove(parseDiskId(id)!, { busyTimeoutMs: this.busyTimeoutMs }).catch(() => undefined);
  }

  private notFound(id: string): NotFoundError {
    return new NotFoundError(`disk ${id} does not exist in pool ${this.pool}`, { backend: NAME, diskId: id });
  }

  /** Maps binding errors onto the contract's; `phase` 'create' turns ImageExists into AlreadyExists. */
  private translate(e: unknown, id?: string, signal?: AbortSignal, phase?: 'create'): unknown {
    const ctx = { backend: NAME, ...(id ? { diskId: id } : {}), cause: e };
    if (isImageBackendError(e)) return e;
    if (signal?.aborted) return new AbortedError('operation aborted', ctx);
    if (!(e instanceof RbdError)) return e;
    if (e instanceof ImageExists) return new AlreadyExistsError(`${id ?? 'image'} already exists`, ctx);
    if (e instanceof ImageNotFound) return phase === 'create' ? new BackendUnavailableError(e.message, ctx) : new NotFoundError(`${id ?? 'image'} does not exist (${e.message})`, ctx);
    if (e instanceof ImageBusy) return new BusyError(`${id ?? 'image'} is busy: ${e.message}`, ctx);
    if (e instanceof NoSpace || e instanceof DiskQuotaExceeded) return new InsufficientCapacityError(`${id ?? 'pool'}: ${e.message}`, ctx);
    if (e instanceof InvalidArgument) return new InvalidArgumentError('request', e.message, ctx);
    if (e instanceof PermissionDenied) return new BackendUnavailableError(`permission denied for client.${this.clientId}: ${e.message}`, ctx);
    return new BackendUnavailableError(e.message, ctx);
  }
}

/** A snapshot as the binding lists it. */
type RbdSnapshot = Awaited<ReturnType<Image['listSnapshots']>>[number];

/** Unprotects and removes every user snapshot of `name`, then the image. */
async function removeImageFully(io: IoCtx, name: string): Promise<void> {
  // Read-only first (no watch, see remove()); read-write only when there are snapshots to drop.
  const ro = await io.open(name, { readOnly: true });
  let snaps: RbdSnapshot[];
  try {
    snaps = (await ro.listSnapshots()).filter((s) => s.namespace === 'user');
  } finally {
    await ro.close().catch(() => undefined);
  }
  if (snaps.length) {
    const img = await io.open(name);
    try {
      for (const s of snaps) {
        if (s.protected) await img.unprotectSnapshot(s.name).catch(() => undefined);
        await img.removeSnapshot(s.name).catch(() => undefined);
      }
    } finally {
      await img.close().catch(() => undefined);
    }
  }
  await io.remove(name);
}
