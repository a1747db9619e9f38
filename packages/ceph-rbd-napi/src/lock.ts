// RADOS object locks (cls_lock): advisory exclusive locks with a lease, held by (client, cookie).
import { invalidArgument } from './errors.js';

/** Options of {@link IoCtx.lockExclusive}. */
export interface LockOptions {
  /** Identifies this holder together with the client (`client.<id>` of the connection). */
  cookie: string;
  /** Shown by `rados lock info` and {@link IoCtx.listLockers}. Default empty. */
  description?: string;
  /**
   * Lease in ms (rounded to whole ms): the lock expires by itself this long after it was taken or
   * last renewed, so a holder that dies frees it. 0 or absent: never expires (only unlock or
   * breakLock free it).
   */
  durationMs?: number;
  /**
   * `'may'`: take the lock, or renew it (new lease) when this client and cookie hold it already;
   * `'must'`: renew only (ENOENT-like failure when not held). Absent: taking a lock this holder
   * already has fails with ImageExists (EEXIST).
   */
  renew?: 'may' | 'must';
}

/** One holder of an object lock. */
export interface ObjectLocker {
  /** The entity, `client.<global id>`. */
  client: string;
  cookie: string;
  address: string;
}

/** The holders of an object lock (none: nobody holds it, or the object does not exist). */
export interface ObjectLockers {
  exclusive: boolean;
  tag: string;
  lockers: ObjectLocker[];
}

/** @internal librados flag bits. */
export function lockFlags(op: string, oid: string, renew: LockOptions['renew']): number {
  if (renew === undefined) return 0;
  if (renew === 'may') return 1; // LIBRADOS_LOCK_FLAG_MAY_RENEW
  if (renew === 'must') return 2; // LIBRADOS_LOCK_FLAG_MUST_RENEW
  throw invalidArgument(op, oid, "renew must be 'may' or 'must'");
}

/** @internal the lease in whole ms. */
export function checkDuration(op: string, oid: string, ms: unknown): number {
  if (ms === undefined) return 0;
  if (typeof ms !== 'number' || !Number.isSafeInteger(ms) || ms < 0)
    throw invalidArgument(op, oid, 'durationMs must be a non-negative integer');
  return ms;
}

/** @internal the description: a string without NUL (may be empty). */
export function checkDescription(op: string, oid: string, v: unknown): string {
  if (v === undefined) return '';
  if (typeof v !== 'string' || v.includes('\0'))
    throw invalidArgument(op, oid, 'description must be a string without NUL');
  return v;
}
