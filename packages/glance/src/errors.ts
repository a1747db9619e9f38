/**
 * Typed errors of `@ephemera/glance`. Every error carries a stable `code`; errors about an image
 * carry its `imageId`, errors from an HTTP answer carry the `status`. Messages never contain tokens.
 */
import type { RbdLocationProblem } from '@ephemera/image-backend';

/** Marks this package's errors; `Symbol.for` makes it the same symbol in every copy of the package. */
const BRAND: unique symbol = Symbol.for('@ephemera/glance:error');

/** Every stable code a {@link GlanceError} can carry (the CLI maps each one to an exit code). */
export const GLANCE_ERROR_CODES = [
  'GLANCE_HTTP',
  'GLANCE_BAD_ANSWER',
  'GLANCE_NOT_FOUND',
  'GLANCE_CONFLICT',
  'GLANCE_AUTH',
  'GLANCE_CONNECTION',
  'GLANCE_TIMEOUT',
  'GLANCE_ABORTED',
  'GLANCE_BAD_IMAGE_ID',
  'GLANCE_CHECKSUM_MISMATCH',
  'GLANCE_SIZE_MISMATCH',
  'GLANCE_IMPORT_FAILED',
  'GLANCE_IMPORT_TIMEOUT',
  'GLANCE_IMAGE_STATE',
  'GLANCE_BAD_LOCATION',
  'GLANCE_NO_PLAN',
] as const;

/** A stable code of {@link GlanceError}. */
export type GlanceErrorCode = (typeof GLANCE_ERROR_CODES)[number];

/** Common base: `code` is stable and machine readable. */
export class GlanceError extends Error {
  /** Stable machine-readable code, e.g. `GLANCE_NOT_FOUND`. */
  readonly code: GlanceErrorCode;
  /** The image the failed operation was about, when there was one. */
  readonly imageId?: string;
  /** HTTP status of Glance's answer, when there was an answer. */
  readonly status?: number;

  constructor(
    code: GlanceErrorCode,
    message: string,
    opts: { imageId?: string; status?: number; cause?: unknown } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = new.target.name;
    Object.defineProperty(this, BRAND, { value: true });
    this.code = code;
    if (opts.imageId !== undefined) this.imageId = opts.imageId;
    if (opts.status !== undefined) this.status = opts.status;
  }
}

/** Glance answered with a non-success HTTP status (after retries, for 5xx). */
export class GlanceHttpError extends GlanceError {
  /** HTTP method of the failed request. */
  readonly method: string;
  /** Request path (no host, no credentials), e.g. `/v2/images/ID`. */
  readonly path: string;
  /** The first 500 characters of Glance's answer body. */
  readonly body: string;

  constructor(
    status: number,
    method: string,
    path: string,
    body: string,
    opts: { imageId?: string; code?: GlanceErrorCode } = {},
  ) {
    const excerpt = body.replace(/\s+/g, ' ').trim().slice(0, 500);
    super(opts.code ?? 'GLANCE_HTTP', `Glance ${method} ${path} answered ${status}${excerpt ? `: ${excerpt}` : ''}`, {
      status,
      ...(opts.imageId !== undefined ? { imageId: opts.imageId } : {}),
    });
    this.method = method;
    this.path = path;
    this.body = excerpt;
  }
}

/** 404: the image (or the endpoint) does not exist. */
export class GlanceNotFoundError extends GlanceHttpError {
  constructor(method: string, path: string, body: string, imageId?: string) {
    super(404, method, path, body, { code: 'GLANCE_NOT_FOUND', ...(imageId !== undefined ? { imageId } : {}) });
  }
}

/** 409: the request conflicts with the image's state (e.g. upload to an active image). */
export class GlanceConflictError extends GlanceHttpError {
  constructor(method: string, path: string, body: string, imageId?: string) {
    super(409, method, path, body, { code: 'GLANCE_CONFLICT', ...(imageId !== undefined ? { imageId } : {}) });
  }
}

/** 401/403: the token was refused or the policy forbids the operation. */
export class GlanceAuthError extends GlanceHttpError {
  constructor(status: number, method: string, path: string, body: string, imageId?: string) {
    super(status, method, path, body, { code: 'GLANCE_AUTH', ...(imageId !== undefined ? { imageId } : {}) });
  }
}

/** The connection failed or broke (refused, reset, closed mid-body, DNS failure). */
export class GlanceConnectionError extends GlanceError {
  constructor(message: string, opts: { imageId?: string; cause?: unknown } = {}) {
    super('GLANCE_CONNECTION', message, opts);
  }
}

/** A request (or a stalled download) exceeded its timeout. */
export class GlanceTimeoutError extends GlanceError {
  /** The timeout that expired, in milliseconds. */
  readonly timeoutMs: number;
  constructor(message: string, timeoutMs: number, opts: { imageId?: string; cause?: unknown } = {}) {
    super('GLANCE_TIMEOUT', message, opts);
    this.timeoutMs = timeoutMs;
  }
}

/** The caller's AbortSignal fired. */
export class GlanceAbortedError extends GlanceError {
  constructor(message: string, opts: { imageId?: string; cause?: unknown } = {}) {
    super('GLANCE_ABORTED', message, opts);
  }
}

