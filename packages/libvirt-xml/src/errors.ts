/** Why a spec was refused. */
export type LibvirtXmlErrorCode =
  /** A value is malformed or contains characters that are never allowed (control characters...). */
  | 'INVALID_VALUE'
  /** Values that are fine alone but not together (io=native with cache=writeback, auth on a file disk...). */
  | 'INVALID_COMBINATION'
  /** A required value is missing. */
  | 'MISSING_VALUE';

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
