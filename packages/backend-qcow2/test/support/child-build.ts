import { mkdir, readdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..');
const PACKAGES = ['image-backend', 'qemu-img-wrapper', 'backend-qcow2'];

async function* tsFiles(dir: string): AsyncGenerator<string> {
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) yield* tsFiles(p);
    else if (e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) yield p;
  }
}

/**
 * Transpiles the current sources of this package and the two workspace packages it uses into
 * `outDir` (TypeScript's transpileModule, as vitest's alias would load them), with
 * `@ephemera/*` imports rewritten to the transpiled copies, so a plain `node` child process runs
 * exactly the code under test. Third-party packages resolve through a `node_modules` symlink.
 * Returns the entry file of each package.
 */
export async function buildForChildProcess(outDir: string): Promise<Record<string, string>> {
  const entries: Record<string, string> = {};
  for (const pkg of PACKAGES) {
    const src = join(repo, 'packages', pkg, 'src');
    for await (const file of tsFiles(src)) {
      const out = join(outDir, pkg, relative(src, file)).replace(/\.ts$/, '.js');
      const { outputText } = ts.transpileModule(await readFile(file, 'utf8'), {
        fileName: file,
        compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022, isolatedModules: true },
      });
      const code = outputText.replace(
        /(from\s+|import\()(['"])@ephemera\/([a-z0-9-]+)\2/g,
        (_m, kw: string, q: string, name: string) => {
          let rel = relative(dirname(out), join(outDir, name, 'index.js'));
          if (!rel.startsWith('.')) rel = `./${rel}`;
          return `${kw}${q}${rel}${q}`;
        },
      );
      await mkdir(dirname(out), { recursive: true });
      await writeFile(out, code);
    }
    entries[pkg] = join(outDir, pkg, 'index.js');
  }
  await symlink(join(repo, 'node_modules'), join(outDir, 'node_modules'));
  return entries;
}