/** The downloaded bytes do not hash to the value Glance recorded. Raised at the end of the stream. */
export class ChecksumMismatchError extends GlanceError {
  /** Hash algorithm used (`sha512`, `md5`, ...). */
  readonly algorithm: string;
  readonly expected: string;
  readonly actual: string;
  /** Bytes received. */
  readonly bytes: number;
  constructor(imageId: string, algorithm: string, expected: string, actual: string, bytes: number) {
    super(
      'GLANCE_CHECKSUM_MISMATCH',
      `image ${imageId}: ${algorithm} of the ${bytes} downloaded bytes is ${actual}, Glance recorded ${expected}`,
      { imageId },
    );
    this.algorithm = algorithm;
    this.expected = expected;
    this.actual = actual;
    this.bytes = bytes;
  }
}

/** The download ended with fewer or more bytes than the image's recorded size. */
export class SizeMismatchError extends GlanceError {
  readonly expected: number;
  readonly actual: number;
  constructor(imageId: string, expected: number, actual: number) {
    super('GLANCE_SIZE_MISMATCH', `image ${imageId}: received ${actual} bytes, Glance recorded ${expected}`, {
      imageId,
    });
    this.expected = expected;
    this.actual = actual;
  }
}

/** A copy-image import reported failure for some stores (`os_glance_failed_import`). */
export class ImageImportError extends GlanceError {
  /** Stores Glance listed as failed. */
  readonly failedStores: string[];
  constructor(imageId: string, failedStores: string[], message?: string) {
    super(
      'GLANCE_IMPORT_FAILED',
      message ?? `image ${imageId}: import failed for store(s) ${failedStores.join(', ')}`,
      {
        imageId,
      },
    );
    this.failedStores = failedStores;
  }
}

/** A copy-image import did not finish within its timeout. */
export class ImageImportTimeoutError extends GlanceError {
  /** Stores still listed in `os_glance_importing_to_stores` at the deadline. */
  readonly pendingStores: string[];
  readonly timeoutMs: number;
  constructor(imageId: string, pendingStores: string[], timeoutMs: number) {
    super(
      'GLANCE_IMPORT_TIMEOUT',
      `image ${imageId}: import to ${pendingStores.join(', ')} not finished after ${timeoutMs} ms`,
      { imageId },
    );
    this.pendingStores = pendingStores;
    this.timeoutMs = timeoutMs;
  }
}

/** The image is not in a state that allows the operation (e.g. download of a queued image). */
export class ImageStateError extends GlanceError {
  readonly imageStatus: string;
  constructor(imageId: string, imageStatus: string, wanted: string) {
    super('GLANCE_IMAGE_STATE', `image ${imageId} is ${imageStatus}; ${wanted}`, { imageId });
    this.imageStatus = imageStatus;
  }
}

/** What is wrong with a location URL (the rbd problems are `@ephemera/image-backend`'s). */
export type LocationProblem = RbdLocationProblem | 'double-encoding' | 'bad-host' | 'not-absolute' | 'credentials';

/** A location URL failed strict parsing. `problem` names what is wrong; `part` which piece. */
export class LocationParseError extends GlanceError {
  readonly problem: LocationProblem;
  /** Which part was wrong (`fsid`, `pool`, `image`, `snapshot`, `path`, `host`...), when known. */
  readonly part?: string;
  /** The URL, with control characters escaped and any credentials redacted. */
  readonly url: string;
  constructor(url: string, problem: LocationProblem, detail: string, part?: string) {
    const shown = displayUrl(url);
    super('GLANCE_BAD_LOCATION', `bad location ${shown}: ${problem}${part ? ` in ${part}` : ''}: ${detail}`);
    this.problem = problem;
    if (part !== undefined) this.part = part;
    this.url = shown;
  }
}

/** No handler could serve the image for this target (not even the Glance download). */
export class NoUsablePlanError extends GlanceError {
  /** Every option considered and why it was declined. */
  readonly declined: { handler: string; location: string; reason: string }[];
  constructor(imageId: string, declined: { handler: string; location: string; reason: string }[]) {
    super(
      'GLANCE_NO_PLAN',
      `image ${imageId}: no usable location: ${declined.map((d) => `${d.handler} ${d.location}: ${d.reason}`).join('; ')}`,
      { imageId },
    );
    this.declined = declined;
  }
}

/**
 * True when `err` is an error of this package (optionally with the given code), also one made by
 * another copy of `@ephemera/glance` (it checks the package's brand, not `instanceof`).
 */
export function isGlanceError(err: unknown, code?: GlanceErrorCode): err is GlanceError {
  if (typeof err !== 'object' || err === null || (err as { [BRAND]?: unknown })[BRAND] !== true) return false;
  return code === undefined || (err as GlanceError).code === code;
}

/**
 * A URL as safe to show: control characters escaped (\xNN), userinfo replaced by `***`, at most
 * 300 characters.
 */
export function displayUrl(url: string): string {
  let s = String(url).replace(/^([a-zA-Z][a-zA-Z0-9+.-]*:\/\/)[^/?#@]*@/, '$1***@');
  s = s.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
  return s.length > 300 ? `${s.slice(0, 300)}...` : s;
}
