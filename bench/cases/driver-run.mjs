// Runs bench/cases/driver-worker.mjs in a child process and watches its memory from outside.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { repo } from '../lib/util.mjs';

/**
 * The settings docs/embedding.md recommends for the process that runs the driver ("The driver
 * process's memory"): a 1 MiB V8 young generation and at most two glibc malloc arenas.
 */
export const RECOMMENDED_PROCESS = {
  execArgv: ['--max-semi-space-size=1'],
  env: { MALLOC_ARENA_MAX: '2' },
};
/** Node's and glibc's defaults, for comparison. */
export const DEFAULT_PROCESS = { execArgv: [], env: {} };

/**
 * Resolves with the worker's JSON result plus `observedPeakRssBytes` (VmHWM seen from outside).
 * `proc`: the worker's Node flags and environment (the recommended settings unless given).
 */
export function runDriverWorker(job, { timeoutMs = 3_600_000, proc = RECOMMENDED_PROCESS } = {}) {
  return new Promise((resolvePromise, reject) => {
    const argv = [...proc.execArgv, join(repo, 'bench', 'cases', 'driver-worker.mjs'), JSON.stringify(job)];
    const child = spawn(process.execPath, argv, {
      stdio: ['ignore', 'pipe', 'inherit'],
      cwd: repo,
      env: { ...process.env, ...proc.env },
    });
    let out = '';
    let peak = 0;
    let peakAnon = 0;
    const sample = setInterval(() => {
      try {
        const status = readFileSync(`/proc/${child.pid}/status`, 'utf8');
        const m = /^VmHWM:\s+(\d+)/m.exec(status);
        if (m) peak = Math.max(peak, Number(m[1]) * 1024);
        // No high-water mark exists for anonymous memory alone: sampled, so a lower bound.
        const a = /^RssAnon:\s+(\d+)/m.exec(status);
        if (a) peakAnon = Math.max(peakAnon, Number(a[1]) * 1024);
      } catch {}
    }, 200);
    const timer = setTimeout(() => child.kill('SIGTERM'), timeoutMs);
    child.stdout.on('data', (d) => (out += d));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearInterval(sample);
      clearTimeout(timer);
      const last = out.trim().split('\n').pop() ?? '';
      let parsed;
      try {
        parsed = JSON.parse(last);
      } catch {
        reject(new Error(`driver worker exited ${code ?? signal} without a result: ${out.slice(-500)}`));
        return;
      }
      if (parsed.error) reject(new Error(`driver worker: ${parsed.error}`));
      else resolvePromise({ ...parsed, observedPeakRssBytes: peak, observedPeakAnonBytes: peakAnon });
    });
  });
}
