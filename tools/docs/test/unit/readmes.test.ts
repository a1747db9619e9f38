import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { codeBlocks } from '../../lib/markdown.js';
import { ROOT, read } from '../../lib/files.js';

// The convention of DEVELOPERS.md: every package's README says what it is, how to install it,
// gives an example that CI checks (typechecked, or run when it needs no real service), and
// summarises the API.
const packages = ['packages', 'examples'].flatMap((dir) =>
  existsSync(join(ROOT, dir))
    ? readdirSync(join(ROOT, dir))
        .filter((p) => existsSync(join(ROOT, dir, p, 'package.json')))
        .map((p) => `${dir}/${p}`)
    : [],
);

function section(doc: string, heading: RegExp): string | undefined {
  const lines = doc.split('\n');
  const start = lines.findIndex((l) => heading.test(l));
  if (start < 0) return undefined;
  const end = lines.findIndex((l, i) => i > start && /^## /.test(l));
  return lines.slice(start + 1, end < 0 ? undefined : end).join('\n');
}

describe('every package README has what it is, install, a checked example, an API summary', () => {
  for (const pkg of packages) {
    it(pkg, () => {
      const path = `${pkg}/README.md`;
      expect(existsSync(join(ROOT, path)), `${path} exists`).toBe(true);
      const doc = read(path);
      const problems: string[] = [];
      const intro = doc.split('\n## ')[0]!;
      if (!/^# \S/.test(doc)) problems.push('no "# title" first line');
      if (intro.replace(/^# .*$/m, '').trim().length < 80)
        problems.push('no introduction (what it is) before the first section');
      const install = section(doc, /^## Install/);
      if (install === undefined) problems.push('no "## Install" section');
      const example = section(doc, /^## Example/);
      if (example === undefined) problems.push('no "## Example" section');
      else if (!codeBlocks(example).some((b) => b.marker?.kind === 'run' || b.marker?.kind === 'typecheck')) {
        problems.push('the example has no block marked <!-- example: run --> or <!-- example: typecheck -->');
      }
      if (section(doc, /^## API/) === undefined) problems.push('no "## API" / "## API summary" section');
      expect(problems).toEqual([]);
    });
  }
});

// Issue 20.7: a README is read by someone who installed the package from a registry; its examples
// may import only packages that are published (not `"private": true` ones such as the testkit).
const privatePackages = new Set(
  ['packages', 'examples', 'tools'].flatMap((dir) =>
    existsSync(join(ROOT, dir))
      ? readdirSync(join(ROOT, dir))
          .filter((p) => existsSync(join(ROOT, dir, p, 'package.json')))
          .map((p) => JSON.parse(read(`${dir}/${p}/package.json`)) as { name?: string; private?: boolean })
          .filter((m) => m.private === true && m.name)
          .map((m) => m.name!)
      : [],
  ),
);

describe('package README examples import only published packages', () => {
  it('knows the private packages (the check below means something)', () => {
    expect(privatePackages.has('@ephemera/testkit')).toBe(true);
  });
  for (const pkg of packages.filter((p) => p.startsWith('packages/'))) {
    it(pkg, () => {
      const path = `${pkg}/README.md`;
      const imports = codeBlocks(read(path))
        .filter((b) => b.marker?.kind === 'run' || b.marker?.kind === 'typecheck')
        .flatMap((b) => [...b.code.matchAll(/(?:from\s+|import\s*\(\s*)['"](@[\w-]+\/[\w-]+)['"]/g)].map((m) => m[1]!));
      expect(imports.filter((i) => privatePackages.has(i))).toEqual([]);
    });
  }
});
