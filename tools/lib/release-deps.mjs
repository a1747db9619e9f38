#!/usr/bin/env node
// npm tools that the release checks and the registry test need, installed outside the workspace
// (never in the root package.json: they would weigh on every `npm ci` and pin a second TypeScript):
//   pack-check  publint and @arethetypeswrong/cli, run on every tarball (tools/release check)
//   verdaccio   the local registry of the registry test (e2e/registry.test.ts)
// Each set is installed once with `npm install --prefix` into .cache/<set>-<hash>/ (git-ignored),
// <hash> covering the pinned manifest below, and reused after: the same scheme as .cache/node/.
//   node tools/lib/release-deps.mjs SET   prints the set's directory (installing it when missing)
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, realpathSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const CACHE = join(REPO, '.cache');

/** The pinned manifests. Exact versions: a tool that changes its verdict must be a commit. */
export const SETS = {
  'pack-check': {
    dependencies: { publint: '0.3.25', '@arethetypeswrong/cli': '0.18.5' },
  },
  // verdaccio 6.10 wants Node 22 and does not install here as it stands; 6.8.0 runs on 20.19
  // once its node-fetch is 2.7.0 (the machine's npm package list says so).
  verdaccio: {
    dependencies: { verdaccio: '6.8.0' },
    overrides: { 'node-fetch': '2.7.0' },
  },
};

export class ReleaseDepsError extends Error {}

function npmInstall(dir) {
  return new Promise((res, rej) => {
    const args = ['install', '--prefix', dir, '--ignore-scripts', '--no-audit', '--no-fund', '--loglevel=error'];
    // Only the registry settings of the caller: a workspace flag or a prefix must not leak in.
    const env = Object.fromEntries(
      Object.entries(process.env).filter(
        ([k]) => !/^npm_(config_(workspace|prefix|global|userconfig)|lifecycle|package)/i.test(k),
      ),
    );
    delete env.NODE_OPTIONS;
    execFile('npm', args, { cwd: dir, env, timeout: 10 * 60_000, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      if (!err) return res();
      const why = err.killed ? 'timed out after 600 s' : `exit ${err.code ?? err.signal}`;
      rej(new ReleaseDepsError(`npm ${args.join(' ')}: ${why}\n${`${stdout}\n${stderr}`.trim().slice(-4000)}`));
    });
  });
}

/** The directory of one tool set (its node_modules/.bin has the tools), installed when missing. */
export async function ensureDeps(set) {
  const manifest = SETS[set];
  if (!manifest) throw new ReleaseDepsError(`unknown tool set ${set} (known: ${Object.keys(SETS).join(', ')})`);
  const json = `${JSON.stringify({ name: `ephemera-${set}`, private: true, ...manifest }, null, 2)}\n`;
  const dir = join(CACHE, `${set}-${createHash('sha256').update(json).digest('hex').slice(0, 12)}`);
  if (existsSync(join(dir, '.complete'))) return dir;
  mkdirSync(CACHE, { recursive: true });
  // Installed aside, then renamed: a concurrent caller either sees a complete set or none.
  const tmp = `${dir}.tmp${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  try {
    writeFileSync(join(tmp, 'package.json'), json);
    await npmInstall(tmp);
    writeFileSync(join(tmp, '.complete'), `${new Date().toISOString()}\n`);
    if (existsSync(dir)) rmSync(dir, { recursive: true, force: true });
    try {
      renameSync(tmp, dir);
    } catch (e) {
      if (!existsSync(join(dir, '.complete'))) throw e;
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  // Older installs of this set (another manifest) are of no use any more.
  for (const old of readdirSync(CACHE)) {
    if (old.startsWith(`${set}-`) && join(CACHE, old) !== dir && !old.includes('.tmp')) {
      rmSync(join(CACHE, old), { recursive: true, force: true });
    }
  }
  return dir;
}

if (process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    process.stdout.write(`${await ensureDeps(process.argv[2])}\n`);
  } catch (e) {
    process.stderr.write(`tools/lib/release-deps.mjs: ${e instanceof ReleaseDepsError ? e.message : e.stack}\n`);
    process.exit(1);
  }
}
