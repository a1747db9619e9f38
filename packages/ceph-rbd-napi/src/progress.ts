// Progress reporting of long librbd operations (flatten, remove, resize, rollback, trash remove).
import { invalidArgument } from './errors.js';
import type { NativeProgress } from './native.js';

/** Progress of a long operation: monotonic, the last call has `done === total` (fraction 1). */
export interface Progress {
  done: number;
  total: number;
  /** done / total, in [0, 1]. */
  fraction: number;
}

/** Receives progress; exceptions thrown by it are reported as a process warning and ignored. */
export type ProgressCallback = (progress: Progress) => void;

/** @internal */
export function progressAdapter(cb: ProgressCallback | undefined, operation: string): NativeProgress | undefined {
  if (cb === undefined) return undefined;
  if (typeof cb !== 'function') throw invalidArgument(operation, '', 'onProgress must be a function');
  return (done, total) => {
    try {
      cb({ done, total, fraction: total > 0 ? Math.min(1, done / total) : 1 });
    } catch (err) {
      process.emitWarning(`onProgress callback of ${operation} threw: ${String(err)}`, 'RbdProgressWarning');
    }
  };
}
