#!/usr/bin/env node
// The Ephemera dev stack (run through `tools/stack`, which holds the lock for commands that
// change it). Plain Node ESM with no npm dependencies: it runs before `npm ci`.
//
// The work is split by service in tools/lib/stack/: ceph.mjs, glance.mjs, libvirtd.mjs (one
// instance per root), hosts.mjs (the compute hosts: one libvirtd each), stack.mjs (the stack as a
// whole: state.json, stack.json and the commands), process.mjs (daemons by pid) and util.mjs.
import { main } from './stack/stack.mjs';
import { StackError } from './stack/util.mjs';

// Never exit "successfully" because the event loop ran dry while a command was still waiting.
const keepAlive = setInterval(() => {}, 1 << 30);
process.on('beforeExit', () => {
  process.stderr.write(
    `tools/stack ${process.argv[2]}: internal error: nothing left to wait for before the command finished\n`,
  );
  process.exit(70);
});
main(process.argv.slice(2)).then(
  (code) => {
    clearInterval(keepAlive);
    process.exit(code);
  },
  (e) => {
    process.stderr.write(`tools/stack ${process.argv[2]}: ${e instanceof StackError ? e.message : e.stack}\n`);
    process.exit(1);
  },
);
