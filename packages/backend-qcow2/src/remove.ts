// Removing disks: refused while a process holds the file open (BusyError, retried until the
// timeout), renamed away first so the disk vanishes atomically; and the sweep of what dead
// removes and creates left behind.
import { randomBytes } from 'node:crypto';
import { rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import {
  BusyError,
  diskId,
  processesHoldingOpen as openers,
  retryWhileBusy,
  type DiskRef,
  type RemoveOptions,
} from '@ephemera/image-backend';
import type { Qcow2Context } from './context.js';
import { toContractError } from './errors.js';
import { errno } from './fsutil.js';
import { NAME, TEMP_MAX_AGE_MS } from './layout.js';

/** Removes a disk: false when it does not exist, BusyError while it is being created or open. */
export async function remove(ctx: Qcow2Context, disk: DiskRef, options: RemoveOptions = {}): Promise<boolean> {
  const id = diskId(disk);
  return retryWhileBusy(
    async () => {
      if (ctx.store.pending.has(id)) throw new BusyError(`${id} is being created`, { backend: NAME, diskId: id });
      const loc = await ctx.store.locate(id);
      if (!loc) return false;
      const pids = await openers(loc.path);
      if (pids.length > 0)
        throw new BusyError(`${id} is open (${loc.path}) by pid ${pids.join(', ')}`, { backend: NAME, diskId: id });
      const trash = join(ctx.store.instancesDir, `.trash-${id}-${randomBytes(6).toString('hex')}`);
      try {
        await rename(loc.dir, trash);
      } catch (e) {
        if (errno(e) === 'ENOENT') return false;
        throw toContractError(e, { backend: NAME, diskId: id });
      }
      await rm(trash, { recursive: true, force: true });
      return true;
    },
    { timeoutMs: options.busyTimeoutMs ?? ctx.busyTimeoutMs, ...(options.signal ? { signal: options.signal } : {}) },
  );
}

/**
 * Deletes directories of removes that died midway, and of creates older than
 * max(TEMP_MAX_AGE_MS, olderThanMs); appends their paths to `removed`.
 */
export async function sweepLeftovers(ctx: Qcow2Context, olderThanMs: number, removed: string[]): Promise<void> {
  const now = Date.now();
  for (const name of await ctx.store.entries()) {
    const trash = name.startsWith('.trash-');
    if (!trash && !name.startsWith('.tmp-')) continue;
    const path = join(ctx.store.instancesDir, name);
    try {
      if (!trash && now - (await stat(path)).mtimeMs < Math.max(TEMP_MAX_AGE_MS, olderThanMs)) continue;
      await rm(path, { recursive: true, force: true });
      removed.push(path);
    } catch {
      // raced with its owner
    }
  }
}
