/**
 * A private, throwaway glance-api (Debian's, keystone-less with trusted identity headers
 * (`ContextMiddleware` without `auth_token`: use the `IdentityHeaders` provider), sqlite, two `file` stores `fast` and
 * `slow`, copy-image enabled) in a temp dir on a free port. Used where a test must break or tamper
 * with Glance without disturbing the shared stack's Glance.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
// The same keystone-less config as the dev stack's Glance, with file stores and identity headers.
import { glanceConfigFiles } from '../../../../tools/lib/stack/glance-config.mjs';

const run = promisify(execFile);

export interface PrivateGlance {
  url: string;
  port: number;
  dir: string;
  /** Data directories of the two file stores. */
  storeDirs: { fast: string; slow: string };
  process: ChildProcess;
  /** SIGKILL glance-api (the test's way to "stop Glance mid-download"). */
  kill(): Promise<void>;
  /** Kill it (if alive) and remove the temp dir. */
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/** Start a private glance-api; resolves when `/healthcheck` answers 200 (about 2-5 s). */
export async function startPrivateGlance(): Promise<PrivateGlance> {
  const dir = await mkdtemp(join(tmpdir(), 'ephemera-glance-'));
  const port = await freePort();
  const fast = join(dir, 'fast');
  const slow = join(dir, 'slow');
  for (const d of [fast, slow, join(dir, 'staging'), join(dir, 'tasks'), join(dir, 'lock')])
    await mkdir(d, { recursive: true });
  const conf = join(dir, 'glance-api.conf');
  const files = glanceConfigFiles({
    host: '127.0.0.1',
    port,
    dir,
    db: join(dir, 'glance.sqlite'),
    defaults: [
      'enabled_backends = fast:file, slow:file',
      'enabled_import_methods = [glance-direct,web-download,copy-image]',
      `log_file = ${join(dir, 'glance-api.log')}`,
    ],
    sections: [
      '[glance_store]\ndefault_backend = fast',
      `[fast]\nfilesystem_store_datadir = ${fast}`,
      `[slow]\nfilesystem_store_datadir = ${slow}`,
      `[os_glance_staging_store]\nfilesystem_store_datadir = ${join(dir, 'staging')}`,
      `[os_glance_tasks_store]\nfilesystem_store_datadir = ${join(dir, 'tasks')}`,
    ],
    context: 'headers',
  });
  for (const [name, text] of Object.entries(files)) await writeFile(join(dir, name), text);
  await run('glance-manage', ['--config-file', conf, 'db_sync'], { timeout: 120_000 });
  const child = spawn('glance-api', ['--config-file', conf], { stdio: ['ignore', 'ignore', 'pipe'], detached: false });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-4000);
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const url = `http://127.0.0.1:${port}`;
  const kill = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  };
  const stop = async (): Promise<void> => {
    await kill();
    await rm(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) {
      await stop();
      throw new Error(`glance-api exited with ${child.exitCode}: ${stderr}`);
    }
    try {
      const res = await fetch(`${url}/healthcheck`, { signal: AbortSignal.timeout(2_000) });
      await res.arrayBuffer();
      if (res.status === 200) break;
    } catch {
      /* not yet */
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`glance-api did not answer within 60 s: ${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return { url, port, dir, storeDirs: { fast, slow }, process: child, kill, stop };
}
