#!/usr/bin/env node
// API reports: one `packages/<name>/etc/<name>.api.md` per public (non-private) package, made by
// @microsoft/api-extractor from the BUILT `dist/index.d.ts` with the shared config beside this file.
//
//   node tools/api-report/api-report.mjs            check: exit 1 when a report is missing or out of date
//   node tools/api-report/api-report.mjs --update   (re)write every report (`npm run api:update` builds first)
//   ... [--root DIR] [NAME...]                      another repo root (tests), only these package folders
//
// Every package is analysed in one TypeScript program (api-extractor's shared CompilerState):
// loading @types/node and our .d.ts once instead of once per package keeps the check a few seconds.
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CompilerState, Extractor, ExtractorConfig } from '@microsoft/api-extractor';

const here = dirname(fileURLToPath(import.meta.url));
const configPath = join(here, 'api-extractor.json');
// api-extractor's own notices about the report file: this script says it in one line instead.
const REPORT_NOTICES = new Set([
  'console-api-report-not-copied',
  'console-api-report-copied',
  'console-api-report-created',
  'console-api-report-folder-missing',
  'console-api-report-diff',
  'console-api-report-unchanged',
]);

/** The public packages under `<root>/packages`: folders whose package.json is not `"private": true`. */
export function publicPackages(root) {
  const dir = join(root, 'packages');
  return readdirSync(dir, { withFileTypes: true })
    .filter((d) => d.isDirectory() && existsSync(join(dir, d.name, 'package.json')))
    .map((d) => ({
      folder: join(dir, d.name),
      json: JSON.parse(readFileSync(join(dir, d.name, 'package.json'), 'utf8')),
    }))
    .filter((p) => p.json.private !== true)
    .sort((a, b) => a.folder.localeCompare(b.folder));
}

/** The lines only in `a` (`-`) or only in `b` (`+`), in order: enough to show what changed in a report. */
function lineDiff(a, b, max = 40) {
  const x = a.split('\n');
  const y = b.split('\n');
  // LCS table; reports are a few hundred lines, so O(n*m) is fine.
  const t = Array.from({ length: x.length + 1 }, () => new Uint32Array(y.length + 1));
  for (let i = x.length - 1; i >= 0; i--)
    for (let j = y.length - 1; j >= 0; j--)
      t[i][j] = x[i] === y[j] ? t[i + 1][j + 1] + 1 : Math.max(t[i + 1][j], t[i][j + 1]);
  const out = [];
  let i = 0;
  let j = 0;
  while (i < x.length || j < y.length) {
    if (i < x.length && j < y.length && x[i] === y[j]) {
      i++;
      j++;
    } else if (i < x.length && (j === y.length || t[i + 1][j] >= t[i][j + 1])) out.push(`- ${x[i++]}`);
    else out.push(`+ ${y[j++]}`);
  }
  return out.length > max ? [...out.slice(0, max), `  ... ${out.length - max} more changed lines`] : out;
}

/**
 * Checks (or with `update`, rewrites) the API report of each public package under `root`.
 * Returns `{ ok, results: [{ name, report, status: 'ok'|'updated'|'changed'|'missing-dist'|'error', messages, diff }] }`;
 * `log` receives the human-readable lines.
 */
