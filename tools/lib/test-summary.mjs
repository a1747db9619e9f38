#!/usr/bin/env node
// Prints `N passed, N failed, N skipped` summed over every vitest project, from vitest's JSON
// report(s). Exits 1 when anything failed or a report is missing.
// Usage: test-summary.mjs [--setup-failed] REPORT.json [REPORT.json ...]
import { existsSync, readFileSync } from 'node:fs';

const args = process.argv.slice(2);
const setupFailed = args[0] === '--setup-failed';
const files = setupFailed ? args.slice(1) : args;
let passed = 0, failed = 0, skipped = 0, missing = 0;
for (const f of files) {
  if (!existsSync(f)) { missing += 1; continue; }
  const r = JSON.parse(readFileSync(f, 'utf8'));
  passed += r.numPassedTests ?? 0;
  failed += r.numFailedTests ?? 0;
  skipped += (r.numPendingTests ?? 0) + (r.numTodoTests ?? 0);
  // A test file that failed to load (syntax error, setup crash) has no tests but failed.
  for (const s of r.testResults ?? []) {
    if (s.status === 'failed' && (s.assertionResults ?? []).every((a) => a.status !== 'failed')) failed += 1;
  }
  if (r.success === false && failed === 0) failed += 1;
}
if (setupFailed || files.length === 0) failed += Math.max(1, missing);
else failed += missing;
console.log(`${passed} passed, ${failed} failed, ${skipped} skipped`);
process.exit(failed > 0 ? 1 : 0);
