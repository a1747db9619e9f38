// Argument checks shared by the handles: all run before anything is sent to the cluster.
import { invalidArgument } from './errors.js';

/** @internal */
export function checkName(operation: string, what: string, v: unknown): string {
  if (typeof v !== 'string' || v.length === 0)
    throw invalidArgument(operation, '', `${what} must be a non-empty string`);
  if (v.includes('\0')) throw invalidArgument(operation, '', `${what} must not contain NUL`);
  return v;
}

/** @internal */
export function checkUint(operation: string, target: string, what: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
    throw invalidArgument(operation, target, `${what} must be a non-negative safe integer`);
  }
  return v;
}
