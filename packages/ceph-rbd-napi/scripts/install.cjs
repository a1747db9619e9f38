#!/usr/bin/env node
// The package's `install` script. The tarball ships a prebuilt Node-API binary for linux-x64
// (glibc) in prebuilds/linux-x64/: when it loads, nothing is compiled and the host needs only the
// runtime libraries. Otherwise (another platform, `npm_config_build_from_source=true`, or a
// prebuild that does not load) the addon is compiled with node-gyp. A failed compile does not
// abort `npm install`: it prints what to install, and loading the addon later throws the
// package's typed load error with the same advice.
// (The same file is in every addon package; a unit test keeps the copies identical.)
'use strict';
const { execFileSync } = require('node:child_process');
const { existsSync, readFileSync } = require('node:fs');
const { join } = require('node:path');

const pkgDir = join(__dirname, '..');
const pkg = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8'));
const gyp = readFileSync(join(pkgDir, 'binding.gyp'), 'utf8');
const target = /"target_name"\s*:\s*"([^"]+)"/.exec(gyp)[1];
const prebuilt = join(pkgDir, 'prebuilds', `${process.platform}-${process.arch}`, `${target}.node`);
const fromSource = /^(1|true|yes)$/i.test(process.env.npm_config_build_from_source || '');
// The Debian packages a source build needs, besides g++ make python3.
const BUILD_DEPS = {
  '@ephemera/ceph-rbd-napi': 'librbd-dev librados-dev',
  '@ephemera/libvirt-napi': 'libvirt-dev pkg-config',
};
const say = (msg) => process.stderr.write(`${pkg.name}: ${msg}\n`);

function loads(file) {
  try {
    process.dlopen({ exports: {} }, file);
    return true;
  } catch (e) {
    say(`the prebuilt binary ${file} does not load here (${e.message.split('\n')[0]}); compiling instead`);
    return false;
  }
}

if (!fromSource && existsSync(prebuilt) && loads(prebuilt)) {
  say(`using the prebuilt Node-API binary prebuilds/${process.platform}-${process.arch}/${target}.node`);
  process.exit(0);
}

try {
  // `node-gyp` is npm's (its lifecycle PATH has it; it honours npm_config_node_gyp).
  execFileSync('node-gyp', ['rebuild'], {
    cwd: pkgDir,
    stdio: ['ignore', 'inherit', 'inherit'],
    timeout: 15 * 60_000,
  });
} catch (e) {
  say(
    `compiling the native addon failed (${e.message.split('\n')[0]}). ${pkg.name} is installed but cannot ` +
      `load until it is built: install the build dependencies (${BUILD_DEPS[pkg.name] ?? 'the library headers'} g++ make python3), ` +
      `then run \`npm rebuild ${pkg.name}\`.`,
  );
}
