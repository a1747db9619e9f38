// Process-wide settings of the binding and the versions of the native libraries.
import { invalidArgument } from './errors.js';
import { native } from './native.js';

/**
 * Sets the number of native threads that run blocking librados/librbd calls (default 8, or
 * `EPHEMERA_RBD_THREADS`). They are separate from libuv's pool used by `fs` and `dns`.
 * Binding only (no librbd call).
 */
export function setWorkerThreads(threads: number): void {
  if (!Number.isInteger(threads) || threads < 1 || threads > 1024) {
    throw invalidArgument('setWorkerThreads', '', 'threads must be an integer in 1..1024');
  }
  native().setWorkerThreads(threads);
}

/** The current number of native worker threads. Binding only (no librbd call). */
export function workerThreads(): number {
  return native().workerThreads();
}

/**
 * Versions of the librbd and librados the addon runs against. Throws NativeLoadError if absent.
 * Implements rbd_version() and rados_version().
 */
export function libraryVersions(): { librbd: string; librados: string } {
  return native().version();
}
