// An open RBD image (librbd `rbd_image_t`): stat, resize/flatten, snapshots, I/O, locks, metadata.
import { constants as bufferConstants } from 'node:buffer';
import { invalidArgument } from './errors.js';
import { featureNames, type ImageFeatures } from './features.js';
import type { IoCtx } from './ioctx.js';
import {
  checkMetadataKey,
  checkMetadataString,
  loneSurrogate,
  METADATA_VALUE_MAX_BYTES,
  type MetadataListOptions,
} from './metadata.js';
import type { NativeImage } from './native.js';
import { progressAdapter, type ProgressCallback } from './progress.js';
import type { SnapshotInfo } from './snapshot.js';
import { checkName, checkUint } from './validation.js';

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
    if (length > maxBufferLength)
      throw invalidArgument('image.read', this.name, `length must be at most ${maxBufferLength}`);
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
    if (typeof start !== 'string' || start.includes('\0'))
      throw invalidArgument(op, this.name, 'start must be a string without NUL');
    if (loneSurrogate.test(start))
      throw invalidArgument(op, this.name, 'start must be well-formed Unicode (no lone surrogate)');
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
