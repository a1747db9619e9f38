/**
 * `@ephemera/ceph-rbd-napi`: a Node-API binding to librados and librbd.
 *
 * - Every call that can block runs on the binding's own native threads (not libuv's pool, so
 *   `fs` and `dns` keep their 4 threads) and returns a promise; image reads and writes use
 *   librbd's `rbd_aio_*`, so many can be in flight at once.
 * - Long operations (flatten, remove, resize, rollback, trash remove) report monotonic progress
 *   ending at 100% through `onProgress`.
 * - Failures are {@link RbdError}s with `errno`, `code`, `operation` and `target`, subclassed after
 *   Ceph's Python binding (`ImageNotFound`, `ImageBusy`, `PermissionDenied`, `Timeout`...).
 * - Handles are explicit: `close()` (or `await using`); closing a parent closes its children
 *   first; using a closed handle rejects with {@link HandleClosed}; a forgotten handle is released
 *   when garbage-collected, and whatever is still open is closed when the process exits.
 * - No secret is ever put in an error message: pass keyring *paths*, not keys.
 *
 * @example
 * ```ts
 * import { connect } from '@ephemera/ceph-rbd-napi';
 * await using cluster = await connect({ confPath: '/etc/ceph/ceph.conf', clientId: 'admin', timeoutMs: 10_000 });
 * const images = await cluster.openIoCtx('images');
 * const vms = await cluster.openIoCtx('vms');
 * await images.create('base', 1 << 30);
 * await using base = await images.open('base');
 * await base.createSnapshot('snap');
 * await base.protectSnapshot('snap');
 * await vms.clone({ parent: { ioctx: images, image: 'base', snap: 'snap' }, dest: { ioctx: vms, name: 'vm-disk' } });
 * ```
 * @packageDocumentation
 */
import { constants as bufferConstants } from 'node:buffer';
import {
  handleClosed,
  HandleClosed,
  invalidArgument,
  RbdError,
} from './errors.js';
import {
  native,
  type NativeCluster,
  type NativeImage,
  type NativeImageOpts,
  type NativeIoCtx,
  type NativeProgress,
  type SnapNamespace,
} from './native.js';

export {
  ArgumentOutOfRange,
  ConnectionShutdown,
  DiskQuotaExceeded,
  FunctionNotSupported,
  HandleClosed,
  ImageBusy,
  ImageExists,
  ImageHasSnapshots,
  ImageNotFound,
  InvalidArgument,
  IoError,
  NoSpace,
  ObjectNotFound,
  OperationCanceled,
  OperationNotSupported,
  PermissionDenied,
  RbdError,
  ReadOnlyImage,
  Timeout,
} from './errors.js';
// The errno tables and the load-failure wording are internals (tests import their source files).
export { loadAddon, NativeLoadError, setExitCloseTimeout } from './native.js';
export type { SnapNamespace } from './native.js';

// ---------------------------------------------------------------------------------------------
// Features

/** librbd image feature bits (`rbd/features.h`). */
export const RbdFeature = {
  layering: 1,
  striping: 2,
  'exclusive-lock': 4,
  'object-map': 8,
  'fast-diff': 16,
  'deep-flatten': 32,
  journaling: 64,
  'data-pool': 128,
  operations: 256,
  migrating: 512,
  'non-primary': 1024,
  'dirty-cache': 2048,
} as const;

/** A feature name as the `rbd` CLI prints it, e.g. `'exclusive-lock'`. */
export type FeatureName = keyof typeof RbdFeature;

/** Features as a bit mask or as a list of names. */
export type Features = number | readonly FeatureName[];

/** The names of the bits set in `mask` (unknown bits are ignored). */
export function featureNames(mask: number): FeatureName[] {
  return (Object.keys(RbdFeature) as FeatureName[]).filter((n) => (mask & RbdFeature[n]) !== 0);
}

/** The bit mask of `features`; throws InvalidArgument on an unknown name. */
export function featureMask(features: Features, operation = 'featureMask'): number {
  if (typeof features === 'number') {
    if (!Number.isSafeInteger(features) || features < 0) {
      throw invalidArgument(operation, '', 'features must be a non-negative integer mask');
    }
    return features;
  }
  if (!Array.isArray(features)) throw invalidArgument(operation, '', 'features must be a mask or a list of names');
  let mask = 0;
  for (const name of features) {
    const bit = (RbdFeature as Record<string, number>)[name];
    if (bit === undefined) throw invalidArgument(operation, '', `unknown feature ${JSON.stringify(name)}`);
    mask |= bit;
  }
  return mask;
}

/** An image's features: the mask and its names. */
export interface ImageFeatures {
  mask: number;
  names: FeatureName[];
}

// ---------------------------------------------------------------------------------------------
// Validation (all before anything is sent to the cluster)

function checkName(operation: string, what: string, v: unknown): string {
  if (typeof v !== 'string' || v.length === 0) throw invalidArgument(operation, '', `${what} must be a non-empty string`);
  if (v.includes('\0')) throw invalidArgument(operation, '', `${what} must not contain NUL`);
  return v;
}

