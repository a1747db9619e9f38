// Issue 17's bound for the whole repo: no hand-written source in packages/ over 600 lines of
// TypeScript or 700 of C++, none in tools/ over 600 (generated code and tests aside).
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const repo = join(dirname(fileURLToPath(import.meta.url)), '../../../..');
const SKIP = new Set(['node_modules', 'dist', 'build', 'test', '.snippets']);

function sources(dir: string, exts: RegExp): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (SKIP.has(e.name)) continue;
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...sources(p, exts));
    else if (exts.test(e.name) && !e.name.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

function over(files: string[], max: number): string[] {
  return files
    .map((f) => [relative(repo, f), readFileSync(f, 'utf8').split('\n').length - 1] as const)
    .filter(([, n]) => n > max)
    .map(([f, n]) => `${f}: ${n}`);
}

describe('source file sizes', () => {
  it('packages/: no TypeScript source over 600 lines, no C++ over 700', () => {
    const pk = join(repo, 'packages');
    expect(sources(pk, /\.(ts|mts|cts)$/).length).toBeGreaterThan(50);
    expect(over(sources(pk, /\.(ts|mts|cts)$/), 600)).toEqual([]);
    expect(sources(pk, /\.(cc|h)$/).length).toBeGreaterThan(10);
    expect(over(sources(pk, /\.(cc|h)$/), 700)).toEqual([]);
  });

  it('tools/: no script over 600 lines', () => {
    const files = sources(join(repo, 'tools'), /\.(ts|mjs|cjs|js|sh)$/);
    expect(files.length).toBeGreaterThan(10);
    expect(over(files, 600)).toEqual([]);
  });
});
