// An I/O context on one pool and namespace: image management (create, clone, remove, trash, open).
import type { Cluster } from './cluster.js';
import { invalidArgument } from './errors.js';
import { Image } from './image.js';
import { checkDescription, checkDuration, lockFlags, type LockOptions, type ObjectLockers } from './lock.js';
import type { NativeIoCtx } from './native.js';
import { imageOpts, type CloneOptions, type CreateOptions, type OpenOptions } from './options.js';
import { progressAdapter, type ProgressCallback } from './progress.js';
import { checkName, checkUint } from './validation.js';

/** An entry of the pool's RBD trash. */
export interface TrashEntry {
  id: string;
  name: string;
  source: string;
  deletedAt: Date;
  deferredUntil: Date;
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

  /**
   * Names of the images whose name starts with `prefix` (non-empty), sorted. Reads only the
   * matching keys of the pool's image directory (`rbd_directory`), so it costs the same in a pool
   * of thousands of images as in an empty one, where {@link list} reads every entry. Covers format
   * 2 images (every image librbd creates by default since Jewel), not the old format 1.
   * Implements rados_read_op_omap_get_vals2() on `rbd_directory` with a key prefix.
   */
  async listPrefixed(prefix: string): Promise<string[]> {
    checkName('ioctx.listPrefixed', 'name prefix', prefix);
    return this.#n.listPrefixed(prefix);
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
    await IoCtx.native(dest).clone(
      IoCtx.native(parent),
      opts.parent.image,
      opts.parent.snap,
      opts.dest.name,
      nativeOpts,
    );
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
    if (typeof name !== 'string' || name.includes('\0'))
      throw invalidArgument('ioctx.trashRestore', id, 'name must be a string');
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

  /**
   * Takes the exclusive lock `name` on RADOS object `oid` (created empty if missing) as this
   * connection's client with `opts.cookie`, for `opts.durationMs` (a lease: it expires by itself,
   * so a holder that dies frees it); `renew: 'may'` renews it when this holder has it already.
   * ImageBusy (EBUSY) when another (client, cookie) holds it, ImageExists (EEXIST) when this
   * holder has it and `renew` is not given.
   * Implements rados_lock_exclusive().
   */
  async lockExclusive(oid: string, name: string, opts: LockOptions): Promise<void> {
    const op = 'ioctx.lockExclusive';
    checkName(op, 'object name', oid);
    checkName(op, 'lock name', name);
    if (opts === null || typeof opts !== 'object') throw invalidArgument(op, oid, 'options are required');
    checkName(op, 'cookie', opts.cookie);
    const desc = checkDescription(op, oid, opts.description);
    const duration = checkDuration(op, oid, opts.durationMs);
    await this.#n.lockExclusive(oid, name, opts.cookie, desc, duration, lockFlags(op, oid, opts.renew));
  }

  /**
   * Releases lock `name` on `oid` held by this connection's client with `cookie`: true when
   * released, false when it was not held (expired, broken, never taken).
   * Implements rados_unlock().
   */
  async unlock(oid: string, name: string, cookie: string): Promise<boolean> {
    const op = 'ioctx.unlock';
    checkName(op, 'object name', oid);
    checkName(op, 'lock name', name);
    checkName(op, 'cookie', cookie);
    return this.#n.unlock(oid, name, cookie);
  }

  /**
   * Releases lock `name` on `oid` held by another holder (`client` as {@link listLockers} gives it,
   * `client.<id>`, and its cookie): true when broken, false when that holder did not hold it.
   * Implements rados_break_lock().
   */
  async breakLock(oid: string, name: string, client: string, cookie: string): Promise<boolean> {
    const op = 'ioctx.breakLock';
    checkName(op, 'object name', oid);
    checkName(op, 'lock name', name);
    checkName(op, 'client', client);
    checkName(op, 'cookie', cookie);
    return this.#n.breakLock(oid, name, client, cookie);
  }

  /**
   * The holders of lock `name` on `oid` (an empty list when nobody holds it or the object does not
   * exist; expired leases are not listed).
   * Implements rados_list_lockers().
   */
  async listLockers(oid: string, name: string): Promise<ObjectLockers> {
    const op = 'ioctx.listLockers';
    checkName(op, 'object name', oid);
    checkName(op, 'lock name', name);
    return this.#n.listLockers(oid, name);
  }

  /** Closes this ioctx after closing its open images. Idempotent. Implements rados_ioctx_destroy(). */
  close(): Promise<void> {
    return this.#n.close();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
