#!/usr/bin/env node
// Prints compiler or linker flags for librados + librbd, for binding.gyp.
// Uses pkg-config when the system ships .pc files; Debian's librbd-dev/librados-dev do not,
// so it falls back to the plain `-lrados -lrbd` (headers live in /usr/include/{rados,rbd}).
'use strict';
const { execFileSync } = require('node:child_process');

const what = process.argv[2];
if (what !== 'cflags' && what !== 'libs') {
  process.stderr.write('usage: ceph-flags.cjs cflags|libs\n');
  process.exit(2);
}

function pkgConfig(flag) {
  try {
    return execFileSync('pkg-config', [flag, 'librados', 'librbd'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
      timeout: 10_000,
    }).trim();
  } catch {
    return null;
  }
}

const found = pkgConfig(what === 'cflags' ? '--cflags' : '--libs');
const flags = found ?? (what === 'cflags' ? '' : '-lrados -lrbd');
// gyp's <!@(...) splits on whitespace; print one flag per line-safe token.
process.stdout.write(flags.split(/\s+/).filter(Boolean).join(' ') + '\n');
