/**
 * `@ephemera/glance`: a Glance v2 client (streaming upload, verified streaming download,
 * properties, locations, copy-image import) and the pluggable image location resolver that picks
 * how a compute node gets an image: an RBD clone, a copy, a download, or a converted import.
 */

// Client
/** Glance v2 client over Node's fetch. */
export { GlanceClient } from './client.js';
export type {
  CallOptions,
  CopyImageOptions,
  DownloadOptions,
  DownloadResult,
  GlanceClientOptions,
  ImageDownload,
  ImageLocations,
  ImageTask,
  ProgressEvent,
  UploadBody,
} from './client.js';
/** Token providers: keystone-less, trusted identity headers, static token, Keystone v3 password. */
export { IdentityHeaders, KeystoneTokenProvider, NoAuth, StaticToken } from './auth.js';
export type { IdentityHeadersOptions, KeystonePasswordOptions, TokenProvider } from './auth.js';
/** Retry policy (exponential backoff with jitter). */
export { backoffDelay, DEFAULT_RETRY } from './retry.js';
export type { RetryPolicy } from './retry.js';
/** Which hash a download is verified against (`ImageDownload.expected`). */
export type { ExpectedHash } from './verify.js';
/** Glance API shapes. */
export type {
  CreateImageRequest,
  GlanceImage,
  GlanceStore,
  ImageLocationEntry,
  ImageStatus,
  JsonPatchOp,
  ListImagesFilter,
} from './types.js';

// Errors
/** Typed errors; all extend GlanceError (`code`, `status`, `imageId`). */
export {
  ChecksumMismatchError,
  GLANCE_ERROR_CODES,
  GlanceAbortedError,
  GlanceAuthError,
  GlanceConflictError,
  GlanceConnectionError,
  GlanceError,
  GlanceHttpError,
  GlanceNotFoundError,
  GlanceTimeoutError,
  ImageImportError,
  ImageImportTimeoutError,
  ImageStateError,
  isGlanceError,
  LocationParseError,
  NoUsablePlanError,
  SizeMismatchError,
} from './errors.js';
export type { GlanceErrorCode, LocationProblem } from './errors.js';

// URLs
/** Strict location URL parsing. */
export { formatRbdUrl, glanceLocationUrl, MAX_LOCATION_URL_LENGTH, parseLocationUrl } from './url.js';
export type {
  FileLocation,
  GlanceLocation,
  HttpLocation,
  OtherLocation,
  ParsedLocation,
  RbdLegacyLocation,
  RbdLocation,
} from './url.js';

// Resolver
/** The resolver and its plan rendering. */
export { formatPlan, ImageResolver } from './resolver/resolver.js';
export type { ResolveOptions, ResolverGlance } from './resolver/resolver.js';
/** The shipped handlers, their costs and the format rules. */
export {
  CONVERSION_COST,
  COSTS,
  FileHandler,
  GlanceDownloadHandler,
  HttpDownloadHandler,
  NATIVE_FORMATS,
  RbdCloneHandler,
  RbdCopyHandler,
} from './resolver/handlers.js';
export type { RbdProbe } from './resolver/handlers.js';
export type {
  AssessContext,
  Assessment,
  BackendKind,
  DeclinedOption,
  ImageHandler,
  Location,
  LocationSource,
  Plan,
  PlanMethod,
  PlanOption,
  ReachableCluster,
  ResolveTarget,
} from './resolver/types.js';
/** An RbdProbe over the `rbd` CLI. */
export { RbdCliProbe } from './rbd-cli-probe.js';
export type { RbdCliCluster } from './rbd-cli-probe.js';

// Dependency injection
/** inversify tokens and the container module. */
export { GLANCE_TYPES, glanceModule } from './di.js';
export type { GlanceModuleOptions } from './di.js';