function checkUint(operation: string, target: string, what: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
    throw invalidArgument(operation, target, `${what} must be a non-negative safe integer`);
  }
  return v;
}

/**
 * Longest image metadata key, in UTF-8 bytes. librbd sets no limit; this one catches a value
 * passed as a key and keeps keys usable as `rbd image-meta` arguments.
 */
export const METADATA_KEY_MAX_BYTES = 255;

/**
 * Largest image metadata value, in UTF-8 bytes. Pairs live in the omap of the image's one
 * header object (one OSD, read whole by `rbd image-meta list`): records and tags, not data.
 */
export const METADATA_VALUE_MAX_BYTES = 64 * 1024;

// In unicode mode a surrogate pair is one code point, so only lone surrogates match.
const loneSurrogate = /\p{Cs}/u;

// librbd takes C strings: a NUL would cut them, and a lone surrogate has no UTF-8 form (Node
// would store U+FFFD instead, so the key read back would differ from the one given).
function checkMetadataString(operation: string, target: string, what: string, v: unknown, maxBytes: number, allowEmpty: boolean): string {
  if (typeof v !== 'string') throw invalidArgument(operation, target, `${what} must be a string`);
  if (!allowEmpty && v.length === 0) throw invalidArgument(operation, target, `${what} must not be empty`);
  if (v.includes('\0')) throw invalidArgument(operation, target, `${what} must not contain NUL`);
  if (loneSurrogate.test(v)) throw invalidArgument(operation, target, `${what} must be well-formed Unicode (no lone surrogate)`);
  const bytes = Buffer.byteLength(v, 'utf8');
  if (bytes > maxBytes) throw invalidArgument(operation, target, `${what} is ${bytes} bytes in UTF-8, at most ${maxBytes} allowed`);
  return v;
}

function checkMetadataKey(operation: string, target: string, key: unknown): string {
  return checkMetadataString(operation, target, 'key', key, METADATA_KEY_MAX_BYTES, false);
}

/** Progress of a long operation: monotonic, the last call has `done === total` (fraction 1). */
export interface Progress {
  done: number;
  total: number;
  /** done / total, in [0, 1]. */
  fraction: number;
}

/** Receives progress; exceptions thrown by it are reported as a process warning and ignored. */
export type ProgressCallback = (progress: Progress) => void;

function progressAdapter(cb: ProgressCallback | undefined, operation: string): NativeProgress | undefined {
  if (cb === undefined) return undefined;
  if (typeof cb !== 'function') throw invalidArgument(operation, '', 'onProgress must be a function');
  return (done, total) => {
    try {
      cb({ done, total, fraction: total > 0 ? Math.min(1, done / total) : 1 });
    } catch (err) {
      process.emitWarning(`onProgress callback of ${operation} threw: ${String(err)}`, 'RbdProgressWarning');
    }
  };
}

// ---------------------------------------------------------------------------------------------
// Configuration

/**
 * Sets the number of native threads that run blocking librados/librbd calls (default 8, or
 * `EPHEMERA_RBD_THREADS`). They are separate from libuv's pool used by `fs` and `dns`.
 * Binding only (no librbd call).
 */
export function setWorkerThreads(threads: number): void {
  if (!Number.isInteger(threads) || threads < 1 || threads > 1024) {
    throw invalidArgument('setWorkerThreads', '', 'threads must be an integer in 1..1024');
  }
  native().setWorkerThreads(threads);
}

/** The current number of native worker threads. Binding only (no librbd call). */
export function workerThreads(): number {
  return native().workerThreads();
}

/**
 * Versions of the librbd and librados the addon runs against. Throws NativeLoadError if absent.
 * Implements rbd_version() and rados_version().
 */
export function libraryVersions(): { librbd: string; librados: string } {
  return native().version();
}

// ---------------------------------------------------------------------------------------------
// connect

/** How to reach the cluster. Secrets are read by librados from `keyringPath`, never passed inline. */
export interface ConnectOptions {
  /** A ceph.conf to read (mon_host, keyring, ...). Without it, `monHost` is required or the default search path is used. */
  confPath?: string;
  /** cephx id without the `client.` prefix (default `admin`). */
  clientId?: string;
  /** Keyring file holding this client's key (overrides the conf's `keyring`). */
  keyringPath?: string;
  /** `mon_host` (overrides the conf's), e.g. `[v2:127.0.0.1:3300,v1:127.0.0.1:6789]`. */
  monHost?: string;
  /**
   * Connect and operation timeout in milliseconds: applied as `client_mount_timeout`,
   * `rados_mon_op_timeout` and `rados_osd_op_timeout`, so an unreachable cluster fails with
   * {@link Timeout} within it and no single cluster operation waits longer.
   */
  timeoutMs: number;
  /** More librados config options (`rados_conf_set`), applied last. Their values never appear in errors. */
  options?: Readonly<Record<string, string>>;
}

