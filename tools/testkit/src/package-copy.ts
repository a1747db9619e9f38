import { copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const repo = join(dirname(fileURLToPath(import.meta.url)), '../../..');

/** A separately loaded copy of a built package (see {@link importPackageCopy}). */
export interface PackageCopy {
  /** The copy's public entry, as `import()` returned it. */
  module: Record<string, unknown>;
  /** Removes the copy's temp dir. */
  remove(): void;
}

/**
 * Imports a second copy of `packages/<name>`: its built `dist/` and package.json copied into a temp
 * dir of their own, as when two versions of a package are installed. Its dependencies resolve to
 * the repo's node_modules, so only the package itself is doubled. Needs the package built.
 */
export async function importPackageCopy(name: string): Promise<PackageCopy> {
  const src = join(repo, 'packages', name);
  if (!existsSync(join(src, 'dist/index.js')))
    throw new Error(`${name} is not built (no dist/index.js): npx nx run-many -t build`);
  const dir = mkdtempSync(join(tmpdir(), `ephemera-copy-${name}-`));
  try {
    cpSync(join(src, 'dist'), join(dir, 'dist'), { recursive: true });
    cpSync(join(src, 'package.json'), join(dir, 'package.json'));
    symlinkSync(join(repo, 'node_modules'), join(dir, 'node_modules'));
    const module = (await import(pathToFileURL(join(dir, 'dist/index.js')).href)) as Record<string, unknown>;
    return { module, remove: () => rmSync(dir, { recursive: true, force: true }) };
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

/**
 * A package root at `root` with a copy of the addon binary `binary`, named `file`, in a source
 * build (`build/Release/`) and/or where the tarball ships it (`prebuilds/linux-x64/`).
 */
export function addonLayout(
  root: string,
  binary: string,
  file: string,
  parts: { build?: boolean; prebuilt?: boolean },
): string {
  if (parts.build) {
    mkdirSync(join(root, 'build', 'Release'), { recursive: true });
    copyFileSync(binary, join(root, 'build', 'Release', file));
  }
  if (parts.prebuilt) {
    mkdirSync(join(root, 'prebuilds', 'linux-x64'), { recursive: true });
    copyFileSync(binary, join(root, 'prebuilds', 'linux-x64', file));
  }
  return root;
}
