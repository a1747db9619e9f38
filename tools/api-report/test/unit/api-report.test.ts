import { appendFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { publicPackages, runApiReports, type ApiReportResult } from '../../api-report.mjs';

const repo = join(dirname(fileURLToPath(import.meta.url)), '../../../..');

const run = (root: string, update = false): { ok: boolean; results: ApiReportResult[]; lines: string[] } => {
  const lines: string[] = [];
  const r = runApiReports({ root, update, log: (l) => lines.push(l) });
  return { ...r, lines };
};

// A repo in a temp dir with the root's compiler options and one built package, so the check runs
// on a public API that the test changes (the real packages' reports are checked by `npm test`).
describe('tools/api-report: the API report check', () => {
  let root: string;
  const pkg = () => join(root, 'packages', 'demo');
  const dts = () => join(pkg(), 'dist', 'index.d.ts');

  beforeEach(() => {
    root = mkdtempSync(join(repo, 'node_modules', '.api-report-test-'));
    writeFileSync(join(root, 'tsconfig.base.json'), readFileSync(join(repo, 'tsconfig.base.json')));
    mkdirSync(join(pkg(), 'dist'), { recursive: true });
    writeFileSync(
      join(pkg(), 'package.json'),
      JSON.stringify({ name: '@ephemera/demo', version: '0.0.0', types: './dist/index.d.ts' }),
    );
    writeFileSync(dts(), '/** Adds. */\nexport declare function add(a: number, b: number): number;\n');
    mkdirSync(join(root, 'packages', 'secret', 'dist'), { recursive: true });
    writeFileSync(
      join(root, 'packages', 'secret', 'package.json'),
      JSON.stringify({ name: '@ephemera/secret', private: true }),
    );
    writeFileSync(join(root, 'packages', 'secret', 'dist', 'index.d.ts'), 'export declare const x: number;\n');
  });
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  it('lists only the packages that are not private', () => {
    expect(publicPackages(root).map((p) => p.json.name)).toEqual(['@ephemera/demo']);
  });

  it('fails on a missing report, writes it on update, then passes; update again changes nothing', () => {
    const missing = run(root);
    expect(missing.ok).toBe(false);
    expect(missing.results).toMatchObject([{ name: '@ephemera/demo', status: 'changed' }]);
    expect(existsSync(join(pkg(), 'etc', 'demo.api.md'))).toBe(false);

    expect(run(root, true)).toMatchObject({
      ok: true,
      results: [{ status: 'updated', report: 'packages/demo/etc/demo.api.md' }],
    });
    const report = readFileSync(join(pkg(), 'etc', 'demo.api.md'), 'utf8');
    expect(report).toContain('export function add(a: number, b: number): number;');

    expect(run(root)).toMatchObject({ ok: true, results: [{ status: 'ok' }] });
    expect(run(root, true)).toMatchObject({ ok: true, results: [{ status: 'ok' }] });
    expect(readFileSync(join(pkg(), 'etc', 'demo.api.md'), 'utf8')).toBe(report);
  });

  it('fails when an export is added, naming the package, the change and how to update', () => {
    run(root, true);
    const report = readFileSync(join(pkg(), 'etc', 'demo.api.md'), 'utf8');
    appendFileSync(
      dts(),
      'export declare class KeyedMutex {\n    run<T>(key: string, fn: () => Promise<T>): Promise<T>;\n}\n',
    );

    const r = run(root);
    expect(r.ok).toBe(false);
    expect(r.results).toMatchObject([{ name: '@ephemera/demo', status: 'changed' }]);
    expect(r.results[0]!.diff.join('\n')).toContain('+ export class KeyedMutex {');
    const out = r.lines.join('\n');
    expect(out).toContain('@ephemera/demo: the public API differs from packages/demo/etc/demo.api.md');
    expect(out).toContain('npm run api:update');
    // The check never rewrites the checked-in report.
    expect(readFileSync(join(pkg(), 'etc', 'demo.api.md'), 'utf8')).toBe(report);
  });

  it('fails when an export is removed or a signature changes', () => {
    run(root, true);
    writeFileSync(dts(), '/** Adds. */\nexport declare function add(a: number, b: number, c?: number): number;\n');
    const r = run(root);
    expect(r.ok).toBe(false);
    expect(r.results[0]!.diff).toEqual(
      expect.arrayContaining([
        '- export function add(a: number, b: number): number;',
        '+ export function add(a: number, b: number, c?: number): number;',
      ]),
    );
  });

  it('says to build first when dist/index.d.ts is missing', () => {
    rmSync(join(pkg(), 'dist'), { recursive: true });
    const r = run(root);
    expect(r.ok).toBe(false);
    expect(r.results).toMatchObject([{ name: '@ephemera/demo', status: 'missing-dist' }]);
    expect(r.results[0]!.messages.join('\n')).toMatch(/dist\/index\.d\.ts does not exist: build first/);
  });
});
