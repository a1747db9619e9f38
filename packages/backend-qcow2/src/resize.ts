// Changing a disk in place: grow it, or flatten an overlay so it no longer needs its base.
import {
  InvalidArgumentError,
  UnsupportedOperationError,
  assertValidSize,
  diskId,
  throwIfAborted,
  type DiskRef,
  type OperationOptions,
} from '@ephemera/image-backend';
import type { Qcow2Context } from './context.js';
import { toContractError } from './errors.js';
import { NAME, qemuCall, roundUp } from './layout.js';
import { readQcow2Header } from './qcow2-header.js';

export async function resize(
  ctx: Qcow2Context,
  disk: DiskRef,
  sizeBytes: number,
  options: OperationOptions = {},
): Promise<void> {
  const id = diskId(disk);
  assertValidSize(sizeBytes);
  const { signal } = options;
  throwIfAborted(signal, 'resize');
  const loc = await ctx.store.locate(id);
  if (!loc) throw ctx.store.notFound(id);
  const info = await ctx.store.describe(loc);
  const current = info.sizeBytes;
  // qemu-img resize opens an encrypted qcow2 with its key, which resize is not given.
  if (info.encrypted)
    throw new UnsupportedOperationError('encryption', 'resize of an encrypted disk', { backend: NAME, diskId: id });
  if (sizeBytes < current)
    throw new InvalidArgumentError(
      'sizeBytes',
      `${sizeBytes} is smaller than the disk (${current} bytes): shrinking is not supported`,
      { backend: NAME, diskId: id },
    );
  const size = roundUp(sizeBytes, 512);
  if (size === current) return;
  const thick = !ctx.thin;
  if (thick) await ctx.store.checkFree(size - current, id);
  try {
    await ctx.qemu.resize(loc.path, size, {
      format: loc.format,
      ...(thick && (loc.format === 'raw' || !(await ctx.store.describe(loc)).parent)
        ? { preallocation: ctx.preallocation }
        : {}),
      ...(signal ? { signal } : {}),
    });
  } catch (e) {
    throw toContractError(e, { backend: NAME, diskId: id, signal });
  }
}

/**
 * Copies the base's data into the overlay (`qemu-img rebase -b ''`, safe mode) so the disk no
 * longer depends on the cache. A disk with internal snapshots is refused (their unallocated
 * clusters would lose the data they read from the base): remove the snapshots first.
 */
export async function flatten(ctx: Qcow2Context, disk: DiskRef, options: OperationOptions = {}): Promise<void> {
  const id = diskId(disk);
  const { signal } = options;
  throwIfAborted(signal, 'flatten');
  const loc = await ctx.store.locate(id);
  if (!loc) throw ctx.store.notFound(id);
  if (loc.format !== 'qcow2') return;
  const header = await readQcow2Header(loc.path);
  if (!header.backingFile) return;
  if (header.snapshots.length > 0)
    throw new InvalidArgumentError(
      'disk',
      `${id} has internal snapshots (${header.snapshots.map((s) => s.name).join(', ')}): remove them before flatten`,
      {
        backend: NAME,
        diskId: id,
      },
    );
  await qemuCall(
    id,
    () =>
      ctx.qemu.rebase(loc.path, {
        format: 'qcow2',
        backing: null,
        timeoutMs: ctx.convertTimeoutMs,
        ...(signal ? { signal } : {}),
      }),
    signal,
  );
}
