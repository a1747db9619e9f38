import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, it, vi } from 'vitest';
import {
  anchors,
  codeBlocks,
  extractRegion,
  links,
  replaceBlocks,
  wholeFile,
  type CodeBlock,
} from '../../lib/markdown.js';
import { ROOT, docFiles, read, workspaceEntries } from '../../lib/files.js';

// `EPHEMERA_UPDATE_DOCS=1 npx vitest run --project unit tools/docs/` rewrites included snippets
// from their source files instead of failing.
const UPDATE = process.env.EPHEMERA_UPDATE_DOCS === '1';
const CODE_LANGS = new Set(['ts', 'typescript', 'js', 'javascript', 'mjs']);
const files = docFiles();

describe('docs: snippets included from files are identical to the files', () => {
  for (const file of files) {
    const included = codeBlocks(read(file)).filter((b) => b.marker?.kind === 'include');
    if (included.length === 0) continue;
    it(file, () => {
      const doc = read(file);
      const blocks = codeBlocks(doc).filter((b) => b.marker?.kind === 'include');
      const replacements: { block: CodeBlock; code: string }[] = [];
      const stale: string[] = [];
      for (const block of blocks) {
        const m = block.marker as { path: string; region?: string };
        const source = read(m.path);
        const want = m.region ? extractRegion(source, m.region) : wholeFile(source);
        if (block.code !== want) {
          stale.push(`${file}:${block.line} differs from ${m.path}${m.region ? `#${m.region}` : ''}`);
          replacements.push({ block, code: want });
        }
      }
      if (UPDATE && replacements.length) {
        writeFileSync(join(ROOT, file), replaceBlocks(doc, replacements));
        return;
      }
      expect(stale, 'run EPHEMERA_UPDATE_DOCS=1 npx vitest run --project unit tools/docs/ to refresh them').toEqual([]);
    });
  }
});

describe('docs: every TypeScript/JavaScript block in docs/ and examples/ is checked', () => {
  for (const file of files.filter((f) => f.startsWith('docs/') || f.startsWith('examples/'))) {
    it(file, () => {
      const unchecked = codeBlocks(read(file))
        .filter((b) => CODE_LANGS.has(b.lang) && b.marker === undefined)
        .map((b) => `${file}:${b.line}`);
      expect(
        unchecked,
        'mark each block with <!-- include: path#region -->, <!-- example: run|typecheck|sketch -->',
      ).toEqual([]);
    });
  }
});

describe('docs: relative links resolve', () => {
  for (const file of files) {
    it(file, () => {
      const broken: string[] = [];
      for (const { target, line } of links(read(file))) {
        if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue; // http:, https:, mailto:
        const [path, anchor] = target.split('#') as [string, string | undefined];
        const abs = path === '' ? join(ROOT, file) : resolve(ROOT, dirname(file), decodeURIComponent(path));
        if (!abs.startsWith(ROOT + '/') || !existsSync(abs)) {
          broken.push(`${file}:${line}: ${target} (no such file)`);
          continue;
        }
        if (anchor && abs.endsWith('.md') && statSync(abs).isFile()) {
          const doc = read(relative(ROOT, abs));
          if (!anchors(doc).has(anchor)) broken.push(`${file}:${line}: ${target} (no heading #${anchor})`);
        }
      }
      expect(broken).toEqual([]);
    });
  }
});

interface Example {
  file: string;
  block: CodeBlock;
  run: boolean;
  path: string;
}

const SNIPPETS = join(ROOT, 'tools/docs/.snippets');

/** Writes every `example: run|typecheck` block into tools/docs/.snippets as a module. */
function writeExamples(): Example[] {
  rmSync(SNIPPETS, { recursive: true, force: true });
  mkdirSync(SNIPPETS, { recursive: true });
  writeFileSync(join(SNIPPETS, 'package.json'), '{ "type": "module", "private": true }\n');
  const entries = workspaceEntries();
  const out: Example[] = [];
  for (const file of files) {
    for (const block of codeBlocks(read(file))) {
      const kind = block.marker?.kind;
      if (kind !== 'run' && kind !== 'typecheck') continue;
      const name = `${file.replace(/[^A-Za-z0-9]+/g, '_')}_L${block.line}.${block.lang.startsWith('j') || block.lang === 'mjs' ? 'mjs' : 'ts'}`;
      const path = join(SNIPPETS, name);
      // Workspace packages resolve to their sources (as vitest's aliases do), so a snippet is
      // checked against the code of this checkout, not against a build.
      const code = block.code.replace(
        /(from\s+|import\s*\(\s*)(['"])(@[\w-]+\/[\w-]+)\2/g,
        (all, pre: string, q: string, spec: string) => {
          const entry = entries.get(spec);
          if (!entry) return all;
          let rel = relative(SNIPPETS, join(ROOT, entry));
          if (!rel.startsWith('.')) rel = `./${rel}`;
          return `${pre}${q}${rel}${q}`;
        },
      );
      writeFileSync(path, `${code}\nexport {};\n`);
      out.push({ file, block, run: kind === 'run', path });
    }
  }
  return out;
}

function tsc(project: string): Promise<{ code: number; output: string }> {
  const bin = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  return new Promise((res) => {
    execFile(
      process.execPath,
      [bin, '-p', project],
      { cwd: ROOT, timeout: 170_000, maxBuffer: 16 << 20 },
      (err, stdout, stderr) => {
        res({ code: err ? ((err as { code?: number }).code ?? 1) : 0, output: `${stdout}${stderr}` });
      },
    );
  });
}

describe('docs: examples typecheck and run', () => {
  const examples = writeExamples();

  it('finds the marked examples', () => {
    expect(examples.length).toBeGreaterThan(0);
  });

  it('typecheck (tsc --noEmit over every marked TypeScript example and tools/docs itself)', async () => {
    const ts = examples.filter((e) => e.path.endsWith('.ts'));
    // tools/docs' own code too: config.test.ts assigns the driver's CONFIG_SCHEMA to the shape
    // the generator reads, so a schema change the generator cannot render fails here.
    const own = ['lib', 'test/unit'].flatMap((d) =>
      readdirSync(join(ROOT, 'tools/docs', d))
        .filter((f) => f.endsWith('.ts'))
        .map((f) => join(ROOT, 'tools/docs', d, f)),
    );
    const paths: Record<string, string[]> = {};
    for (const [name, entry] of workspaceEntries()) paths[name] = [relative(SNIPPETS, join(ROOT, entry))];
    writeFileSync(
      join(SNIPPETS, 'tsconfig.json'),
      JSON.stringify(
        {
          extends: '../../../tsconfig.base.json',
          compilerOptions: {
            noEmit: true,
            allowImportingTsExtensions: true,
            declaration: false,
            declarationMap: false,
            sourceMap: false,
            paths,
          },
          files: [...ts.map((e) => e.path), ...own].map((f) => relative(SNIPPETS, f)),
          // Ambient declarations packages keep in src/ (e.g. for an untyped dependency).
          include: ['packages', 'examples'].map((d) => `${relative(SNIPPETS, join(ROOT, d))}/*/src/**/*.d.ts`),
        },
        null,
        2,
      ),
    );
    const { code, output } = await tsc(join(SNIPPETS, 'tsconfig.json'));
    // Point failures back at the Markdown line.
    const located = output.replace(
      /tools\/docs\/\.snippets\/(\S+?)\((\d+),(\d+)\)/g,
      (all, name: string, l: string) => {
        const e = ts.find((x) => x.path.endsWith(`/${name}`));
        return e ? `${e.file}:${e.block.line + Number(l)}` : all;
      },
    );
    expect(located.trim(), `tsc exit ${code}`).toBe('');
    expect(code).toBe(0);
  }, 180_000);

  for (const e of examples.filter((x) => x.run)) {
    it(`runs ${e.file}:${e.block.line}`, async () => {
      const log = vi.spyOn(console, 'log').mockImplementation(() => undefined);
      try {
        await import(pathToFileURL(e.path).href);
      } finally {
        log.mockRestore();
      }
    }, 60_000);
  }
});
