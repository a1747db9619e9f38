/**
 * `@ephemera/testkit` (private): helpers shared by Ephemera's test suites.
 * - `stack.ts`: reach the dev stack described by `stack.json` (owned by tools/stack).
 * - `guest.ts`: build the bootable guest image (owned by tools/guest-image).
 * - `native-layout.ts`: the layout and doc rules of the native addons (checked by their unit tests).
 * - `package-copy.ts`: import a second copy of a built package (error guards across copies),
 *   or lay out an addon binary as a source build or a prebuilt one.
 * - `processes.ts`: live QEMU processes of a domain, polling a condition until it holds.
 */
export type { CephUser, StackHost, StackInfo } from './stack-info.js';
export * from './stack.js';
export * from './guest.js';
export * from './native-layout.js';
export * from './package-copy.js';
export * from './processes.js';
