// A vitest reporter that writes, next to the JSON report, a short plain-text digest of what went
// wrong: failed and skipped tests, test files and suites whose hooks or collection failed, and unhandled
// errors (which vitest's JSON report does not carry at all). tools/lib/test-summary.mjs prints the
// digest right before the summary line, so the tail of a CI log says why a run failed.
// Enabled by vitest.config.ts when VITEST_JSON_REPORT is set; writes VITEST_JSON_REPORT.digest.txt.
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, relative } from 'node:path';

const MAX_ERROR_LINES = 12;

function describeError(err) {
  if (!err) return ['(no error object)'];
  const head = `${err.name ?? 'Error'}: ${err.message ?? String(err)}`;
  const stack = typeof err.stack === 'string' ? err.stack.split('\n').filter((l) => /^\s+at /.test(l)) : [];
  const lines = [...head.split('\n'), ...stack.slice(0, 4)];
  // vitest's "Worker forks emitted error" keeps the worker's exit code or signal in its cause.
  for (let c = err.cause, depth = 0; c && depth < 3; c = c.cause, depth++)
    lines.push(`caused by ${c.name ?? 'Error'}: ${c.message ?? String(c)}`);
  return lines.slice(0, MAX_ERROR_LINES).map((l) => `    ${l}`);
}

export default class DigestReporter {
  constructor(options = {}) {
    this.outputFile = options.outputFile;
  }

  onTestRunEnd(testModules, unhandledErrors, reason) {
    if (!this.outputFile) return;
    const out = [];
    for (const mod of testModules) {
      const file = relative(process.cwd(), mod.moduleId);
      const project = mod.project?.name ? `[${mod.project.name}] ` : '';
      const moduleErrors = mod.errors?.() ?? [];
      if (mod.state() === 'failed' || moduleErrors.length > 0) {
        out.push(`FILE ${project}${file}: ${mod.state()}`);
        for (const e of moduleErrors) out.push(...describeError(e));
      }
      // A failed beforeAll/afterAll belongs to its suite; its tests then show as skipped.
      for (const suite of mod.children.allSuites()) {
        const errors = suite.errors?.() ?? [];
        if (errors.length === 0) continue;
        out.push(`SUITE ${project}${file} > ${suite.fullName}: a hook failed`);
        for (const e of errors) out.push(...describeError(e));
      }
      for (const test of mod.children.allTests()) {
        const r = test.result();
        if (r.state === 'failed') {
          out.push(`FAIL ${project}${file} > ${test.fullName}`);
          for (const e of r.errors ?? []) out.push(...describeError(e));
        } else if (r.state === 'skipped' || r.state === 'pending') {
          out.push(`${r.state.toUpperCase()} ${project}${file} > ${test.fullName}${r.note ? ` (${r.note})` : ''}`);
        }
      }
    }
    for (const e of unhandledErrors) {
      out.push('UNHANDLED ERROR');
      out.push(...describeError(e));
    }
    if (reason !== 'passed') out.push(`run ended: ${reason}`);
    mkdirSync(dirname(this.outputFile), { recursive: true });
    writeFileSync(this.outputFile, out.length ? `${out.join('\n')}\n` : '');
  }
}
