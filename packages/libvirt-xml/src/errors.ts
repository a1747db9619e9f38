/**
 * Every reason a spec can be refused: `INVALID_VALUE` (a value is malformed or contains characters
 * that are never allowed, control characters...), `INVALID_COMBINATION` (values that are fine alone
 * but not together: io=native with cache=writeback, auth on a file disk...), `MISSING_VALUE` (a
 * required value is missing).
 */
export const LIBVIRT_XML_ERROR_CODES = ['INVALID_VALUE', 'INVALID_COMBINATION', 'MISSING_VALUE'] as const;

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
    this.code = code;
    this.field = field;
  }
}
