/**
 * Every stable `code` an error of this package carries (the CLI maps each one to an exit code):
 * {@link ImageFormatError} is `QEMU_IMG_BAD_IMAGE`, {@link ImageSafetyError} `QEMU_IMG_UNSAFE_IMAGE`,
 * {@link QemuImgError} `QEMU_IMG_<KIND>` (its `kind` in capitals, `-` as `_`).
 */
export const QEMU_IMG_ERROR_CODES = [
  'QEMU_IMG_BAD_IMAGE',
  'QEMU_IMG_UNSAFE_IMAGE',
  'QEMU_IMG_EXIT',
  'QEMU_IMG_TIMEOUT',
  'QEMU_IMG_ABORTED',
  'QEMU_IMG_SPAWN',
  'QEMU_IMG_PARSE',
  'QEMU_IMG_SIGNAL',
  'QEMU_IMG_INVALID_ARGUMENT',
] as const;

/** A stable code of this package's errors (see {@link QEMU_IMG_ERROR_CODES}). */
export type QemuImgErrorCode = (typeof QEMU_IMG_ERROR_CODES)[number];

/** Marks this package's errors; `Symbol.for` makes it the same symbol in every copy of the package. */
const BRAND: unique symbol = Symbol.for('@ephemera/qemu-img-wrapper:error');

/**
 * Why the inspector could not make sense of an image's headers.
 * - `truncated`: the input ends inside a header the format requires.
 * - `invalid-header`: a header field is out of range or inconsistent.
 * - `unknown-format`: a format (or declared format) this inspector does not support.
 * - `limits`: the headers ask for more reading than the inspector allows (header bomb).
 * - `stream-order`: a streamed image needs a header region that has already streamed past.
 * - `io`: reading the file failed.
 * - `empty`: the input has no data, or fewer than 512 bytes (one sector) that no format claims.
 */
export type ImageFormatErrorReason =
  | 'empty'
  | 'truncated'
  | 'invalid-header'
  | 'unknown-format'
  | 'limits'
  | 'stream-order'
  | 'io';

/** The inspector could not parse an image: the image must not be used. */
export class ImageFormatError extends Error {
  override readonly name = 'ImageFormatError';
  /** Stable code (the same for every `reason`). */
  readonly code = 'QEMU_IMG_BAD_IMAGE';
  /** Machine-readable reason code. */
  readonly reason: ImageFormatErrorReason;
  /** The format whose header was being parsed, when known. */
  readonly format: string | undefined;

  constructor(reason: ImageFormatErrorReason, message: string, format?: string, options?: { cause?: unknown }) {
    super(message, options);
    Object.defineProperty(this, BRAND, { value: true });
    this.reason = reason;
    this.format = format;
  }
}

/**
 * Why an image was judged unsafe to hand to qemu-img.
 * - `backing-file`: the image names a backing (parent) file.
 * - `data-file`: a qcow2 external data file (feature bit or header extension).
 * - `vmdk-extent`: a VMDK whose extents name other files: a text descriptor, a non-SPARSE extent,
 *   not exactly one extent, or an extent name that is not a bare file name (the image itself).
 * - `vmdk-create-type`: a VMDK createType other than monolithicSparse/streamOptimized.
 * - `format-mismatch`: the declared format differs from the detected one.
 * - `unknown-feature`: unknown incompatible feature bits.
 * - `corrupt`: the format marks the image corrupt.
 * - `header-bomb`: header fields that would make qemu-img allocate or read huge amounts.
 * - `unsupported-variant`: a variant of a known format this inspector does not vet.
 * - `virtual-size`: the virtual size exceeds the caller's limit.
 * - `encrypted`: an encrypted image where the caller does not allow encryption.
 */
export type UnsafeImageReason =
  | 'backing-file'
  | 'data-file'
  | 'vmdk-extent'
  | 'vmdk-create-type'
  | 'format-mismatch'
  | 'unknown-feature'
  | 'corrupt'
  | 'header-bomb'
  | 'unsupported-variant'
  | 'virtual-size'
  | 'encrypted';

/** One reason an image is unsafe, with a human explanation. */
export interface SafetyIssue {
  reason: UnsafeImageReason;
  message: string;
}

