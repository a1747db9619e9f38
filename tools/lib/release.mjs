#!/usr/bin/env node
// The release of the public packages (packages/*), run through `tools/release`:
//   version                     apply the changesets (`changeset version`: versions, changelogs,
//                               internal dependents) and refresh package-lock.json
//   pack --out DIR              `npm pack` every public package into DIR, after what each package's
//                               prepack (tools/lib/prepack.mjs) does: dist/ (nx build, cached), the
//                               prebuilt addon binaries, the LICENSE. Prints one JSON line per tarball.
//   check DIR                   publint (--strict) and @arethetypeswrong/cli (--profile esm-only:
//                               the packages are ESM only) on every tarball in DIR
//   publish --registry URL [--tarballs DIR] [--tag TAG]
//                               pack (or take DIR's tarballs), check, then `npm publish` each tarball
//                               to URL, dependencies first; a version the registry already has is
//                               skipped, so a failed run can be repeated. Credentials come from npm's
//                               own configuration (e.g. NPM_CONFIG_USERCONFIG), never from argv.
// Plain Node ESM; every program runs with an argv array and a timeout, its output in the error.
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, realpathSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { preparePackage } from './prepack.mjs';
import { ensureDeps } from './release-deps.mjs';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

export class ReleaseError extends Error {}

const say = (msg) => process.stderr.write(`${msg}\n`);

export function run(cmd, args, { cwd = REPO, env = process.env, timeout = 10 * 60_000 } = {}) {
  return new Promise((res, rej) => {
    execFile(cmd, args, { cwd, env, timeout, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      if (!err) return res({ stdout: String(stdout), stderr: String(stderr) });
      const why = err.killed ? `timed out after ${timeout} ms` : `exit ${err.code ?? err.signal}`;
      const out = `${String(stdout)}\n${String(stderr)}`.trim().split('\n').slice(-60).join('\n');
      rej(new ReleaseError(`${cmd} ${args.join(' ')}: ${why}\n${out || err.message}`));
    });
  });
}

/** The public packages (not private), dependencies before their dependents. */
export function publicPackages() {
  const pkgs = readdirSync(join(REPO, 'packages'))
    .map((dir) => ({ dir: join(REPO, 'packages', dir), json: join(REPO, 'packages', dir, 'package.json') }))
    .filter((p) => existsSync(p.json))
    .map((p) => ({ ...p, manifest: JSON.parse(readFileSync(p.json, 'utf8')) }))
    .filter((p) => !p.manifest.private);
  const byName = new Map(pkgs.map((p) => [p.manifest.name, p]));
  const order = [];
  const level = new Map();
  const visit = (p) => {
    if (level.has(p.manifest.name)) return level.get(p.manifest.name);
    level.set(p.manifest.name, 0);
    const deps = { ...p.manifest.dependencies, ...p.manifest.peerDependencies };
    let l = 0;
    for (const d of Object.keys(deps).sort()) if (byName.has(d)) l = Math.max(l, visit(byName.get(d)) + 1);
    level.set(p.manifest.name, l);
    // level: 0 for a package without internal dependencies, else 1 + its deepest dependency's.
    order.push({ name: p.manifest.name, version: p.manifest.version, dir: p.dir, level: l });
    return l;
  };
  for (const p of [...pkgs].sort((a, b) => a.manifest.name.localeCompare(b.manifest.name))) visit(p);
  return order;
}

/** Packs every public package into `out`; returns [{ name, version, file, size, unpackedSize, files }]. */
export async function packAll(out) {
  mkdirSync(out, { recursive: true });
  const pkgs = publicPackages();
  // What each package's prepack does, for all at once: nx builds dist/ (from its cache when the
  // sources did not change), then the LICENSE and prebuilt binaries; npm pack needs no scripts then.
  const env = { ...process.env, NX_DAEMON: 'false', NX_NO_CLOUD: 'true', NX_TUI: 'false' };
  const nx = join(REPO, 'node_modules', '.bin', 'nx');
  const projects = pkgs.map((p) => p.name).join(',');
  await run(nx, ['run-many', '-t', 'build', `--projects=${projects}`, '--outputStyle=static'], {
    env,
    timeout: 20 * 60_000,
  });
  for (const p of pkgs) await preparePackage(p.dir);
  const args = [
    'pack',
    '--json',
    '--ignore-scripts',
    '--pack-destination',
    out,
    ...pkgs.flatMap((p) => ['-w', p.name]),
  ];
  const { stdout } = await run('npm', args, { timeout: 20 * 60_000 });
  const packed = JSON.parse(stdout);
  return pkgs.map((p) => {
    const info = packed.find((x) => x.name === p.name);
    if (!info) throw new ReleaseError(`npm pack made no tarball for ${p.name}`);
    return {
      name: p.name,
      level: p.level,
      version: info.version,
      file: join(out, info.filename),
      size: info.size,
      unpackedSize: info.unpackedSize,
      files: info.files.map((f) => f.path),
    };
  });
}

/**
 * publint (strict: warnings fail too) and @arethetypeswrong's verdict under the CLI's `esm-only`
 * profile (the packages are ESM only: CommonJS `require` resolutions are not their contract) on
 * every tarball, in this process: the checkers' own code (publint's API, attw's core with the
 * CLI's profile and exit-code functions) without starting TypeScript once per tarball. Throws one
 * error listing every finding.
 */
