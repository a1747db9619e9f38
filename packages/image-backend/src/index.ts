/**
 * `@ephemera/image-backend`: the contract every Ephemera image backend implements.
 *
 * - Types: `ImageBackend`, `DiskRef`, `SourceImage`, `DiskSource`, `CreateResult`, capabilities...
 * - Typed errors shared by all backends (`NotFoundError`, `BusyError`, `UnsupportedOperationError`...).
 * - Plugins: DI tokens (`IMAGE_BACKEND`), contract versioning (`IMAGE_BACKEND_API_VERSION`/`_AGE`)
 *   and `BackendRegistry`.
 * - Helpers for backend authors: `readImage` (verified, abortable stream), `ProgressReporter`,
 *   `retryWhileBusy`, disk-name validation.
 * - Glance `rbd://` locations: `parseRbdLocation` / `formatRbdLocation` (the one parser both
 *   `@ephemera/glance` and `@ephemera/backend-rbd` use), `InvalidRbdLocationError`.
 * - Testing: `describeBackendConformance` (the shared conformance suite) and `MemoryBackend`
 *   (the in-memory reference backend).
 *
 * No runtime dependencies.
 *
 * @packageDocumentation
 */

export type {
  BackendCapabilities,
  BlockDiskSource,
  Capability,
  Capacity,
  CreateBlankOptions,
  CreateFromImageOptions,
  CreateResult,
  DirectSnapshotOptions,
  FinishDirectSnapshotOptions,
  FlattenOptions,
  DirectSnapshotResult,
  DiskClient,
  DiskEncryption,
  DiskFormat,
  DiskInfo,
  DiskRef,
  DiskSource,
  FileDiskSource,
  ImageBackend,
  ImageByteStream,
  ImageReader,
  ImageLocation,
  ListFilter,
  NetworkDiskSource,
  NetworkHost,
  OperationOptions,
  ProgressEvent,
  ProgressPhase,
  RbdAuth,
  RemoveDirectSnapshotOptions,
  RemoveOptions,
  SnapshotInfo,
  SourceImage,
  WellKnownDiskName,
} from './types.js';
export { CAPABILITIES } from './types.js';

export type { ImageBackendErrorCode, ImageBackendErrorOptions } from './errors.js';
export {
  AbortedError,
  AlreadyExistsError,
  BackendUnavailableError,
  BusyError,
  DuplicateBackendError,
  IMAGE_BACKEND_ERROR_CODES,
  ImageBackendError,
  ImageSourceError,
  IncompatiblePluginError,
  InsufficientCapacityError,
  InvalidArgumentError,
  NotFoundError,
  UnknownBackendError,
  UnsafeImageError,
  UnsupportedOperationError,
  isImageBackendError,
} from './errors.js';

export {
  assertValidDiskRef,
  assertValidSize,
  assertValidSnapshotName,
  diskId,
  isUuid,
  listFilterPrefix,
  parseDiskId,
} from './disk-ref.js';

export type { ApiWindow, BackendRegistryOptions } from './registry.js';
export {
  BACKEND_REGISTRY,
  BackendRegistry,
  IMAGE_BACKEND,
  IMAGE_BACKEND_API_AGE,
  IMAGE_BACKEND_API_VERSION,
  apiWindow,
  assertCompatiblePlugin,
  hasCapability,
  pluginNamed,
  requireCapability,
} from './registry.js';

export type { ReadImageOptions, RetryWhileBusyOptions, SleepOptions } from './support.js';
export { ProgressReporter, processesHoldingOpen, readImage, retryWhileBusy, sleep, throwIfAborted } from './support.js';

export {
  MAX_ANNOTATION_BYTES,
  assertValidAnnotation,
  assertValidAnnotationKey,
  isAnnotationKey,
} from './annotation.js';
export type { KeyProvider } from './keys.js';
export { KEY_PROVIDER } from './keys.js';

export type { DiskOwner, OwnerStamp } from './owner.js';
export {
  assertValidOwnerStamp,
  formatOwner,
  handOver,
  isDiskOwner,
  isHostId,
  ownerRecord,
  parseOwner,
} from './owner.js';

export type { ParsedRbdLocation, RbdLocationPart, RbdLocationParts, RbdLocationProblem } from './rbd-location.js';
export {
  formatRbdLocation,
  InvalidRbdLocationError,
  MAX_RBD_LOCATION_LENGTH,
  parseRbdLocation,
} from './rbd-location.js';

export type { BytesImageOptions, FileImageOptions } from './source-image.js';
export { patternBytes, sourceImageFromBytes, sourceImageFromFile } from './source-image.js';

export type { ConformanceFixture, ConformanceOptions, ConformanceTestApi } from './conformance.js';
export {
  assertWellFormedDiskSource,
  describeBackendConformance,
  expectImageBackendError,
  expectUnsupported,
} from './conformance.js';

export type { MemoryBackendOptions } from './memory-backend.js';
export { MemoryBackend } from './memory-backend.js';
