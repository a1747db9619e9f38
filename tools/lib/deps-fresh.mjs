#!/usr/bin/env node
// Exit 0 when node_modules matches package-lock.json and every native addon is built, 1 otherwise.
// `--record` stores the current lock hash after a successful `npm ci`.
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const stamp = 'node_modules/.ephemera-lock-sha256';
const lock = existsSync('package-lock.json') ? readFileSync('package-lock.json') : Buffer.alloc(0);
const hash = createHash('sha256').update(lock).digest('hex');
if (process.argv.includes('--record')) { writeFileSync(stamp, hash); process.exit(0); }
if (!existsSync(stamp) || readFileSync(stamp, 'utf8').trim() !== hash) process.exit(1);
for (const name of readdirSync('packages')) {
  const dir = join('packages', name);
  if (!existsSync(join(dir, 'binding.gyp'))) continue;
  const rel = join(dir, 'build', 'Release');
  if (!existsSync(rel) || !readdirSync(rel).some((f) => f.endsWith('.node'))) process.exit(1);
}
process.exit(0);