/**
 * Connects to a cluster. Rejects with Timeout, PermissionDenied, ImageNotFound (missing conf/keyring)...
 * Implements rados_create2(), rados_conf_set() and rados_connect().
 */
export async function connect(opts: ConnectOptions): Promise<Cluster> {
  const op = 'connect';
  if (opts === null || typeof opts !== 'object') throw invalidArgument(op, '', 'options object required');
  const clientId = opts.clientId ?? 'admin';
  if (typeof clientId !== 'string' || !/^[A-Za-z0-9_.-]+$/.test(clientId) || clientId.startsWith('client.')) {
    throw invalidArgument(op, '', 'clientId must match [A-Za-z0-9_.-]+ (without the client. prefix)');
  }
  if (typeof opts.timeoutMs !== 'number' || !Number.isFinite(opts.timeoutMs) || opts.timeoutMs <= 0) {
    throw invalidArgument(op, `client.${clientId}`, 'timeoutMs must be a positive number');
  }
  for (const k of ['confPath', 'keyringPath', 'monHost'] as const) {
    if (opts[k] !== undefined) checkName(op, k, opts[k]);
  }
  const options: [string, string][] = [];
  for (const [k, v] of Object.entries(opts.options ?? {})) {
    checkName(op, 'option name', k);
    if (typeof v !== 'string' || v.includes('\0')) throw invalidArgument(op, '', `option ${k} must be a string`);
    options.push([k, v]);
  }
  const n = await native().connect({
    name: `client.${clientId}`,
    confPath: opts.confPath,
    keyringPath: opts.keyringPath,
    monHost: opts.monHost,
    timeoutSeconds: String(Math.max(0.001, opts.timeoutMs / 1000)),
    options,
  });
  return new Cluster(n, clientId);
}

// ---------------------------------------------------------------------------------------------
// Cluster

/** Capacity numbers for a pool (bytes unless said otherwise). */
export interface PoolStats {
  pool: string;
  poolId: number;
  /** Bytes stored in the pool's objects (`rados df` USED for one replica). */
  bytesUsed: number;
  objects: number;
  /** RBD images in the pool and the sum of their sizes (provisioned), for overcommit reporting. */
  images: number;
  provisionedBytes: number;
  /** Provisioned bytes counting every snapshot as a full copy. */
  maxProvisionedBytes: number;
  snapshots: number;
  trashImages: number;
  /** What can still be written to this pool (`ceph df` MAX AVAIL), or null without mon `r` caps. */
  maxAvailBytes: number | null;
  /** Raw cluster capacity (all pools). */
  cluster: { totalBytes: number; usedBytes: number; availBytes: number };
}

/** A connection to a Ceph cluster (librados `rados_t`). */
export class Cluster implements AsyncDisposable {
  readonly #n: NativeCluster;
  readonly #parentIoCtxs = new Map<string, Promise<IoCtx>>();
  /** cephx id this connection authenticated as. */
  readonly clientId: string;

  /** @internal use {@link connect}. */
  constructor(n: NativeCluster, clientId: string) {
    this.#n = n;
    this.clientId = clientId;
  }

  /** True once close() was called (or the cluster was closed at exit). Binding only (no librados call). */
  get closed(): boolean {
    return this.#n.isClosed();
  }

