/**
 * `@ephemera/qemu-img-wrapper`: a safe qemu-img wrapper (argv only, `LC_ALL=C`, timeouts,
 * prlimit for untrusted input, progress events, AbortSignal) and a pure TypeScript image format
 * inspector that vets untrusted images before qemu-img ever sees them.
 *
 * @packageDocumentation
 */

// Errors
export {
  ImageFormatError,
  ImageSafetyError,
  QemuImgError,
  QEMU_IMG_ERROR_CODES,
  isQemuImgError,
  type QemuImgErrorCode,
  type QemuImgErrorWithCode,
  type ImageFormatErrorReason,
  type UnsafeImageReason,
  type SafetyIssue,
  type QemuImgErrorKind,
} from './errors.js';

// Format inspector
export {
  inspectImageFile,
  inspectImageBuffer,
  inspectImageStream,
  checkImageFile,
  safetyCheck,
  ImageInspector,
  DECLARABLE_FORMATS,
  type SafetyOptions,
} from './inspector/index.js';
export {
  QEMU_DRIVER,
  type ImageFormat,
  type InspectedImage,
  type FormatDetails,
  type VmdkExtent,
} from './inspector/types.js';

// qemu-img
export {
  QemuImg,
  type QemuImgOptions,
  type CommonOptions,
  type InfoOptions,
  type ImageInfo,
  type SnapshotInfo,
  type CreateOptions,
  type ConvertOptions,
  type CacheMode,
  type CheckResult,
  type MeasureResult,
} from './qemu-img.js';
export type { ResourceLimits } from './run.js';
export type { QemuSecret } from './secrets.js';
export {
  LUKS_ITER_TIME_MS,
  luksCreateOptions,
  luksImageOpts,
  renderSecretObject,
  withSecretFile,
} from './secrets.js';
/**
 * Children that die with this process: `withParentDeathSignal(argv)` prefixes
 * `setpriv --pdeathsig KILL --` (util-linux) when `findSetpriv()` finds it on PATH.
 */
export { withParentDeathSignal, findSetpriv } from './pdeathsig.js';
export { ProgressParser } from './progress.js';
export {
  rbdLocation,
  rbdUri,
  rbdJson,
  httpLocation,
  httpJson,
  nbdLocation,
  nbdJson,
  type HttpLocation,
  type NbdLocation,
  type RbdImage,
  type RbdLocation,
  type ImageLocation,
} from './location.js';
