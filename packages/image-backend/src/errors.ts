/**
 * Typed errors shared by every image backend. Callers branch on `code` (stable strings) or on
 * the class; `isImageBackendError(err, code)` works even when two copies of this package are
 * loaded (where `instanceof` would not).
 */

/** Marks this package's errors; `Symbol.for` makes it the same symbol in every copy of the package. */
const BRAND: unique symbol = Symbol.for('@ephemera/image-backend:error');

/** Every error code this contract defines (e.g. for a table that maps each code to an exit status). */
export const IMAGE_BACKEND_ERROR_CODES = [
  'NOT_FOUND',
  'ALREADY_EXISTS',
  'BUSY',
  'INSUFFICIENT_CAPACITY',
  'UNSAFE_IMAGE',
  'IMAGE_SOURCE',
  'UNSUPPORTED_OPERATION',
  'BACKEND_UNAVAILABLE',
  'INVALID_ARGUMENT',
  'ABORTED',
  'INCOMPATIBLE_PLUGIN',
  'UNKNOWN_BACKEND',
  'DUPLICATE_BACKEND',
] as const;

/** Every error code this contract defines. */
export type ImageBackendErrorCode = (typeof IMAGE_BACKEND_ERROR_CODES)[number];

/** Extra context an error may carry. Never put secrets (cephx keys) here. */
export interface ImageBackendErrorOptions {
  /** The backend that raised it. */
  backend?: string;
  /** The canonical disk id (`<instance>_<name>`) concerned, if any. */
  diskId?: string;
  /** The underlying error (an errno error, a child process failure...). */
  cause?: unknown;
}

/** Base class of all contract errors. */
export class ImageBackendError extends Error {
  /** Stable machine-readable code. */
  readonly code: ImageBackendErrorCode;
  /** Backend name, when known. */
  readonly backend: string | undefined;
  /** Canonical disk id, when the error concerns one disk. */
  readonly diskId: string | undefined;

  constructor(code: ImageBackendErrorCode, message: string, options: ImageBackendErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    Object.defineProperty(this, BRAND, { value: true });
    this.code = code;
    this.backend = options.backend;
    this.diskId = options.diskId;
  }
}

/** The disk (or snapshot, or image) does not exist. */
export class NotFoundError extends ImageBackendError {
  constructor(message: string, options?: ImageBackendErrorOptions) {
    super('NOT_FOUND', message, options);
  }
}

/** A create would overwrite something that exists; the existing object is left untouched. */
export class AlreadyExistsError extends ImageBackendError {
  constructor(message: string, options?: ImageBackendErrorOptions) {
    super('ALREADY_EXISTS', message, options);
  }
}

/** The object is in use (open by a VM, has clones/watchers, locked); retrying later may succeed. */
export class BusyError extends ImageBackendError {
  constructor(message: string, options?: ImageBackendErrorOptions) {
    super('BUSY', message, options);
  }
}

/** Not enough space for the requested size. */
export class InsufficientCapacityError extends ImageBackendError {
  /** Bytes requested. */
  readonly requestedBytes: number | undefined;
  /** Bytes available when the request was refused. */
  readonly availableBytes: number | undefined;

  constructor(
    message: string,
    options: ImageBackendErrorOptions & { requestedBytes?: number; availableBytes?: number } = {},
  ) {
    super('INSUFFICIENT_CAPACITY', message, options);
    this.requestedBytes = options.requestedBytes;
    this.availableBytes = options.availableBytes;
  }
}

/**
 * The image is refused for safety: checksum/hash mismatch, a qcow2 with a backing file or an
 * external data file, a format that does not match the declared `diskFormat`, a virtual size that
 * lies...
 */
export class UnsafeImageError extends ImageBackendError {
  /** Short reason keyword, e.g. `checksum-mismatch`, `backing-file`, `format-mismatch`. */
  readonly reason: string;

  constructor(reason: string, message: string, options?: ImageBackendErrorOptions) {
    super('UNSAFE_IMAGE', message, options);
    this.reason = reason;
  }
}

/** Reading the source image failed (the stream errored or ended early). */
export class ImageSourceError extends ImageBackendError {
  constructor(message: string, options?: ImageBackendErrorOptions) {
    super('IMAGE_SOURCE', message, options);
  }
}