export function runApiReports({ root, update = false, only = [], log = console.log }) {
  const base = ExtractorConfig.loadFile(configPath);
  let packages = publicPackages(root);
  if (only.length > 0) {
    const unknown = only.filter((n) => !packages.some((p) => relative(join(root, 'packages'), p.folder) === n));
    if (unknown.length > 0)
      throw new Error(
        `api-report: no public package folder named ${unknown.join(', ')} under ${join(root, 'packages')}`,
      );
    packages = packages.filter((p) => only.includes(relative(join(root, 'packages'), p.folder)));
  }
  const tempRoot = mkdtempSync(join(tmpdir(), 'ephemera-api-report-'));
  const results = [];
  try {
    const configs = [];
    for (const p of packages) {
      const entry = join(p.folder, 'dist', 'index.d.ts');
      if (!existsSync(entry)) {
        results.push({
          name: p.json.name,
          report: undefined,
          status: 'missing-dist',
          messages: [`${relative(root, entry)} does not exist: build first (npx nx run-many -t build)`],
          diff: [],
        });
        continue;
      }
      const configObject = structuredClone(base);
      configObject.projectFolder = p.folder;
      // Compiler options are the repo's own (types, lib, NodeNext); only the entry point is analysed.
      configObject.compiler = {
        overrideTsconfig: { extends: join(root, 'tsconfig.base.json'), include: ['dist/index.d.ts'] },
      };
      configObject.apiReport.reportTempFolder = join(tempRoot, relative(join(root, 'packages'), p.folder));
      const config = ExtractorConfig.prepare({
        configObject,
        configObjectFullPath: configPath,
        packageJsonFullPath: join(p.folder, 'package.json'),
      });
      configs.push({ p, config });
    }
    const compilerState =
      configs.length > 0
        ? CompilerState.create(configs[0].config, {
            additionalEntryPoints: configs.map((c) => c.config.mainEntryPointFilePath),
          })
        : undefined;
    for (const { p, config } of configs) {
      const messages = [];
      const reportPath = config.reportConfigs.map((r) => join(config.reportFolder, r.fileName))[0];
      const before = existsSync(reportPath) ? readFileSync(reportPath, 'utf8') : undefined;
      if (update) mkdirSync(config.reportFolder, { recursive: true });
      Extractor.invoke(config, {
        compilerState,
        localBuild: update,
        messageCallback: (m) => {
          m.handled = true;
          if (m.logLevel === 'error' || m.logLevel === 'warning') {
            if (!REPORT_NOTICES.has(m.messageId)) {
              messages.push(
                `${m.logLevel}: ${m.sourceFilePath ? `${relative(root, m.sourceFilePath)}:${m.sourceFileLine}: ` : ''}${m.text}`,
              );
            }
          }
        },
      });
      const tempReport = join(config.reportTempFolder, config.reportConfigs[0].fileName);
      const after = existsSync(tempReport) ? readFileSync(tempReport, 'utf8') : '';
      const changed = before !== after;
      // api-extractor compares ignoring line ends and may then leave the file as it was.
      if (update && changed && after !== '') writeFileSync(reportPath, after);
      const status = messages.some((m) => m.startsWith('error:'))
        ? 'error'
        : changed
          ? update
            ? 'updated'
            : 'changed'
          : 'ok';
      results.push({
        name: p.json.name,
        report: relative(root, reportPath),
        status,
        messages,
        diff: changed ? lineDiff(before ?? '', after) : [],
      });
    }
  } finally {
    rmSync(tempRoot, { recursive: true, force: true });
  }
  for (const r of results) {
    if (r.status === 'ok') log(`${r.name}: ${r.report} is up to date`);
    else if (r.status === 'updated') log(`${r.name}: wrote ${r.report}`);
    else if (r.status === 'changed') {
      log(`${r.name}: the public API differs from ${r.report}${existsSync(join(root, r.report)) ? '' : ' (missing)'}:`);
      for (const l of r.diff) log(`    ${l}`);
      log(
        `  If the change is intended: run \`npm run api:update\` and commit ${r.report}; else keep it out of src/index.ts.`,
      );
    } else log(`${r.name}: the API report could not be made`);
    for (const m of r.messages) log(`  ${m}`);
  }
  const ok = results.every((r) => r.status === 'ok' || r.status === 'updated');
  return { ok, results };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const update = args.includes('--update');
  const ri = args.indexOf('--root');
  const root = ri >= 0 ? resolve(args[ri + 1]) : resolve(here, '../..');
  const only = args.filter((a, i) => !a.startsWith('--') && !(ri >= 0 && i === ri + 1));
  const started = Date.now();
  let ok;
  try {
    ({ ok } = runApiReports({ root, update, only }));
  } catch (err) {
    console.error(err instanceof Error ? err.message : String(err));
    process.exit(2);
  }
  console.log(`api-report: ${update ? 'updated' : 'checked'} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  if (!ok) {
    console.error(
      update
        ? 'api-report: some reports could not be written (above)'
        : 'api-report: public API changed without its report (above): run `npm run api:update` and commit packages/*/etc/*.api.md',
    );
    process.exit(1);
  }
}
