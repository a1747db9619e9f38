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
  /** Machine-readable reason code. */
  readonly reason: ImageFormatErrorReason;
  /** The format whose header was being parsed, when known. */
  readonly format: string | undefined;

  constructor(reason: ImageFormatErrorReason, message: string, format?: string, options?: { cause?: unknown }) {
    super(message, options);
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
export class UnsafeImageError extends Error {
  override readonly name = 'UnsafeImageError';
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
    this.kind = init.kind;
    this.command = init.command;
    this.args = init.args ?? [];
    this.exitCode = init.exitCode ?? null;
    this.signal = init.signal ?? null;
    this.stderr = init.stderr ?? '';
  }
}
