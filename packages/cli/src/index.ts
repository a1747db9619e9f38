/**
 * `@ephemera/cli`: the `ephemera` command (`bin: ephemera`): the dev stack, Glance images
 * (upload with progress, list, show, explain the resolver's plan), boot/list/show/console/
 * start/stop/reboot/resize/snapshot/destroy of instances, gc and reconcile. `--json` on every
 * command; stable exit codes ({@link EXIT}).
 *
 * @packageDocumentation
 */
// Running the command and its exit codes: the commander program, the flavors table, the error
// to exit code mapping and the progress bar are internals (tests import them from their files).
export type { CliIo, RunOptions } from './program.js';
export { run } from './program.js';
export { EXIT } from './exit-codes.js';
