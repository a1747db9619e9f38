#!/usr/bin/env node
// Prebuilt Node-API binaries for the native addons (packages/*/binding.gyp), shipped in their
// tarballs so that `npm install` on a compute host compiles nothing (issue 20, item 3).
//
//   node tools/lib/prebuild.mjs [PACKAGE_DIR...]   (default: every addon package)
//
// Each addon is built by node-gyp from a copy of the files the package publishes (package.json
// "files", without dist/ and prebuilds/) in .cache/prebuilds/<name>-<hash>/ (git-ignored), so
// packages/*/build/ (the development build other processes load) is never touched. <hash> covers
// those files and the node-gyp and node-addon-api versions, not the Node version: a Node-API
// binary (NAPI_VERSION=8) loads on every Node from 22 (the floor) up. The stripped binary is then copied to
// <package>/prebuilds/linux-x64/<target>.node (git-ignored; the package loader's fallback).
// Plain Node ESM without npm dependencies; spawned programs get argv arrays and timeouts.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  copyFileSync,
  cpSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  realpathSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const CACHE = join(REPO, '.cache', 'prebuilds');
/** Where a package keeps its prebuilt binaries: prebuilds/<platform>-<arch>/ (glibc). */
export const PREBUILD_DIR = join('prebuilds', 'linux-x64');

export class PrebuildError extends Error {}

const say = (msg) => process.stderr.write(`${msg}\n`);

function run(cmd, args, { cwd, env = process.env, timeout = 15 * 60_000 }) {
  return new Promise((res, rej) => {
    execFile(cmd, args, { cwd, env, timeout, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      if (!err) return res(String(stdout));
      const why = err.killed ? `timed out after ${timeout} ms` : `exit ${err.code ?? err.signal}`;
      const out = `${String(stdout)}\n${String(stderr)}`.trim().split('\n').slice(-40).join('\n');
      rej(new PrebuildError(`${cmd} ${args.join(' ')}: ${why}\n${out || err.message}`));
    });
  });
}

function listFiles(root, rel) {
  const abs = join(root, rel);
  if (!statSync(abs).isDirectory()) return [rel];
  return readdirSync(abs)
    .sort()
    .flatMap((name) => listFiles(root, join(rel, name)));
}

/** What a user's source build compiles from: package.json plus its "files" (no dist, no prebuilds). */
export function buildInputs(pkgDir) {
  const pkg = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8'));
  const entries = (pkg.files ?? ['binding.gyp', 'native']).filter(
    (f) => !/^(dist|build|prebuilds|node_modules)(\/|$)/.test(f) && !/\.md$/i.test(f) && existsSync(join(pkgDir, f)),
  );
  return ['package.json', ...entries.flatMap((e) => listFiles(pkgDir, e))];
}

function versionOf(name) {
  const file = join(REPO, 'node_modules', name, 'package.json');
  return existsSync(file) ? JSON.parse(readFileSync(file, 'utf8')).version : 'missing';
}

/** The headers node-gyp builds against: npm's nodedir, else the running Node's own include/. */
function nodeDir() {
  if (process.env.npm_config_nodedir) return process.env.npm_config_nodedir;
  const own = dirname(dirname(process.execPath));
  return existsSync(join(own, 'include', 'node', 'node_api.h')) ? own : undefined;
}

/** Builds (or reuses) the prebuilt binary of one addon package; returns the copied file's path. */
export async function prebuild(pkgDir) {
  const name = basename(pkgDir);
  const inputs = buildInputs(pkgDir);
  const h = createHash('sha256').update(
    `node-gyp ${versionOf('node-gyp')}\nnode-addon-api ${versionOf('node-addon-api')}\n`,
  );
  for (const f of inputs)
    h.update(`${f}\0`)
      .update(readFileSync(join(pkgDir, f)))
      .update('\0');
  const out = join(CACHE, `${name}-${h.digest('hex').slice(0, 16)}`);
  const release = join(out, 'build', 'Release');
  if (!existsSync(join(out, '.complete'))) {
    const t0 = performance.now();
    rmSync(out, { recursive: true, force: true });
    mkdirSync(out, { recursive: true });
    for (const f of inputs) cpSync(join(pkgDir, f), join(out, f));
    const dir = nodeDir();
    const env = { ...process.env };
    // The second test leg's preload hook (tools/lib/node-addons.cjs) has nothing to do with a build.
    delete env.NODE_OPTIONS;
    const gyp = join(REPO, 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
    try {
      await run(process.execPath, [gyp, 'rebuild', ...(dir ? [`--nodedir=${dir}`] : [])], { cwd: out, env });
      for (const f of readdirSync(release).filter((x) => x.endsWith('.node'))) {
        // Symbols are of no use to users and make up most of the file.
        await run('strip', ['--strip-unneeded', join(release, f)], { cwd: out, timeout: 60_000 });
      }
    } catch (e) {
      throw new PrebuildError(`prebuild of ${name} failed: ${e.message}`);
    }
    writeFileSync(join(out, '.complete'), `${new Date().toISOString()}\n`);
    say(`${name}: prebuilt in ${((performance.now() - t0) / 1000).toFixed(1)}s -> ${relative(REPO, release)}`);
  }
  const built = readdirSync(release).filter((x) => x.endsWith('.node'));
  if (built.length !== 1) throw new PrebuildError(`${name}: expected one .node file in ${release}, got ${built}`);
  const target = join(pkgDir, PREBUILD_DIR);
  mkdirSync(target, { recursive: true });
  const dest = join(target, built[0]);
  // Copy, then rename: a process loading the previous file never sees a half-written one.
  const tmp = `${dest}.tmp${process.pid}`;
  copyFileSync(join(release, built[0]), tmp);
  renameSync(tmp, dest);
  return dest;
}

if (process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const dirs = process.argv.slice(2).map((d) => resolve(d));
  const all = readdirSync(join(REPO, 'packages'))
    .map((n) => join(REPO, 'packages', n))
    .filter((d) => existsSync(join(d, 'binding.gyp')));
  try {
    for (const d of dirs.length > 0 ? dirs : all) say(`${relative(REPO, await prebuild(d))}`);
  } catch (e) {
    say(`tools/lib/prebuild.mjs: ${e instanceof PrebuildError ? e.message : e.stack}`);
    process.exit(1);
  }
}
