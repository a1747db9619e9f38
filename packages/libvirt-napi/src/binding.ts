import { LibvirtError } from './errors.js';
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
