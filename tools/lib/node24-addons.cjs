'use strict';
// Preloaded (`NODE_OPTIONS=--require=<this file>`) into every Node process of the Node 24 test leg
// (tools/node24): vitest, its workers, and the children the tests spawn, since they inherit
// NODE_OPTIONS. It makes those processes load the native addons built against Node 24's headers
// (under .cache/node24/addons/) instead of the Node 20 builds in packages/*/build/Release/, which
// other processes keep using at the same time, without any change to the packages' loaders:
// `require('<repo>/packages/X/build/Release/x.node')` still resolves that path (tests asserting
// `defaultAddonPath()` keep passing) but `process.dlopen`, the single call that maps a `.node` file,
// opens the Node 24 build instead.
//
//   EPHEMERA_NODE24_ADDONS     JSON object { "<real path of the Node 20 build>": "<Node 24 build>" }
//   EPHEMERA_NODE24_ADDON_LOG  optional file: one line "<pid> <node version> <loaded path>" per load,
//                              so tools/node24 can show which builds the leg really loaded.
const { appendFileSync, existsSync, realpathSync } = require('node:fs');

let map = {};
try {
  map = JSON.parse(process.env.EPHEMERA_NODE24_ADDONS || '{}');
} catch (e) {
  throw new Error(`EPHEMERA_NODE24_ADDONS is not valid JSON: ${e.message}`);
}
const log = process.env.EPHEMERA_NODE24_ADDON_LOG;
const dlopen = process.dlopen;

function redirected(filename) {
  const name = String(filename);
  if (Object.prototype.hasOwnProperty.call(map, name)) return map[name];
  if (!name.endsWith('.node')) return undefined;
  try {
    const real = realpathSync(name);
    if (Object.prototype.hasOwnProperty.call(map, real)) return map[real];
  } catch {
    // a missing file: let dlopen report it as usual
  }
  return undefined;
}

process.dlopen = function dlopenNode24(module, filename, ...rest) {
  const target = redirected(filename);
  if (target === undefined) return dlopen.call(this, module, filename, ...rest);
  if (!existsSync(target)) {
    throw new Error(
      `Node 24 test leg: the addon build ${target} (for ${filename}) is missing: run \`bash tools/node24 prepare\``,
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
