import { ErrorCode, ErrorDomain, type ErrorCodeName, type ErrorDomainName } from './codes.js';
import type { RawErrorInfo } from './native.js';

/** libvirt error levels (`virErrorLevel`). */
export const ErrorLevel = {
  VIR_ERR_NONE: 0,
  VIR_ERR_WARNING: 1,
  VIR_ERR_ERROR: 2,
} as const;

const codeNames = new Map<number, ErrorCodeName>(
  Object.entries(ErrorCode).map(([name, value]) => [value, name as ErrorCodeName]),
);
const domainNames = new Map<number, ErrorDomainName>(
  Object.entries(ErrorDomain).map(([name, value]) => [value, name as ErrorDomainName]),
);

/** Marks this package's errors; `Symbol.for` makes it the same symbol in every copy of the package. */
const BRAND: unique symbol = Symbol.for('@ephemera/libvirt-napi:error');

/**
 * An error reported by libvirt, captured on the thread that made the failing call.
 * `code` is libvirt's `virErrorNumber` (compare with `ErrorCode.VIR_ERR_NO_DOMAIN`, or use
 * `codeName`), `domain` the subsystem that raised it (`ErrorDomain`), `level` 1 (warning) or
 * 2 (error), `message` libvirt's own message.
 */
export class LibvirtError extends Error {
  override readonly name = 'LibvirtError';
  /** libvirt error number (`virErrorNumber`). */
  readonly code: number;
  /** Name of `code`, e.g. `'VIR_ERR_NO_DOMAIN'` (`'VIR_ERR_UNKNOWN_<n>'` for codes newer than this binding). */
  readonly codeName: ErrorCodeName | `VIR_ERR_UNKNOWN_${number}`;
  /** libvirt error domain (`virErrorDomain`). */
  readonly domain: number;
  /** Name of `domain`, e.g. `'VIR_FROM_QEMU'`. */
  readonly domainName: ErrorDomainName | `VIR_FROM_UNKNOWN_${number}`;
  /** `ErrorLevel.VIR_ERR_WARNING` (1) or `ErrorLevel.VIR_ERR_ERROR` (2). */
  readonly level: number;

  constructor(info: RawErrorInfo) {
    super(info.message);
    Object.defineProperty(this, BRAND, { value: true });
    this.code = info.code;
    this.codeName = codeNames.get(info.code) ?? `VIR_ERR_UNKNOWN_${info.code}`;
    this.domain = info.domain;
    this.domainName = domainNames.get(info.domain) ?? `VIR_FROM_UNKNOWN_${info.domain}`;
    this.level = info.level;
  }
}

/**
 * True when `err` is a LibvirtError, optionally with the given code (name or number), also one made
 * by another copy of `@ephemera/libvirt-napi` (it checks the package's brand, not `instanceof`).
 */
export function isLibvirtError(err: unknown, code?: ErrorCodeName | number): err is LibvirtError {
  if (typeof err !== 'object' || err === null || (err as { [BRAND]?: unknown })[BRAND] !== true) return false;
  if (code === undefined) return true;
  const e = err as LibvirtError;
  return typeof code === 'number' ? e.code === code : e.code === ErrorCode[code];
}
