#!/usr/bin/env node
// Every public package's `prepack` (run by `npm pack` / `npm publish` in the package directory):
//  1. copies the repository's LICENSE (Apache-2.0) into the package: one text to maintain, and npm
//     ships a package's LICENSE whatever its "files" say (the copy is git-ignored);
//  2. for a native addon (binding.gyp), builds its prebuilt Node-API binary (tools/lib/prebuild.mjs);
//  3. builds dist/ with `tsc -p tsconfig.build.json`, so a tarball never lacks its code or types.
// tools/release packs all packages at once: it builds them with nx (cached), runs
// preparePackage() for each, then packs with --ignore-scripts (one tsc per package is slow).
import { execFile } from 'node:child_process';
import { copyFileSync, existsSync, realpathSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PrebuildError, prebuild } from './prebuild.mjs';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const pkgDir = process.cwd();

function tsc() {
  const bin = join(REPO, 'node_modules', 'typescript', 'bin', 'tsc');
  return new Promise((res, rej) => {
    execFile(
      process.execPath,
      [bin, '-p', 'tsconfig.build.json'],
      { cwd: pkgDir, timeout: 5 * 60_000, maxBuffer: 64 << 20 },
      (err, stdout, stderr) => {
        if (err) rej(new PrebuildError(`tsc -p tsconfig.build.json in ${pkgDir} failed:\n${stdout}${stderr}`));
        else res();
      },
    );
  });
}

/** What a tarball needs besides dist/: the LICENSE copy and, for an addon, its prebuilt binary. */
export async function preparePackage(dir) {
  if (!existsSync(join(dir, 'tsconfig.build.json'))) {
    throw new PrebuildError(`prepack: ${dir} is not a package of this repository (no tsconfig.build.json)`);
  }
  copyFileSync(join(REPO, 'LICENSE'), join(dir, 'LICENSE'));
  if (existsSync(join(dir, 'binding.gyp'))) await prebuild(dir);
}

// realpath: the script may be reached through a symlinked tools/ (import.meta.url is the real path).
if (process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    await preparePackage(pkgDir);
    await tsc();
  } catch (e) {
    process.stderr.write(`prepack: ${e instanceof PrebuildError ? e.message : e.stack}\n`);
    process.exit(1);
  }
}
