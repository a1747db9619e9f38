// Runs bench/cases/driver-worker.mjs in a child process and watches its memory from outside.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { repo } from '../lib/util.mjs';

/** Resolves with the worker's JSON result plus `observedPeakRssBytes` (VmHWM seen from outside). */
export function runDriverWorker(job, { timeoutMs = 3_600_000 } = {}) {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [join(repo, 'bench', 'cases', 'driver-worker.mjs'), JSON.stringify(job)], {
      stdio: ['ignore', 'pipe', 'inherit'],
      cwd: repo,
    });
    let out = '';
    let peak = 0;
    const sample = setInterval(() => {
      try {
        const m = /^VmHWM:\s+(\d+)/m.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
        if (m) peak = Math.max(peak, Number(m[1]) * 1024);
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
      else resolvePromise({ ...parsed, observedPeakRssBytes: peak });
    });
  });
}
