/**
 * `@ephemera/testkit` (private): helpers shared by Ephemera's test suites.
 * - `stack.ts`: reach the dev stack described by `stack.json` (owned by tools/stack).
 * - `guest.ts`: build the bootable guest image (owned by tools/guest-image).
 */
export type { CephUser, StackHost, StackInfo } from './stack-info.js';
export * from './stack.js';
export * from './guest.js';
