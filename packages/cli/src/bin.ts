#!/usr/bin/env node
// The `ephemera` command.
import { EXIT } from './exit-codes.js';
import { run } from './program.js';

// The first SIGINT/SIGTERM aborts the running operation, which rolls back what it made (a VM whose
// start is under way included); a second one exits at once, leaving the rest to `reconcile`.
const ac = new AbortController();
const onSignal = (sig: NodeJS.Signals): void => {
  const exitCode = sig === 'SIGINT' ? EXIT.INTERRUPTED : EXIT.TERMINATED;
  if (ac.signal.aborted) {
    process.stderr.write(`ephemera: ${sig} again: exiting now; run \`ephemera reconcile\` to finish the rollback\n`);
    process.exit(exitCode);
  }
  process.stderr.write(`ephemera: ${sig}: aborting and rolling back (send it again to exit at once)\n`);
  ac.abort(Object.assign(new Error(`interrupted by ${sig}`), { name: 'AbortError', exitCode }));
};
process.on('SIGINT', onSignal);
process.on('SIGTERM', onSignal);

process.exitCode = await run(process.argv.slice(2), undefined, { signal: ac.signal });
// A command that took no notice of the signal (it had nothing to roll back) still reports it.
if (ac.signal.aborted && process.exitCode === EXIT.OK)
  process.exitCode = (ac.signal.reason as { exitCode: number }).exitCode;
