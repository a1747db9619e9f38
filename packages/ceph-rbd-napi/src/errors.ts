import { constants as osConstants } from 'node:os';

/** Linux errnos librados/librbd report that Node's os.constants.errno lacks. */
const linuxExtras: Record<string, number> = {
  ESHUTDOWN: 108, // also Ceph's EBLOCKLISTED
  EHOSTDOWN: 112,
  EREMOTEIO: 121,
  ENOMEDIUM: 123,
  EKEYEXPIRED: 127,
  EKEYREJECTED: 129,
};

/** Symbolic name -> Linux errno. */
export const errnoNumbers: Readonly<Record<string, number>> = { ...linuxExtras, ...osConstants.errno };

const errnoNames: Record<number, string> = {};
for (const [name, num] of Object.entries(errnoNumbers)) {
  // Prefer the first (canonical) name for aliases such as EWOULDBLOCK/EAGAIN.
  if (!(num in errnoNames)) errnoNames[num] = name;
}

/**
 * The `code` of an {@link RbdError}: the symbolic errno (`'ENOENT'`, `'EBUSY'`...), `'E<n>'` for an
 * errno without a name. Open-ended because librados can report any errno.
 */
export type RbdErrorCode = `E${string}`;

/** Marks this package's errors; `Symbol.for` makes it the same symbol in every copy of the package. */
const BRAND: unique symbol = Symbol.for('@ephemera/ceph-rbd-napi:error');

/** The symbolic name (`'ENOENT'`) of a positive Linux errno, or `'E<n>'` when unknown. */
export function errnoCode(errno: number): RbdErrorCode {
  return (errnoNames[Math.abs(errno)] as RbdErrorCode | undefined) ?? `E${Math.abs(errno)}`;
}

/**
 * An error reported by librados/librbd (or by this binding), with the positive `errno`, its
 * symbolic `code` (`'ENOENT'`...), the `operation` that failed (`'ioctx.clone'`...) and its
 * `target` (`pool/image@snap`, never a secret). Subclasses follow Ceph's own Python binding
 * (rbd.pyx) errno table; `instanceof RbdError` catches them all.
 */
export class RbdError extends Error {
  /** Positive errno, e.g. 2 for ENOENT. */
  readonly errno: number;
  /** Symbolic errno, e.g. `'ENOENT'`. */
  readonly code: RbdErrorCode;
  /** The operation that failed, e.g. `'ioctx.open'`. */
  readonly operation: string;
  /** What it was applied to (`pool[/namespace]/image[@snap]`, a pool, or a client name). */
  readonly target: string;

  constructor(errno: number, operation: string, target: string, detail?: string) {
    const code = errnoCode(errno);
    super(`${operation}${target ? ` ${target}` : ''}: ${detail ?? code} (${code})`);
    this.name = new.target.name;
    Object.defineProperty(this, BRAND, { value: true });
    this.errno = Math.abs(errno);
    this.code = code;
    this.operation = operation;
    this.target = target;
  }
}

/** ENOENT outside image operations: a pool, a ceph.conf or keyring does not exist (rados.pyx ObjectNotFound). */
export class ObjectNotFound extends RbdError {}
/** ENOENT: the image, snapshot or trash entry does not exist. */
export class ImageNotFound extends ObjectNotFound {}
/** EEXIST: an image (or snapshot) with that name already exists. */
export class ImageExists extends RbdError {}
/** EBUSY: the image is in use (watchers, protected snapshot with children, open elsewhere). */
export class ImageBusy extends RbdError {}
/** ENOTEMPTY: the image still has snapshots (or a snapshot still has children). */
export class ImageHasSnapshots extends RbdError {}
/** EPERM/EACCES: cephx capabilities forbid the operation. */
export class PermissionDenied extends RbdError {}
/** EINVAL: librbd rejected an argument (size, feature combination, unprotected parent...). */
export class InvalidArgument extends RbdError {}
/** ENOSPC: the cluster or pool is full. */
export class NoSpace extends RbdError {}
/** EDQUOT: a pool quota is exceeded. */
export class DiskQuotaExceeded extends RbdError {}
/** ETIMEDOUT: the cluster did not answer within the configured timeout. */
export class Timeout extends RbdError {}
/** EROFS: the image (or snapshot) is opened read-only. */
export class ReadOnlyImage extends RbdError {}
/** ESHUTDOWN: the cluster connection was shut down (e.g. the parent handle was closed). */
export class ConnectionShutdown extends RbdError {}
/** EIO: an I/O error in the cluster. */
export class IoError extends RbdError {}
/** ENOSYS: not supported by this librbd/cluster. */
export class FunctionNotSupported extends RbdError {}
/** EOPNOTSUPP: the operation is not supported for this image (e.g. feature missing). */
export class OperationNotSupported extends RbdError {}
/** EDOM: an argument is out of range. */
export class ArgumentOutOfRange extends RbdError {}
/** ECANCELED: the operation was canceled. */
export class OperationCanceled extends RbdError {}
/** EBADF: the handle (Cluster, IoCtx or Image) was closed; nothing was sent to the cluster. */
export class HandleClosed extends RbdError {}