/** The image parsed but is unsafe to use. `issues` lists every problem found; `reason` is the first. */
export class ImageSafetyError extends Error {
  override readonly name = 'ImageSafetyError';
  /** Stable code (the same for every `reason`). */
  readonly code = 'QEMU_IMG_UNSAFE_IMAGE';
  readonly reason: UnsafeImageReason;
  /** The detected format. */
  readonly format: string;
  readonly issues: readonly SafetyIssue[];

  constructor(format: string, issues: readonly SafetyIssue[]) {
    const first = issues[0] ?? { reason: 'unsupported-variant' as const, message: 'unsafe image' };
    super(
      issues.length > 1
        ? `unsafe ${format} image: ${issues.map((i) => i.message).join('; ')}`
        : `unsafe ${format} image: ${first.message}`,
    );
    Object.defineProperty(this, BRAND, { value: true });
    this.reason = first.reason;
    this.format = format;
    this.issues = issues;
  }
}

/**
 * How a qemu-img invocation failed.
 * - `exit`: non-zero exit status. `timeout`: the time limit passed and the child was killed.
 * - `aborted`: the caller's AbortSignal fired. `spawn`: the binary could not be started.
 * - `parse`: qemu-img's output could not be understood. `signal`: killed by a signal (e.g. a
 *   resource limit: SIGKILL/SIGXCPU for CPU time, SIGSEGV/SIGABRT when address space ran out).
 * - `invalid-argument`: the wrapper refused the arguments before running anything.
 */
export type QemuImgErrorKind = 'exit' | 'timeout' | 'aborted' | 'spawn' | 'parse' | 'signal' | 'invalid-argument';

/** A qemu-img run failed. `stderr` holds qemu-img's own explanation (capped). */
export class QemuImgError extends Error {
  override readonly name = 'QemuImgError';
  /** Stable code, `QEMU_IMG_<KIND>` (e.g. `QEMU_IMG_TIMEOUT` for kind `timeout`). */
  readonly code: QemuImgErrorCode;
  readonly kind: QemuImgErrorKind;
  /** The qemu-img sub-command (`info`, `convert`, ...). */
  readonly command: string;
  /** The argv (without the binary) that was run; never contains secrets. */
  readonly args: readonly string[];
  readonly exitCode: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stderr: string;

  constructor(init: {
    kind: QemuImgErrorKind;
    command: string;
    args?: readonly string[];
    exitCode?: number | null;
    signal?: NodeJS.Signals | null;
    stderr?: string;
    message: string;
    cause?: unknown;
  }) {
    super(init.message, init.cause === undefined ? undefined : { cause: init.cause });
    Object.defineProperty(this, BRAND, { value: true });
    this.code = `QEMU_IMG_${init.kind.toUpperCase().replace('-', '_')}` as QemuImgErrorCode;
    this.kind = init.kind;
    this.command = init.command;
    this.args = init.args ?? [];
    this.exitCode = init.exitCode ?? null;
    this.signal = init.signal ?? null;
    this.stderr = init.stderr ?? '';
  }
}

/** The class of this package's errors that carries code `C` (a union for a union of codes). */
export type QemuImgErrorWithCode<C extends QemuImgErrorCode> = C extends 'QEMU_IMG_BAD_IMAGE'
  ? ImageFormatError
  : C extends 'QEMU_IMG_UNSAFE_IMAGE'
    ? ImageSafetyError
    : QemuImgError;

/**
 * True when `err` is an error of this package ({@link ImageFormatError}, {@link ImageSafetyError},
 * {@link QemuImgError}), optionally with the given code, also one made by another copy of
 * `@ephemera/qemu-img-wrapper` (it checks the package's brand, not `instanceof`).
 */
export function isQemuImgError<C extends QemuImgErrorCode = QemuImgErrorCode>(
  err: unknown,
  code?: C,
): err is QemuImgErrorWithCode<C> {
  if (typeof err !== 'object' || err === null || (err as { [BRAND]?: unknown })[BRAND] !== true) return false;
  return code === undefined || (err as QemuImgError).code === code;
}
