/**
 * `@ephemera/cli`: the `ephemera` command (`bin: ephemera`): the dev stack, Glance images
 * (upload with progress, list, show, explain the resolver's plan), boot/list/show/console/
 * start/stop/reboot/resize/snapshot/destroy of instances, gc and reconcile. `--json` on every
 * command; stable exit codes ({@link EXIT}).
 *
 * @packageDocumentation
 */
export type { CliIo, RunOptions } from './program.js';
export { buildProgram, repoRoot, run } from './program.js';
export type { ExitCode } from './exit-codes.js';
export { EXIT, EXIT_CODE_BY_ERROR, EXIT_MEANINGS, exitCodeFor } from './exit-codes.js';
export { FLAVORS, parseFlavor } from './flavors.js';
export { ProgressBar, bytes } from './progress.js';