type RbdErrorClass = new (errno: number, operation: string, target: string, detail?: string) => RbdError;

/** errno (positive) -> subclass, after rbd.pyx's errno_to_exception. */
export const errnoClasses: ReadonlyMap<number, RbdErrorClass> = new Map<number, RbdErrorClass>(
  (
    [
      ['ENOENT', ImageNotFound],
      ['EEXIST', ImageExists],
      ['EBUSY', ImageBusy],
      ['ENOTEMPTY', ImageHasSnapshots],
      ['EPERM', PermissionDenied],
      ['EACCES', PermissionDenied],
      ['EINVAL', InvalidArgument],
      ['ENOSPC', NoSpace],
      ['EDQUOT', DiskQuotaExceeded],
      ['ETIMEDOUT', Timeout],
      ['EROFS', ReadOnlyImage],
      ['ESHUTDOWN', ConnectionShutdown],
      ['EIO', IoError],
      ['ENOSYS', FunctionNotSupported],
      ['EOPNOTSUPP', OperationNotSupported],
      ['EDOM', ArgumentOutOfRange],
      ['ECANCELED', OperationCanceled],
    ] as const
  )
    .filter(([name]) => errnoNumbers[name] !== undefined)
    .map(([name, cls]) => [errnoNumbers[name]!, cls as RbdErrorClass]),
);

/** Operations whose ENOENT is about a pool or a config file, not an image. */
const clusterOperations = new Set(['connect', 'cluster.openIoCtx', 'cluster.poolStats']);

/** Builds the typed error for an errno (positive or negative) reported by `operation` on `target`. */
export function rbdErrorFromErrno(errno: number, operation: string, target: string, detail?: string): RbdError {
  if (Math.abs(errno) === errnoNumbers.ENOENT && clusterOperations.has(operation)) {
    return new ObjectNotFound(errno, operation, target, detail);
  }
  const cls = errnoClasses.get(Math.abs(errno)) ?? RbdError;
  return new cls(errno, operation, target, detail);
}

/** The error for use of a closed handle. */
export function handleClosed(operation: string, target: string): HandleClosed {
  return new HandleClosed(errnoNumbers.EBADF!, operation, target, 'handle is closed');
}

/** Factory the native addon calls for every failure (kind `'errno'` or `'closed'`). */
export function nativeErrorFactory(
  kind: string,
  errno: number,
  operation: string,
  target: string,
  detail: string,
): Error {
  if (kind === 'closed') return handleClosed(operation, target);
  return rbdErrorFromErrno(errno, operation, target, detail);
}

/** An argument failed validation in this binding before anything was sent to the cluster. */
export function invalidArgument(operation: string, target: string, why: string): InvalidArgument {
  return new InvalidArgument(errnoNumbers.EINVAL!, operation, target, why);
}

/**
 * True when `err` is an RbdError, optionally with the given code (e.g. `'ENOENT'`), also one made
 * by another copy of `@ephemera/ceph-rbd-napi` (it checks the package's brand, not `instanceof`).
 */
export function isRbdError(err: unknown, code?: RbdErrorCode): err is RbdError {
  if (typeof err !== 'object' || err === null || (err as { [BRAND]?: unknown })[BRAND] !== true) return false;
  return code === undefined || (err as RbdError).code === code;
}