/**
 * The backend does not have the capability this operation needs. `capability` names it, so a
 * caller can check `backend.capabilities[capability]` up front next time.
 */
export class UnsupportedOperationError extends ImageBackendError {
  /** The capability that is missing, e.g. `snapshot` or `encryption`. */
  readonly capability: string;
  /** The operation that was attempted, e.g. `createSnapshot`. */
  readonly operation: string;

  constructor(capability: string, operation: string, options?: ImageBackendErrorOptions) {
    const who = options?.backend ? `backend '${options.backend}'` : 'this backend';
    super('UNSUPPORTED_OPERATION', `${operation}: ${who} does not support '${capability}'`, options);
    this.capability = capability;
    this.operation = operation;
  }
}

/** The storage behind the backend cannot be reached (cluster down, VG missing, disk full of errors). */
export class BackendUnavailableError extends ImageBackendError {
  constructor(message: string, options?: ImageBackendErrorOptions) {
    super('BACKEND_UNAVAILABLE', message, options);
  }
}

/** A malformed argument (disk name, snapshot name, size, format). Nothing was done. */
export class InvalidArgumentError extends ImageBackendError {
  /** The argument that was refused, e.g. `disk.name`. */
  readonly argument: string;

  constructor(argument: string, message: string, options?: ImageBackendErrorOptions) {
    super('INVALID_ARGUMENT', `${argument}: ${message}`, options);
    this.argument = argument;
  }
}

/** The operation was aborted through its `AbortSignal`; partial work was rolled back. */
export class AbortedError extends ImageBackendError {
  constructor(message = 'operation aborted', options?: ImageBackendErrorOptions) {
    super('ABORTED', message, options);
  }
}

/** A plugin was built for a contract version outside the window the registry accepts. */
export class IncompatiblePluginError extends ImageBackendError {
  /** The plugin's name. */
  readonly plugin: string;
  /** The contract version the plugin declares (may be `undefined` if it declared none). */
  readonly pluginApiVersion: unknown;
  /** Oldest accepted contract version. */
  readonly minApiVersion: number;
  /** Newest accepted contract version. */
  readonly maxApiVersion: number;

  constructor(plugin: string, pluginApiVersion: unknown, window: { min: number; max: number }, detail?: string) {
    super(
      'INCOMPATIBLE_PLUGIN',
      `image backend plugin '${plugin}' declares contract apiVersion ${String(pluginApiVersion)}, ` +
        `but this registry accepts versions ${window.min}..${window.max}` +
        (detail ? ` (${detail})` : ''),
      { backend: plugin },
    );
    this.plugin = plugin;
    this.pluginApiVersion = pluginApiVersion;
    this.minApiVersion = window.min;
    this.maxApiVersion = window.max;
  }
}

/** No backend is registered under that name. */
export class UnknownBackendError extends ImageBackendError {
  /** The name asked for. */
  readonly requested: string;
  /** The names that are registered. */
  readonly available: readonly string[];

  constructor(requested: string, available: readonly string[]) {
    super(
      'UNKNOWN_BACKEND',
      `no image backend named '${requested}' (registered: ${available.length ? available.join(', ') : 'none'})`,
      { backend: requested },
    );
    this.requested = requested;
    this.available = available;
  }
}

/** Two plugins registered the same name. */
export class DuplicateBackendError extends ImageBackendError {
  constructor(name: string) {
    super('DUPLICATE_BACKEND', `two image backends are registered as '${name}'`, { backend: name });
  }
}

/**
 * True when `err` is a contract error (optionally with the given code). Checks the package's brand,
 * not `instanceof`, so it also recognises errors from another copy of this package; an Error
 * whose `code` is one of the contract's also counts (plugins built with a copy older than the brand).
 */
export function isImageBackendError(err: unknown, code?: ImageBackendErrorCode): err is ImageBackendError {
  if (typeof err !== 'object' || err === null) return false;
  const c = (err as { code?: unknown }).code;
  const ours = (err as { [BRAND]?: unknown })[BRAND] === true || (err instanceof Error && KNOWN_CODES.has(c as string));
  return ours && (code === undefined || c === code);
}

const KNOWN_CODES: ReadonlySet<string> = new Set<string>(IMAGE_BACKEND_ERROR_CODES);
