#!/usr/bin/env node
// Is node_modules ready for this checkout?
//   exit 0: node_modules matches package-lock.json and every native addon is built;
//   exit 1: node_modules is missing or was installed from another lock: run `npm ci`;
//   exit 2: only native addon builds are missing, or were built against other Node headers than
//           npm_config_nodedir (tools/node sets it to the running Node's): their workspace names are printed, one a line,
//           so the caller rebuilds just those (`npm run build:native -w NAME`) instead of wiping
//           node_modules under other processes' feet.
// `--record` stores the current lock hash after a successful `npm ci`.
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const stamp = 'node_modules/.ephemera-lock-sha256';
const lock = existsSync('package-lock.json') ? readFileSync('package-lock.json') : Buffer.alloc(0);
const hash = createHash('sha256').update(lock).digest('hex');
if (process.argv.includes('--record')) {
  writeFileSync(stamp, hash);
  process.exit(0);
}
if (!existsSync(stamp) || readFileSync(stamp, 'utf8').trim() !== hash) process.exit(1);
/** Was this addon built against npm_config_nodedir's headers (when that is set)? node-gyp records them. */
function builtFor(dir) {
  const want = process.env.npm_config_nodedir;
  if (!want) return true;
  const gypi = join(dir, 'build', 'config.gypi');
  return existsSync(gypi) && readFileSync(gypi, 'utf8').includes(`"nodedir": ${JSON.stringify(want)}`);
}

const unbuilt = [];
for (const name of readdirSync('packages')) {
  const dir = join('packages', name);
  if (!existsSync(join(dir, 'binding.gyp'))) continue;
  const rel = join(dir, 'build', 'Release');
  if (!existsSync(rel) || !readdirSync(rel).some((f) => f.endsWith('.node')) || !builtFor(dir)) {
    unbuilt.push(JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')).name);
  }
}
if (unbuilt.length > 0) {
  console.log(unbuilt.join('\n'));
  process.exit(2);
}
process.exit(0);
