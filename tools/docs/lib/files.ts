import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root. */
export const ROOT = resolve(fileURLToPath(new URL('../../..', import.meta.url)));

/** Repo-relative paths of every Markdown page the docs test checks. */
export function docFiles(): string[] {
  const out = ['README.md', 'DEVELOPERS.md', 'tools/README.md'].filter((f) => existsSync(join(ROOT, f)));
  for (const f of readdirSync(join(ROOT, 'docs')).sort()) if (f.endsWith('.md')) out.push(`docs/${f}`);
  for (const dir of ['packages', 'examples', 'tools']) {
    if (!existsSync(join(ROOT, dir))) continue;
    for (const p of readdirSync(join(ROOT, dir)).sort()) {
      if (existsSync(join(ROOT, dir, p, 'README.md'))) out.push(`${dir}/${p}/README.md`);
    }
  }
  return out;
}

/** Workspace package names -> repo-relative path of their TypeScript entry (`src/index.ts`). */
export function workspaceEntries(): Map<string, string> {
  const out = new Map<string, string>();
  for (const dir of ['packages', 'examples', 'tools']) {
    if (!existsSync(join(ROOT, dir))) continue;
    for (const p of readdirSync(join(ROOT, dir))) {
      const pkg = join(ROOT, dir, p, 'package.json');
      const entry = `${dir}/${p}/src/index.ts`;
      if (!existsSync(pkg) || !existsSync(join(ROOT, entry))) continue;
      const { name } = JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string };
      if (name) out.set(name, entry);
    }
  }
  return out;
}

export function read(path: string): string {
  return readFileSync(join(ROOT, path), 'utf8');
}
