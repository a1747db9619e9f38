/**
 * Every reason a spec can be refused: `INVALID_VALUE` (a value is malformed or contains characters
 * that are never allowed, control characters...), `INVALID_COMBINATION` (values that are fine alone
 * but not together: io=native with cache=writeback, auth on a file disk...), `MISSING_VALUE` (a
 * required value is missing).
 */
export const LIBVIRT_XML_ERROR_CODES = ['INVALID_VALUE', 'INVALID_COMBINATION', 'MISSING_VALUE'] as const;

/** Marks this package's errors; `Symbol.for` makes it the same symbol in every copy of the package. */
const BRAND: unique symbol = Symbol.for('@ephemera/libvirt-xml:error');

/** Why a spec was refused (see {@link LIBVIRT_XML_ERROR_CODES}). */
export type LibvirtXmlErrorCode = (typeof LIBVIRT_XML_ERROR_CODES)[number];

/**
 * Raised by every builder for a spec it will not turn into XML. Nothing is ever emitted for a
 * refused spec, so hostile strings can't reach libvirt.
 */
export class LibvirtXmlError extends Error {
  readonly code: LibvirtXmlErrorCode;
  /** Path of the offending field, e.g. `disks[1].source.hosts[0].port`. */
  readonly field: string;

  constructor(code: LibvirtXmlErrorCode, field: string, message: string) {
    super(`${field}: ${message}`);
    this.name = 'LibvirtXmlError';
    Object.defineProperty(this, BRAND, { value: true });
    this.code = code;
    this.field = field;
  }
}

/**
 * True when `err` is a {@link LibvirtXmlError} (optionally with the given code), also one made by
 * another copy of `@ephemera/libvirt-xml` (it checks the package's brand, not `instanceof`).
 */
export function isLibvirtXmlError(err: unknown, code?: LibvirtXmlErrorCode): err is LibvirtXmlError {
  if (typeof err !== 'object' || err === null || (err as { [BRAND]?: unknown })[BRAND] !== true) return false;
  return code === undefined || (err as LibvirtXmlError).code === code;
}