export async function checkAll(tarballs) {
  const mods = join(await ensureDeps('pack-check'), 'node_modules');
  const load = (rel) => import(pathToFileURL(join(mods, rel)).href);
  const { publint } = await load('publint/src/index-node.js');
  const { formatMessage } = await load('publint/src/utils.js');
  const attw = await load('@arethetypeswrong/core/dist/index.js');
  const { profiles } = await load('@arethetypeswrong/cli/dist/profiles.js');
  const { getExitCode } = await load('@arethetypeswrong/cli/dist/getExitCode.js');
  const failures = [];
  for (const tarball of tarballs) {
    const data = readFileSync(tarball);
    const lint = await publint({ pack: { tarball: new Uint8Array(data).buffer }, strict: true, level: 'suggestion' });
    const found = lint.messages.map((m) => `publint ${m.type}: ${formatMessage(m, lint.pkg) ?? m.code}`);
    const analysis = await attw.checkPackage(attw.createPackageFromTarballData(new Uint8Array(data)));
    const opts = { ignoreResolutions: profiles['esm-only'].ignoreResolutions, ignoreRules: [] };
    if (!analysis.types) found.push('attw: the package has no types');
    else if (getExitCode(analysis, opts) !== 0) {
      for (const p of analysis.problems) {
        if (opts.ignoreResolutions.includes(p.resolutionKind)) continue;
        found.push(`attw ${p.kind}: ${JSON.stringify(p)}`);
      }
    }
    if (found.length > 0) failures.push(`${basename(tarball)}:\n  ${found.join('\n  ')}`);
  }
  if (failures.length > 0) throw new ReleaseError(`package checks failed:\n${failures.join('\n')}`);
}

async function published(name, version, registry) {
  // The registry's abbreviated packument first (no npm process per package); npm itself, which has
  // the credentials, only for a registry that refuses anonymous reads.
  const url = new URL(name.replace('/', '%2f'), registry.endsWith('/') ? registry : `${registry}/`);
  try {
    const r = await fetch(url, {
      headers: { accept: 'application/vnd.npm.install-v1+json' },
      signal: AbortSignal.timeout(30_000),
    });
    if (r.status === 404) return false;
    if (r.ok) return Boolean((await r.json()).versions?.[version]);
  } catch {
    // fall back to npm below
  }
  try {
    const { stdout } = await run('npm', ['view', `${name}@${version}`, 'version', '--registry', registry], {
      timeout: 60_000,
    });
    return stdout.trim() === version;
  } catch (e) {
    if (/E404|404 Not Found|is not in this registry/.test(e.message)) return false;
    throw e;
  }
}

/** Publishes the tarballs (packed now, or found in `tarballs`) to `registry`, dependencies first. */
export async function publishAll({ registry, tarballs, tag }) {
  if (!/^https?:\/\//.test(registry ?? '')) throw new ReleaseError('publish needs --registry http(s)://...');
  let packed;
  if (tarballs) {
    const files = readdirSync(tarballs).filter((f) => f.endsWith('.tgz'));
    packed = publicPackages().map((p) => {
      const file = `${p.name.replace(/^@/, '').replace('/', '-')}-${p.version}.tgz`;
      if (!files.includes(file)) throw new ReleaseError(`${tarballs} has no ${file}`);
      return { ...p, file: join(tarballs, file) };
    });
  } else {
    packed = await packAll(join(REPO, '.cache', 'release', 'tarballs'));
  }
  await checkAll(packed.map((p) => p.file));
  // Dependencies first: one level at a time, the packages of a level side by side.
  const byLevel = new Map();
  for (const p of packed) byLevel.set(p.level, [...(byLevel.get(p.level) ?? []), p]);
  const done = [];
  for (const level of [...byLevel.keys()].sort((a, b) => a - b)) {
    await Promise.all(
      byLevel.get(level).map(async (p) => {
        if (await published(p.name, p.version, registry)) {
          say(`${p.name}@${p.version}: already in ${registry}, skipped`);
          return;
        }
        const args = ['publish', p.file, '--registry', registry, '--access', 'public', ...(tag ? ['--tag', tag] : [])];
        await run('npm', args, { timeout: 5 * 60_000 });
        say(`${p.name}@${p.version}: published to ${registry}`);
        done.push(`${p.name}@${p.version}`);
      }),
    );
  }
  return done;
}

async function version() {
  await run(join(REPO, 'node_modules', '.bin', 'changeset'), ['version'], { timeout: 5 * 60_000 });
  await run('npm', ['install', '--package-lock-only', '--ignore-scripts', '--no-audit', '--no-fund'], {
    timeout: 10 * 60_000,
  });
  for (const p of publicPackages()) say(`${p.name}@${p.version}`);
}

function option(args, name) {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
}

if (process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const [cmd, ...args] = process.argv.slice(2);
  try {
    if (cmd === 'version') await version();
    else if (cmd === 'pack') {
      const out = resolve(option(args, '--out') ?? join(REPO, '.cache', 'release', 'tarballs'));
      for (const p of await packAll(out)) process.stdout.write(`${JSON.stringify(p)}\n`);
    } else if (cmd === 'check') {
      const dir = resolve(args[0] ?? '');
      await checkAll(
        readdirSync(dir)
          .filter((f) => f.endsWith('.tgz'))
          .map((f) => join(dir, f)),
      );
      say('publint and attw: no findings');
    } else if (cmd === 'publish') {
      const tarballs = option(args, '--tarballs');
      await publishAll({
        registry: option(args, '--registry'),
        tarballs: tarballs && resolve(tarballs),
        tag: option(args, '--tag'),
      });
    } else {
      say(
        'usage: tools/release version | pack --out DIR | check DIR | publish --registry URL [--tarballs DIR] [--tag T]',
      );
      process.exit(2);
    }
  } catch (e) {
    say(`tools/release: ${e instanceof ReleaseError ? e.message : e.stack}`);
    process.exit(1);
  }
}
