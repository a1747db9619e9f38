import { realpath } from 'node:fs/promises';
import { CommandError, run } from './exec.js';

/** One attached loop device, from `losetup --json --list`. */
export interface LoopDevice {
  /** `/dev/loopN`. */
  name: string;
  /** The backing file or block device. */
  backFile: string;
  offset: number;
  /** 0 = up to the end of the backing file. */
  sizeLimit: number;
  readOnly: boolean;
  autoclear: boolean;
}

const TIMEOUT = 30_000;

/** Every attached loop device on the host. */
export async function listLoops(): Promise<LoopDevice[]> {
  const { stdout } = await run('losetup', ['--json', '--list'], { timeoutMs: TIMEOUT });
  if (stdout.trim() === '') return [];
  const parsed = JSON.parse(stdout) as { loopdevices?: Record<string, unknown>[] };
  return (parsed.loopdevices ?? []).map((d) => ({
    name: String(d.name),
    backFile: String(d['back-file'] ?? '').replace(/ \(deleted\)$/, ''),
    offset: Number(d.offset ?? 0),
    sizeLimit: Number(d.sizelimit ?? 0),
    readOnly: d.ro === true || d.ro === '1',
    autoclear: d.autoclear === true || d.autoclear === '1',
  }));
}

/** Attaches a loop device over `bytes` bytes of `backing` starting at `offset`; returns `/dev/loopN`. */
export async function attachLoop(
  backing: string,
  offset: number,
  bytes: number,
  signal?: AbortSignal,
): Promise<string> {
  const { stdout } = await run(
    'losetup',
    ['--find', '--show', '--offset', String(offset), '--sizelimit', String(bytes), '--', backing],
    { timeoutMs: TIMEOUT, signal },
  );
  const dev = stdout.trim();
  if (!/^\/dev\/loop\d+$/.test(dev)) throw new Error(`losetup printed an unexpected device name: ${dev}`);
  return dev;
}

/** Detaches a loop device; a device that is already gone counts as detached. */
export async function detachLoop(device: string): Promise<void> {
  try {
    await run('losetup', ['--detach', device], { timeoutMs: TIMEOUT });
  } catch (e) {
    if (e instanceof CommandError && /No such device or address|No such file or directory/i.test(e.stderr)) return;
    throw e;
  }
}

/** Canonical path of a file or device (symlinks resolved); the input when it cannot be resolved. */
export async function canonical(path: string): Promise<string> {
  try {
    return await realpath(path);
  } catch {
    return path;
  }
}
