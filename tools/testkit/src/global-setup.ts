/**
 * vitest globalSetup of the `integration` and `e2e` projects: brings the dev stack up with
 * `bash tools/stack up` (idempotent: a healthy stack is reused in well under a second; concurrent
 * calls serialise on the stack's lock) and exports EPHEMERA_STACK_DIR so test workers find it.
 * It never skips: when the stack cannot come up, it throws with the reason (the failing service
 * and the tail of its log), and the tests do not run.
 * The stack is left up afterwards (`tools/test` takes it down when it brought it up).
 */
import { execFile } from 'node:child_process';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadStack, stackDir } from './stack.js';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

export default async function setup(): Promise<void> {
  const dir = stackDir();
  process.env.EPHEMERA_STACK_DIR = dir;
  const started = Date.now();
  const out = await new Promise<string>((resolvePromise, reject) => {
    execFile(
      'bash',
      [join(repo, 'tools', 'stack'), 'up'],
      { timeout: 15 * 60_000, maxBuffer: 16 << 20, env: { ...process.env, EPHEMERA_STACK_DIR: dir } },
      (err, stdout, stderr) => {
        if (err) {
          const why = err.killed ? 'timed out after 15 min' : `exit ${err.code ?? err.signal}`;
          reject(
            new Error(
              `The dev stack could not come up (tools/stack up: ${why}):\n${String(stderr).trim() || String(stdout).trim() || err.message}`,
            ),
          );
        } else resolvePromise(String(stdout));
      },
    );
  });
  const info = loadStack();
  process.stderr.write(
    `[global-setup] ${out.trim().split('\n')[0]} (${Date.now() - started} ms; glance ${info.glance.url}, accel ${info.libvirt.accel})\n`,
  );
}
