import { execFile } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const pexec = promisify(execFile);

/**
 * Runs qemu-img directly (test setup only), argv form. qemu-img 7.2's LUKS key-derivation benchmark
 * aborts with "Unable to get accurate CPU usage" when a benchmark round measures 0 ms of thread CPU
 * time, which the coarse CPU accounting of this VM sometimes reports: that one failure is retried.
 */
export async function qemuImg(...args: string[]): Promise<string> {
  for (let attempt = 1; ; attempt++) {
    try {
      const { stdout } = await pexec('qemu-img', args, {
        env: { PATH: process.env['PATH'] ?? '', LC_ALL: 'C' },
        timeout: 60_000,
      });
      return stdout;
    } catch (e) {
      const stderr = String((e as { stderr?: unknown }).stderr ?? '');
      if (attempt >= 5 || !stderr.includes('Unable to get accurate CPU usage')) throw e;
    }
  }
}

/** Virtual size as qemu-img reports it with an explicit driver. */
export async function qemuVirtualSize(path: string, driver: string): Promise<number> {
  const o = JSON.parse(await qemuImg('info', '--output=json', '-U', '-f', driver, path)) as { 'virtual-size': number };
  return o['virtual-size'];
}

export interface TempDir {
  path: string;
  file(name: string): string;
  remove(): Promise<void>;
}

export async function tempDir(prefix = 'qiw-'): Promise<TempDir> {
  const path = await mkdtemp(join(tmpdir(), prefix));
  return {
    path,
    file: (name) => join(path, name),
    remove: () => rm(path, { recursive: true, force: true }),
  };
}

/** Splits bytes into chunks of pseudo-random sizes (deterministic for a seed). */
export function* chunks(bytes: Uint8Array, seed: number, max = 70_000): Generator<Uint8Array> {
  let s = seed >>> 0 || 1;
  let off = 0;
  while (off < bytes.length) {
    s = (s * 1103515245 + 12345) >>> 0;
    const n = 1 + (s % max);
    yield bytes.subarray(off, Math.min(bytes.length, off + n));
    off += n;
  }
}

/** Live (not zombie) qemu-img processes whose command line mentions `needle` (from /proc). */
export async function qemuImgProcesses(needle: string): Promise<number[]> {
  const pids: number[] = [];
  for (const d of await readdir('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const cmd = await readFile(`/proc/${d}/cmdline`, 'utf8');
      const stat = await readFile(`/proc/${d}/stat`, 'utf8');
      if (cmd.includes('qemu-img') && cmd.includes(needle) && stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z')
        pids.push(Number(d));
    } catch {
      // gone
    }
  }
  return pids;
}
