/** Typed errors of the driver. Every error has a stable `code` (and the CLI an exit code per code). */

/** Marks this package's errors; `Symbol.for` makes it the same symbol in every copy of the package. */
const BRAND: unique symbol = Symbol.for('@ephemera/driver:error');

/** Every stable error code of {@link DriverError} (the CLI maps each one to an exit code). */
export const DRIVER_ERROR_CODES = [
  'INVALID_CONFIG',
  'INVALID_ARGUMENT',
  'INSTANCE_NOT_FOUND',
  'INSTANCE_EXISTS',
  'INSTANCE_STATE',
  'IMAGE_NOT_FOUND',
  'IMAGE_UNUSABLE',
  'SPAWN_FAILED',
  'TIMEOUT',
  'UNSUPPORTED',
  'JOURNAL',
  'ROLLBACK_FAILED',
  /** The caller's `AbortSignal` stopped the operation; what it had made was rolled back. */
  'ABORTED',
  /** libvirt failed a live migration; the instance still runs on the source. */
  'MIGRATION_FAILED',
  /** An operation for dead hosts (evacuation) found the host alive: its libvirtd answers. Nothing changed. */
  'HOST_ALIVE',
  /** An encrypted instance's key is missing, or QEMU refused it (wrong passphrase). */
  'ENCRYPTION_KEY',
] as const;

/** Stable error codes of {@link DriverError}. */
export type DriverErrorCode = (typeof DRIVER_ERROR_CODES)[number];

/** The base error of `@ephemera/driver`. */
export class DriverError extends Error {
  readonly code: DriverErrorCode;
  /** Instance the error is about, when there is one. */
  readonly instance?: string;

  constructor(code: DriverErrorCode, message: string, options: { instance?: string; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'DriverError';
    Object.defineProperty(this, BRAND, { value: true });
    this.code = code;
    if (options.instance !== undefined) this.instance = options.instance;
  }
}

/** A configuration value is missing, malformed or out of range (`key` names it, e.g. `images.rbd.pool`). */
export class ConfigError extends DriverError {
  readonly key: string;
  constructor(key: string, message: string) {
    super('INVALID_CONFIG', `config ${key}: ${message}`);
    this.name = 'ConfigError';
    this.key = key;
  }
}

/** `isDriverError(err, 'INSTANCE_NOT_FOUND')`: works across package copies (checks the package's brand). */
export function isDriverError(err: unknown, code?: DriverErrorCode): err is DriverError {
  if (typeof err !== 'object' || err === null || (err as { [BRAND]?: unknown })[BRAND] !== true) return false;
  return code === undefined || (err as DriverError).code === code;
}
