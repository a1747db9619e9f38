import { ErrorCode, ErrorDomain } from './codes.js';
import { ErrorLevel, LibvirtError } from './errors.js';
import { loadAddon, type NativeBinding } from './native.js';

let cached: NativeBinding | undefined;

/** The loaded addon (loaded on first use, so importing the package never fails). */
export function binding(): NativeBinding {
  if (cached === undefined) {
    const b = loadAddon();
    b.init((info) => new LibvirtError(info));
    cached = b;
  }
  return cached;
}

/** The error every call on a closed connection rejects with (`VIR_ERR_INVALID_CONN`). */
export function closedError(): LibvirtError {
  return new LibvirtError({
    code: ErrorCode.VIR_ERR_INVALID_CONN,
    domain: ErrorDomain.VIR_FROM_NONE,
    level: ErrorLevel.VIR_ERR_ERROR,
    message: 'connection is closed',
  });
}
