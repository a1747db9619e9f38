'use strict';
// Preloaded (`NODE_OPTIONS=--require=<this file>`) into every Node process of the second test leg
// (`tools/node 24 test`): vitest, its workers, and the children the tests spawn, since they inherit
// NODE_OPTIONS. It makes those processes load the native addons built against that Node's headers
// (under .cache/node/addons/) instead of the first leg's builds in packages/*/build/Release/, which
// other processes keep using at the same time, without any change to the packages' loaders:
// `require('<repo>/packages/X/build/Release/x.node')` still resolves that path (tests asserting
// `defaultAddonPath()` keep passing) but `process.dlopen`, the single call that maps a `.node` file,
// opens the cached build instead.
//
//   EPHEMERA_NODE_ADDONS       JSON object { "<real path of the packages/*/build file>": "<cached build>" }
//   EPHEMERA_NODE_ADDON_LOG    optional file: one line "<pid> <node version> <loaded path>" per load,
//                              so tools/node can show which builds the leg really loaded.
const { appendFileSync, existsSync, realpathSync } = require('node:fs');

let map = {};
try {
  map = JSON.parse(process.env.EPHEMERA_NODE_ADDONS || '{}');
} catch (e) {
  throw new Error(`EPHEMERA_NODE_ADDONS is not valid JSON: ${e.message}`);
}
const log = process.env.EPHEMERA_NODE_ADDON_LOG;
const dlopen = process.dlopen;

function redirected(filename) {
  const name = String(filename);
  if (Object.hasOwn(map, name)) return map[name];
  if (!name.endsWith('.node')) return undefined;
  try {
    const real = realpathSync(name);
    if (Object.hasOwn(map, real)) return map[real];
  } catch {
    // a missing file: let dlopen report it as usual
  }
  return undefined;
}

process.dlopen = function dlopenCachedBuild(module, filename, ...rest) {
  const target = redirected(filename);
  if (target === undefined) return dlopen.call(this, module, filename, ...rest);
  if (!existsSync(target)) {
    throw new Error(
      `Node ${process.version} test leg: the addon build ${target} (for ${filename}) is missing: run \`bash tools/node ${process.versions.node.split('.')[0]} prepare\``,
    );
  }
  if (log) {
    try {
      appendFileSync(log, `${process.pid} ${process.version} ${target}\n`);
    } catch {
      // the log is only informational
    }
  }
  return dlopen.call(this, module, target, ...rest);
};
