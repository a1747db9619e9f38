/**
 * `@ephemera/testkit` (private): helpers shared by Ephemera's test suites.
 * - `stack.ts`: reach the dev stack described by `stack.json` (owned by tools/stack).
 * - `guest.ts`: build the bootable guest image (owned by tools/guest-image).
 * - `native-layout.ts`: the layout and doc rules of the native addons (checked by their unit tests).
 */
export type { CephUser, StackHost, StackInfo } from './stack-info.js';
export * from './stack.js';
export * from './guest.js';
export * from './native-layout.js';