  /**
   * This client's global id: watches and locks it holds show as `client.<instanceId>` (see
   * {@link Image.lockers}). Throws {@link HandleClosed} once the cluster is closed.
   * Implements rados_get_instance_id().
   */
  instanceId(): number {
    if (this.#n.isClosed()) throw handleClosed('cluster.instanceId', '');
    return this.#n.instanceId();
  }

  /**
   * Asks a monitor for its version: resolves when a monitor answers, rejects with
   * {@link Timeout} after the connection's `timeoutMs` (`rados_mon_op_timeout`) when none does.
   * A connected client keeps working on cached OSD sessions without monitors; this tells whether
   * new clients (e.g. QEMU's librbd) could connect now.
   * Implements rados_mon_command().
   */
  async pingMonitor(): Promise<void> {
    await this.#n.monCommand(JSON.stringify({ prefix: 'version', format: 'json' }));
  }

  /** The cluster's fsid (UUID). Implements rados_cluster_fsid(). */
  fsid(): Promise<string> {
    return this.#n.fsid();
  }

  /**
   * Usage and capacity of `pool`. Rejects with ImageNotFound when the pool does not exist.
   * Implements rados_ioctx_pool_stat(), rbd_pool_stats_get() and rados_mon_command().
   */
  async poolStats(pool: string): Promise<PoolStats> {
    checkName('cluster.poolStats', 'pool', pool);
    const s = await this.#n.poolStats(pool);
    let maxAvailBytes: number | null = null;
    try {
      const df = await this.#n.monCommand(JSON.stringify({ prefix: 'df', format: 'json' }));
      const parsed = JSON.parse(df.out) as { pools?: { name: string; stats?: { max_avail?: number } }[] };
      const entry = parsed.pools?.find((p) => p.name === pool);
      if (typeof entry?.stats?.max_avail === 'number') maxAvailBytes = entry.stats.max_avail;
    } catch (err) {
      if (err instanceof HandleClosed) throw err;
      // Without mon read caps (or with a mgr-less cluster) MAX AVAIL is simply unknown.
    }
    return {
      pool: s.pool,
      poolId: s.poolId,
      bytesUsed: s.bytesUsed,
      objects: s.objects,
      images: s.images,
      provisionedBytes: s.provisionedBytes,
      maxProvisionedBytes: s.maxProvisionedBytes,
      snapshots: s.snapshots,
      trashImages: s.trashImages,
      maxAvailBytes,
      cluster: { totalBytes: s.clusterTotalBytes, usedBytes: s.clusterUsedBytes, availBytes: s.clusterAvailBytes },
    };
  }

  /**
   * Opens an I/O context on `pool` (and optional RADOS `namespace`). ImageNotFound if no such pool.
   * Implements rados_ioctx_create().
   */
  async openIoCtx(pool: string, namespace = ''): Promise<IoCtx> {
    checkName('cluster.openIoCtx', 'pool', pool);
    if (typeof namespace !== 'string' || namespace.includes('\0')) {
      throw invalidArgument('cluster.openIoCtx', pool, 'namespace must be a string');
    }
    const n = await this.#n.openIoCtx(pool, namespace);
    return new IoCtx(n, this, pool, namespace);
  }

  /** @internal an ioctx kept for clone parents given by pool name; closed with the cluster. */
  parentIoCtx(pool: string, namespace: string): Promise<IoCtx> {
    const key = `${pool}\0${namespace}`;
    let p = this.#parentIoCtxs.get(key);
    if (!p) {
      p = this.openIoCtx(pool, namespace);
      this.#parentIoCtxs.set(key, p);
      p.catch(() => this.#parentIoCtxs.delete(key));
    }
    return p;
  }

  /**
   * Closes the connection: no new operation is accepted, in-flight ones finish, then every open
   * IoCtx and Image of this cluster is closed, then the connection. Idempotent.
   * Implements rados_shutdown().
   */
  close(): Promise<void> {
    return this.#n.close();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

// ---------------------------------------------------------------------------------------------
// IoCtx

/** Options for {@link IoCtx.create}. Unset values take the cluster's `rbd_default_*`. */
export interface CreateOptions {
  features?: Features;
  /** Object size as a power of two, 12..25 (4 KiB..32 MiB). */
  order?: number;
  stripeUnit?: number;
  stripeCount?: number;
  /** Pool for the image's data objects (erasure-coded pools). */
  dataPool?: string;
}

/** Options for {@link IoCtx.clone}. */
export interface CloneOptions {
  /** The parent snapshot: its pool (by name, on the same cluster) or an open IoCtx (default: this one). */
  parent: { pool?: string; namespace?: string; ioctx?: IoCtx; image: string; snap: string };
  /** The new image: its IoCtx (default: this one) and name. */
  dest: { ioctx?: IoCtx; name: string };
  features?: Features;
  order?: number;
  stripeUnit?: number;
  stripeCount?: number;
  dataPool?: string;
  /**
   * 1 needs a protected parent snapshot; 2 does not (the snapshot is then kept in the trash
   * namespace until its last child goes). Default: the cluster's `rbd_default_clone_format`.
   */
  cloneFormat?: 1 | 2;
}

/** An entry of the pool's RBD trash. */
export interface TrashEntry {
  id: string;
  name: string;
  source: string;
  deletedAt: Date;
  deferredUntil: Date;
}

/** Options for {@link IoCtx.open}. */
export interface OpenOptions {
  /** Open the image at this snapshot (always read-only). */
  snapshot?: string;
  /** Open without a watch (no write caps needed); writes fail with ReadOnlyImage. */
  readOnly?: boolean;
}

function imageOpts(op: string, target: string, o: CreateOptions & { cloneFormat?: number }): NativeImageOpts {
  const out: NativeImageOpts = {};
  if (o.features !== undefined) out.features = featureMask(o.features, op);
  if (o.order !== undefined) {
    if (!Number.isInteger(o.order) || o.order < 12 || o.order > 25) throw invalidArgument(op, target, 'order must be an integer in 12..25');
    out.order = o.order;
  }
  if (o.stripeUnit !== undefined) out.stripeUnit = checkUint(op, target, 'stripeUnit', o.stripeUnit);
  if (o.stripeCount !== undefined) out.stripeCount = checkUint(op, target, 'stripeCount', o.stripeCount);
  if (o.dataPool !== undefined) out.dataPool = checkName(op, 'dataPool', o.dataPool);
  if (o.cloneFormat !== undefined) {
    if (o.cloneFormat !== 1 && o.cloneFormat !== 2) throw invalidArgument(op, target, 'cloneFormat must be 1 or 2');
    out.cloneFormat = o.cloneFormat;
  }
  return out;
}

/** An I/O context on one pool (and RADOS namespace): image management. */
export class IoCtx implements AsyncDisposable {
  readonly #n: NativeIoCtx;
  /** The cluster this ioctx belongs to. */
  readonly cluster: Cluster;
  readonly pool: string;
  readonly namespace: string;

  /** @internal use {@link Cluster.openIoCtx}. */
  constructor(n: NativeIoCtx, cluster: Cluster, pool: string, namespace: string) {
    this.#n = n;
    this.cluster = cluster;
    this.pool = pool;
    this.namespace = namespace;
  }

  /** @internal */
  static native(io: IoCtx): NativeIoCtx {
    return io.#n;
  }

  /** Binding only (no librados call). */
  get closed(): boolean {
    return this.#n.isClosed();
  }

  /** Names of the images in this pool/namespace. Implements rbd_list2(). */
  async list(): Promise<string[]> {
    return (await this.#n.list()).map((s) => s.name);
  }

  /** Creates an image of `size` bytes. ImageExists if the name is taken. Implements rbd_create4(). */
  async create(name: string, size: number, opts: CreateOptions = {}): Promise<void> {
    const op = 'ioctx.create';
    checkName(op, 'image name', name);
    checkUint(op, name, 'size', size);
    await this.#n.create(name, size, imageOpts(op, name, opts));
  }

  /**
   * Clones `parent.image@parent.snap` into `dest.name` (copy-on-write). With clone format 1 the
   * snapshot must be protected (else InvalidArgument).
   * Implements rbd_clone3().
   */
  async clone(opts: CloneOptions): Promise<void> {
    const op = 'ioctx.clone';
    if (opts === null || typeof opts !== 'object' || !opts.parent || !opts.dest) {
      throw invalidArgument(op, '', 'parent and dest are required');
    }
    checkName(op, 'parent image', opts.parent.image);
    checkName(op, 'parent snap', opts.parent.snap);
    checkName(op, 'dest name', opts.dest.name);
    const dest = opts.dest.ioctx ?? this;
    const nativeOpts = imageOpts(op, opts.dest.name, opts);
    let parent: IoCtx;
    if (opts.parent.ioctx) parent = opts.parent.ioctx;
    else if (opts.parent.pool !== undefined) {
      checkName(op, 'parent pool', opts.parent.pool);
      parent = await dest.cluster.parentIoCtx(opts.parent.pool, opts.parent.namespace ?? '');
    } else parent = this;
    if (!(parent instanceof IoCtx) || !(dest instanceof IoCtx)) throw invalidArgument(op, '', 'ioctx must be an IoCtx');
    await IoCtx.native(dest).clone(IoCtx.native(parent), opts.parent.image, opts.parent.snap, opts.dest.name, nativeOpts);
  }

  /**
   * Removes an image and its data. ImageHasSnapshots if it has snapshots, ImageBusy if it is
   * open elsewhere (see {@link Image.watchers}) or has clone children.
   * Implements rbd_remove().
   */
  async remove(name: string, opts: { onProgress?: ProgressCallback } = {}): Promise<void> {
    checkName('ioctx.remove', 'image name', name);
    await this.#n.remove(name, progressAdapter(opts.onProgress, 'ioctx.remove'));
  }

  /** Renames an image within this pool. Implements rbd_rename(). */
  async rename(from: string, to: string): Promise<void> {
    checkName('ioctx.rename', 'source name', from);
    checkName('ioctx.rename', 'destination name', to);
    await this.#n.rename(from, to);
  }

  /** Moves an image to the trash (removable after `delaySeconds`, default 0). Implements rbd_trash_move(). */
  async trashMove(name: string, opts: { delaySeconds?: number } = {}): Promise<void> {
    checkName('ioctx.trashMove', 'image name', name);
    await this.#n.trashMove(name, checkUint('ioctx.trashMove', name, 'delaySeconds', opts.delaySeconds ?? 0));
  }

  /** The trash of this pool/namespace. Implements rbd_trash_list(). */
  async trashList(): Promise<TrashEntry[]> {
    return (await this.#n.trashList()).map((t) => ({
      id: t.id,
      name: t.name,
      source: t.source,
      deletedAt: new Date(t.deletedAtMs),
      deferredUntil: new Date(t.deferredUntilMs),
    }));
  }

  /** Restores a trashed image (by trash id), optionally under a new name. Implements rbd_trash_restore(). */
  async trashRestore(id: string, name = ''): Promise<void> {
    checkName('ioctx.trashRestore', 'trash id', id);
    if (typeof name !== 'string' || name.includes('\0')) throw invalidArgument('ioctx.trashRestore', id, 'name must be a string');
    await this.#n.trashRestore(id, name);
  }

  /** Permanently removes a trashed image (`force` ignores its deferment time). Implements rbd_trash_remove(). */
  async trashRemove(id: string, opts: { force?: boolean; onProgress?: ProgressCallback } = {}): Promise<void> {
    checkName('ioctx.trashRemove', 'trash id', id);
    await this.#n.trashRemove(id, opts.force === true, progressAdapter(opts.onProgress, 'ioctx.trashRemove'));
  }

  /**
   * Opens an image. ImageNotFound if it (or the snapshot) does not exist.
   * Implements rbd_open() and rbd_open_read_only().
   */
  async open(name: string, opts: OpenOptions = {}): Promise<Image> {
    checkName('ioctx.open', 'image name', name);
    if (opts.snapshot !== undefined) checkName('ioctx.open', 'snapshot', opts.snapshot);
    const readOnly = opts.readOnly === true || opts.snapshot !== undefined;
    const n = await this.#n.open(name, opts.snapshot ?? null, opts.readOnly === true);
    return new Image(n, this, name, opts.snapshot ?? null, readOnly);
  }

  /** Closes this ioctx after closing its open images. Idempotent. Implements rados_ioctx_destroy(). */
  close(): Promise<void> {
    return this.#n.close();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Image

/** Result of {@link Image.stat}. */
export interface ImageStat {
  size: number;
  objectSize: number;
  numObjects: number;
  order: number;
  blockNamePrefix: string;
  id: string;
  features: ImageFeatures;
  stripeUnit: number;
  stripeCount: number;
  flags: number;
  /** Id of the pool holding the image's data objects (its own pool unless created with a dataPool). */
  dataPoolId: number;
  /** Bytes still backed by the parent (clones), or null without a parent. */
  overlap: number | null;
  createdAt: Date;
}

/** An image in some pool, as librbd links parents and children. */
export interface LinkedImage {
  pool: string;
  poolId: number;
  namespace: string;
  image: string;
  imageId: string;
  /** The image is in the trash. */
  trash: boolean;
}

/** A clone's parent: image and snapshot. */
export interface ParentInfo extends LinkedImage {
  snap: string;
  snapId: number;
}

/** A snapshot of an image. */
export interface SnapshotInfo {
  id: number;
  name: string;
  size: number;
  /** Only user snapshots can be protected. */
  protected: boolean;
  /**
   * `user` for snapshots made with createSnapshot; `trash` for a removed snapshot that clone-v2
   * children still use (librbd deletes it with the last child); `group`/`mirror` otherwise.
   */
  namespace: SnapNamespace;
  /** For a `trash` snapshot: the name it had as a user snapshot (its own name is a UUID). */
  originalName?: string;
}

/** The lock state of an image ({@link Image.lockers}). */
export interface ImageLockers {
  /** True for an exclusive lock (the exclusive-lock feature's), false for shared ones. */
  exclusive: boolean;
  /** The lock's tag (`internal` for librbd's exclusive lock). */
  tag: string;
  /** The holders: `client` (`client.<id>`), lock `cookie`, `address`. Empty when unlocked. */
  lockers: { client: string; cookie: string; address: string }[];
}

/** A client watching the image (it has it open): explains ImageBusy. */
export interface Watcher {
  address: string;
  id: number;
  cookie: number;
}

/** Options of {@link Image.metadataList}. */
export interface MetadataListOptions {
  /** List only keys after this one (exclusive), e.g. the last key of a previous call. Default: from the first key. */
  start?: string;
  /** At most this many pairs; 0 or absent means all. */
  max?: number;
}

const maxBufferLength = bufferConstants.MAX_LENGTH;

/** An open RBD image (librbd `rbd_image_t`). */
export class Image implements AsyncDisposable {
  readonly #n: NativeImage;
  readonly ioctx: IoCtx;
  readonly name: string;
  /** The snapshot this image is opened at, or null for the head. */
  readonly snapshot: string | null;
  readonly readOnly: boolean;

  /** @internal use {@link IoCtx.open}. */
  constructor(n: NativeImage, ioctx: IoCtx, name: string, snapshot: string | null, readOnly: boolean) {
    this.#n = n;
    this.ioctx = ioctx;
    this.name = name;
    this.snapshot = snapshot;
    this.readOnly = readOnly;
  }

  /** Binding only (no librbd call). */
  get closed(): boolean {
    return this.#n.isClosed();
  }

  /** Implements rbd_stat(). */
  async stat(): Promise<ImageStat> {
    const s = await this.#n.stat();
    return {
      size: s.size,
      objectSize: s.objectSize,
      numObjects: s.numObjects,
      order: s.order,
      blockNamePrefix: s.blockNamePrefix,
      id: s.id,
      features: { mask: s.features, names: featureNames(s.features) },
      stripeUnit: s.stripeUnit,
      stripeCount: s.stripeCount,
      flags: s.flags,
      dataPoolId: s.dataPoolId,
      overlap: s.overlap,
      createdAt: new Date(s.createdMs),
    };
  }

  /** Size in bytes. Implements rbd_get_size(). */
  size(): Promise<number> {
    return this.#n.size();
  }

  /** Implements rbd_get_features(). */
  async features(): Promise<ImageFeatures> {
    const mask = await this.#n.features();
    return { mask, names: featureNames(mask) };
  }

  /**
   * Grows or shrinks the image (`allowShrink: false` rejects a shrink with InvalidArgument).
   * Implements rbd_resize2().
   */
  async resize(size: number, opts: { allowShrink?: boolean; onProgress?: ProgressCallback } = {}): Promise<void> {
    checkUint('image.resize', this.name, 'size', size);
    await this.#n.resize(size, opts.allowShrink !== false, progressAdapter(opts.onProgress, 'image.resize'));
  }

  /**
   * Copies all data from the parent so the clone no longer depends on it. InvalidArgument without a parent.
   * Implements rbd_flatten().
   */
  async flatten(opts: { onProgress?: ProgressCallback } = {}): Promise<void> {
    await this.#n.flatten(progressAdapter(opts.onProgress, 'image.flatten'));
  }

  /** The parent image and snapshot of a clone, or null. Implements rbd_get_parent(). */
  async parent(): Promise<ParentInfo | null> {
    return this.#n.parent();
  }

  /**
   * Clones of the snapshot this image is opened at (open with `{ snapshot }`), in every pool.
   * Implements rbd_list_children3().
   */
  async children(): Promise<LinkedImage[]> {
    return this.#n.children();
  }

  /** Implements rbd_snap_create(). */
  async createSnapshot(name: string): Promise<void> {
    checkName('image.snapCreate', 'snapshot name', name);
    await this.#n.snapCreate(name);
  }

  /**
   * Removes a snapshot. ImageBusy if protected, ImageHasSnapshots-style errors as librbd reports.
   * Implements rbd_snap_remove().
   */
  async removeSnapshot(name: string): Promise<void> {
    checkName('image.snapRemove', 'snapshot name', name);
    await this.#n.snapRemove(name);
  }

  /** Protects a snapshot (needed for clone format 1). ImageBusy if already protected. Implements rbd_snap_protect(). */
  async protectSnapshot(name: string): Promise<void> {
    checkName('image.snapProtect', 'snapshot name', name);
    await this.#n.snapProtect(name);
  }

  /**
   * Unprotects a snapshot. ImageBusy while it has children; InvalidArgument if not protected.
   * Implements rbd_snap_unprotect().
   */
  async unprotectSnapshot(name: string): Promise<void> {
    checkName('image.snapUnprotect', 'snapshot name', name);
    await this.#n.snapUnprotect(name);
  }

  /** Implements rbd_snap_is_protected(). */
  async isSnapshotProtected(name: string): Promise<boolean> {
    checkName('image.snapIsProtected', 'snapshot name', name);
    return this.#n.snapIsProtected(name);
  }

  /** Reverts the image's content to the snapshot. Implements rbd_snap_rollback(). */
  async rollbackToSnapshot(name: string, opts: { onProgress?: ProgressCallback } = {}): Promise<void> {
    checkName('image.snapRollback', 'snapshot name', name);
    await this.#n.snapRollback(name, progressAdapter(opts.onProgress, 'image.snapRollback'));
  }

  /**
   * Every snapshot of the image, of every namespace (see {@link SnapshotInfo.namespace}).
   * Implements rbd_snap_list().
   */
  async listSnapshots(): Promise<SnapshotInfo[]> {
    return this.#n.snapList();
  }

  /**
   * Clones of the snapshot with this id (from {@link listSnapshots}), in every pool. Works for
   * snapshots of any namespace, e.g. a `trash` snapshot whose name is not usable with `open`.
   * Implements rbd_list_children3() at rbd_snap_set_by_id().
   */
  async snapshotChildren(snapId: number): Promise<LinkedImage[]> {
    checkUint('image.snapChildren', this.name, 'snapId', snapId);
    return this.#n.snapChildren(snapId);
  }

  /**
   * Removes the snapshot with this id, of any namespace (`rbd snap rm --snap-id`): the way to
   * purge a `trash` snapshot left without children. ImageBusy while it has children.
   * Implements rbd_snap_remove_by_id().
   */
  async removeSnapshotById(snapId: number): Promise<void> {
    checkUint('image.snapRemoveById', this.name, 'snapId', snapId);
    await this.#n.snapRemoveById(snapId);
  }

  /**
   * Reads `length` bytes at `offset` (rbd_aio_read); shorter only at the end of the image.
   * Implements rbd_aio_read().
   */
  async read(offset: number, length: number): Promise<Buffer> {
    checkUint('image.read', this.name, 'offset', offset);
    checkUint('image.read', this.name, 'length', length);
    if (length > maxBufferLength) throw invalidArgument('image.read', this.name, `length must be at most ${maxBufferLength}`);
    const buf = Buffer.allocUnsafe(length);
    if (length === 0) return buf;
    const n = await this.#n.read(offset, buf);
    return n === length ? buf : buf.subarray(0, n);
  }

  /**
   * Writes `data` at `offset` (rbd_aio_write). The buffer is referenced, not copied, until the
   * promise settles: do not modify it meanwhile.
   * Implements rbd_aio_write().
   */
  async write(offset: number, data: Uint8Array): Promise<void> {
    checkUint('image.write', this.name, 'offset', offset);
    if (!(data instanceof Uint8Array)) throw invalidArgument('image.write', this.name, 'data must be a Uint8Array');
    if (data.byteLength === 0) return;
    await this.#n.write(offset, data);
  }

  /** Deallocates a range (reads as zeros afterwards). Implements rbd_aio_discard(). */
  async discard(offset: number, length: number): Promise<void> {
    checkUint('image.discard', this.name, 'offset', offset);
    checkUint('image.discard', this.name, 'length', length);
    await this.#n.discard(offset, length);
  }

  /** Waits until previous writes are durable. Implements rbd_aio_flush(). */
  async flush(): Promise<void> {
    await this.#n.flush();
  }

  /**
   * Clients that have the image open (their watch), e.g. to explain ImageBusy on remove.
   * Implements rbd_watchers_list().
   */
  watchers(): Promise<Watcher[]> {
    return this.#n.watchers();
  }

  /**
   * The image's lockers (`rbd_list_lockers`): the exclusive lock of the exclusive-lock feature
   * (cookie `auto <n>`, tag `internal`) or advisory locks. `client` is `client.<instanceId>`.
   * Implements rbd_list_lockers().
   */
  lockers(): Promise<ImageLockers> {
    return this.#n.lockers();
  }

  /**
   * The value of image metadata `key`, or `undefined` when the key is not set (an expected
   * answer, e.g. an image no Ephemera host owns; librbd's ENOENT would otherwise read as
   * ImageNotFound). Works on read-only and snapshot opens: metadata belongs to the image, so
   * an open at a snapshot reads the head's current pairs.
   * Implements rbd_metadata_get().
   */
  async metadataGet(key: string): Promise<string | undefined> {
    checkMetadataKey('image.metadataGet', this.name, key);
    return this.#n.metadataGet(key);
  }

  /**
   * Sets image metadata `key` to `value` (replacing any previous value). Keys are at most
   * {@link METADATA_KEY_MAX_BYTES}, values at most {@link METADATA_VALUE_MAX_BYTES} bytes of
   * UTF-8, neither may contain NUL. Keys starting with `conf_` are librbd config overrides
   * applied to every client that opens the image: do not use that prefix for data.
   * ReadOnlyImage (EROFS) on an image opened read-only or at a snapshot.
   * Implements rbd_metadata_set().
   */
  async metadataSet(key: string, value: string): Promise<void> {
    const op = 'image.metadataSet';
    checkMetadataKey(op, this.name, key);
    checkMetadataString(op, this.name, 'value', value, METADATA_VALUE_MAX_BYTES, true);
    await this.#n.metadataSet(key, value);
  }

  /**
   * Removes image metadata `key`: `true` when it was removed, `false` when it was not set (so a
   * rollback can call it unconditionally). ReadOnlyImage (EROFS) on a read-only or snapshot open.
   * Implements rbd_metadata_remove().
   */
  async metadataRemove(key: string): Promise<boolean> {
    checkMetadataKey('image.metadataRemove', this.name, key);
    return this.#n.metadataRemove(key);
  }

  /**
   * The image's metadata as `[key, value]` pairs in key order (RADOS orders keys by their UTF-8
   * bytes; `new Map(pairs)` or `Object.fromEntries(pairs)` for lookups). All pairs by default,
   * fetched from librbd in pages of 64; `start` lists only keys after it (exclusive), `max`
   * caps the number of pairs (0 or absent: no cap).
   * Implements rbd_metadata_list().
   */
  async metadataList(opts: MetadataListOptions = {}): Promise<[string, string][]> {
    const op = 'image.metadataList';
    if (opts === null || typeof opts !== 'object') throw invalidArgument(op, this.name, 'options must be an object');
    const start = opts.start ?? '';
    if (typeof start !== 'string' || start.includes('\0')) throw invalidArgument(op, this.name, 'start must be a string without NUL');
    if (loneSurrogate.test(start)) throw invalidArgument(op, this.name, 'start must be well-formed Unicode (no lone surrogate)');
    const max = checkUint(op, this.name, 'max', opts.max ?? 0);
    return this.#n.metadataList(start, max);
  }

  /** Closes the image after its in-flight operations. Idempotent. Implements rbd_close(). */
  close(): Promise<void> {
    return this.#n.close();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** True when `err` is an RbdError with the given code (e.g. `'ENOENT'`). */
export function isRbdError(err: unknown, code?: string): err is RbdError {
  return err instanceof RbdError && (code === undefined || err.code === code);
}
