import {
  AbortedError,
  BackendUnavailableError,
  BusyError,
  InsufficientCapacityError,
  InvalidArgumentError,
  UnsafeImageError,
  isImageBackendError,
} from '@ephemera/image-backend';
import { isQemuImgError } from '@ephemera/qemu-img-wrapper';
import { errno } from './fsutil.js';

/** Context of an error translation. */
export interface ErrorContext {
  backend: string;
  diskId?: string | undefined;
  signal?: AbortSignal | undefined;
  /** What was being done, for the message (`image <id>`, the disk id...). */
  what?: string | undefined;
}

const LOCKED_RE = /Failed to get ".*" lock|Is another process using the image/i;

/**
 * Turns anything the layers below throw (errno errors, qemu-img failures, the inspector's
 * verdicts) into the contract's typed errors. Contract errors pass through unchanged.
 */
export function toContractError(e: unknown, ctx: ErrorContext): Error {
  if (isImageBackendError(e)) return e;
  const opts = { backend: ctx.backend, ...(ctx.diskId ? { diskId: ctx.diskId } : {}), cause: e };
  const what = ctx.what ?? ctx.diskId ?? 'operation';
  if (ctx.signal?.aborted) return new AbortedError(`${what} aborted`, opts);
  if (isQemuImgError(e, 'QEMU_IMG_UNSAFE_IMAGE')) return new UnsafeImageError(e.reason, `${what}: ${e.message}`, opts);
  if (isQemuImgError(e, 'QEMU_IMG_BAD_IMAGE')) {
    if (e.reason === 'unknown-format')
      return new InvalidArgumentError('image.diskFormat', `${what}: ${e.message}`, opts);
    return new UnsafeImageError(`invalid-image-${e.reason}`, `${what}: ${e.message}`, opts);
  }
  if (isQemuImgError(e) && 'kind' in e) {
    if (e.kind === 'aborted') return new AbortedError(`${what} aborted`, opts);
    if (e.kind === 'invalid-argument') return new InvalidArgumentError('qemu-img', `${what}: ${e.message}`, opts);
    if (LOCKED_RE.test(e.stderr)) return new BusyError(`${what} is in use: ${e.stderr}`, opts);
    if (/No space left on device/i.test(e.stderr)) return new InsufficientCapacityError(`${what}: ${e.stderr}`, opts);
    return new BackendUnavailableError(`${what}: ${e.message}`, opts);
  }
  const code = errno(e);
  if (code === 'ENOSPC' || code === 'EDQUOT')
    return new InsufficientCapacityError(`${what}: no space left (${code})`, opts);
  if (code === 'EBUSY') return new BusyError(`${what}: ${(e as Error).message}`, opts);
  if (code !== undefined) return new BackendUnavailableError(`${what}: ${(e as Error).message}`, opts);
  return e instanceof Error ? e : new Error(String(e));
}
