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
  isRbdError,
  NoSpace,
  ObjectNotFound,
  OperationCanceled,
  OperationNotSupported,
  PermissionDenied,
  RbdError,
  ReadOnlyImage,
  Timeout,
} from './errors.js';
export type { RbdErrorCode } from './errors.js';
// The errno tables and the load-failure wording are internals (tests import their source files).
export { loadAddon, NativeLoadError, setExitCloseTimeout } from './native.js';
export type { SnapNamespace } from './native.js';
export { featureMask, featureNames, RbdFeature } from './features.js';
export type { FeatureName, Features, ImageFeatures } from './features.js';
export { METADATA_KEY_MAX_BYTES, METADATA_VALUE_MAX_BYTES } from './metadata.js';
export type { MetadataListOptions } from './metadata.js';
export type { Progress, ProgressCallback } from './progress.js';
export { libraryVersions, setWorkerThreads, workerThreads } from './library.js';
export { Cluster, connect } from './cluster.js';
export type { ConnectOptions, MonCommandResult, PoolStats } from './cluster.js';
export type { CloneOptions, CreateOptions, OpenOptions } from './options.js';
export { IoCtx } from './ioctx.js';
export type { TrashEntry } from './ioctx.js';
export type { LockOptions, ObjectLocker, ObjectLockers } from './lock.js';
export { Image } from './image.js';
export type { ImageLockers, ImageStat, LinkedImage, ParentInfo, Watcher } from './image.js';
export type { SnapshotInfo } from './snapshot.js';
