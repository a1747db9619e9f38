// The LVM layer's failures as the contract's typed errors.
import {
  AbortedError,
  AlreadyExistsError,
  BackendUnavailableError,
  InsufficientCapacityError,
  NotFoundError,
  UnsafeImageError,
  isImageBackendError,
} from '@ephemera/image-backend';
import { LvmError } from './lvm.js';

/** Maps an error of an LVM call on disk `id` (in volume group `vg`) to a contract error. */
export function translateError(
  e: unknown,
  id: string | undefined,
  signal: AbortSignal | undefined,
  vg: string,
  NAME: string,
): Error {
  const ctx = { backend: NAME, ...(id ? { diskId: id } : {}), cause: e };
  if (isImageBackendError(e)) return e as Error;
  if (signal?.aborted) return new AbortedError(`${id ?? 'operation'} aborted`, ctx);
  if (e instanceof LvmError) {
    switch (e.kind) {
      case 'lv-exists':
        return new AlreadyExistsError(`disk ${id} exists in ${vg}`, ctx);
      case 'lv-not-found':
        return new NotFoundError(`disk ${id} not found in ${vg}`, ctx);
      case 'insufficient-space':
      case 'insufficient-contiguous-space':
        return new InsufficientCapacityError(`${id}: ${e.stderr || e.message}`, ctx);
      case 'vg-not-found':
        return new BackendUnavailableError(`volume group ${vg} not found`, ctx);
      default:
        return new BackendUnavailableError(e.message, ctx);
    }
  }
  if (e instanceof RangeError) return new UnsafeImageError('size-mismatch', `${id}: ${e.message}`, ctx);
  // A full file system (e.g. the qcow2 spool in tempDir) is a capacity problem, not a crash.
  const errno = (e as NodeJS.ErrnoException | undefined)?.code;
  if (errno === 'ENOSPC' || errno === 'EDQUOT')
    return new InsufficientCapacityError(
      `${id ?? 'operation'}: no space left (${errno}): ${(e as Error).message}`,
      ctx,
    );
  return e instanceof Error ? e : new Error(String(e));
}
