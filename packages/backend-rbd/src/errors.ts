import {
  AbortedError,
  AlreadyExistsError,
  BackendUnavailableError,
  BusyError,
  InsufficientCapacityError,
  InvalidArgumentError,
  NotFoundError,
  isImageBackendError,
} from '@ephemera/image-backend';
import { isRbdError } from '@ephemera/ceph-rbd-napi';

/** The backend's name in every error it raises. */
export const NAME = 'rbd';

/** Where a binding error happened. */
export interface TranslateContext {
  /** cephx id without `client.` (named when permission is denied). */
  clientId: string;
  id?: string | undefined;
  signal?: AbortSignal | undefined;
  /** 'create': ImageNotFound means the pool vanished, not the disk. */
  phase?: 'create' | undefined;
}

/**
 * Maps binding errors onto the contract's: contract errors pass through, anything after an abort
 * is `AbortedError`, non-binding errors stay as they are.
 */
export function translateRbdError(e: unknown, c: TranslateContext): unknown {
  const { id } = c;
  const ctx = { backend: NAME, ...(id ? { diskId: id } : {}), cause: e };
  if (isImageBackendError(e)) return e;
  if (c.signal?.aborted) return new AbortedError('operation aborted', ctx);
  // By code, not instanceof: the error may come from another copy of the binding. ENOENT is the
  // image's unless the binding said ObjectNotFound (a pool or config file, rados.pyx's name).
  if (!isRbdError(e)) return e;
  const code = e.code;
  if (code === 'EEXIST') return new AlreadyExistsError(`${id ?? 'image'} already exists`, ctx);
  if (code === 'ENOENT' && e.name !== 'ObjectNotFound')
    return c.phase === 'create'
      ? new BackendUnavailableError(e.message, ctx)
      : new NotFoundError(`${id ?? 'image'} does not exist (${e.message})`, ctx);
  if (code === 'EBUSY') return new BusyError(`${id ?? 'image'} is busy: ${e.message}`, ctx);
  if (code === 'ENOSPC' || code === 'EDQUOT')
    return new InsufficientCapacityError(`${id ?? 'pool'}: ${e.message}`, ctx);
  if (code === 'EINVAL') return new InvalidArgumentError('request', e.message, ctx);
  if (code === 'EPERM' || code === 'EACCES')
    return new BackendUnavailableError(`permission denied for client.${c.clientId}: ${e.message}`, ctx);
  return new BackendUnavailableError(e.message, ctx);
}

/** The disk does not exist. */
export function diskNotFound(pool: string, id: string): NotFoundError {
  return new NotFoundError(`disk ${id} does not exist in pool ${pool}`, { backend: NAME, diskId: id });
}
