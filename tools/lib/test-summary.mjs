#!/usr/bin/env node
// Prints `N passed, N failed, N skipped` summed over every vitest project, from vitest's JSON
// report(s). Exits 1 when anything failed or a report is missing.
// Usage: test-summary.mjs [--setup-failed] REPORT.json [REPORT.json ...]
import { existsSync, readFileSync } from 'node:fs';

const args = process.argv.slice(2);
const setupFailed = args[0] === '--setup-failed';
const files = setupFailed ? args.slice(1) : args;
let passed = 0,
  failed = 0,
  skipped = 0,
  missing = 0;
for (const f of files) {
  if (!existsSync(f)) {
    missing += 1;
    continue;
  }
  // The digest (tools/lib/vitest-digest-reporter.mjs): failed/skipped tests, file errors and
  // unhandled errors, so that the tail of the log says what went wrong.
  const digest = `${f}.digest.txt`;
  if (existsSync(digest)) {
    const lines = readFileSync(digest, 'utf8').split('\n').filter(Boolean);
    if (lines.length) {
      console.error(`${f}: what did not pass`);
      for (const l of lines.slice(0, 80)) console.error(`  ${l}`);
      if (lines.length > 80) console.error(`  ... ${lines.length - 80} more lines in ${digest}`);
    }
  }
  const r = JSON.parse(readFileSync(f, 'utf8'));
  const fileFailed = failed;
  passed += r.numPassedTests ?? 0;
  failed += r.numFailedTests ?? 0;
  skipped += (r.numPendingTests ?? 0) + (r.numTodoTests ?? 0);
  // A test file that failed to load (syntax error, setup crash) has no tests but failed.
  for (const s of r.testResults ?? []) {
    if (s.status === 'failed' && (s.assertionResults ?? []).every((a) => a.status !== 'failed')) failed += 1;
  }
  if (r.success === false && failed === fileFailed) failed += 1;
  // The runner's exit code, when tools/test kept it (REPORT.exit): vitest exits non-zero on
  // unhandled errors (e.g. a rejection after a test ended) that its JSON report does not count.
  const exitFile = `${f}.exit`;
  if (existsSync(exitFile)) {
    const code = Number(readFileSync(exitFile, 'utf8').trim());
    if (code !== 0 && fileFailed === failed) {
      failed += 1;
      console.error(`${f}: the runner exited ${code} with no failed test in its report (unhandled error?)`);
    }
  }
}
if (setupFailed || files.length === 0) failed += Math.max(1, missing);
else failed += missing;
console.log(`${passed} passed, ${failed} failed, ${skipped} skipped`);
process.exit(failed > 0 ? 1 : 0);
