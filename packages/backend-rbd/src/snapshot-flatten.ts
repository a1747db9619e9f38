// The second half of a deferred direct snapshot: flatten the image made for Glance, then drop
// the temporary snapshot on the instance disk that it was cloned from.
import {
  ProgressReporter,
  diskId,
  throwIfAborted,
  type DiskRef,
  type FinishDirectSnapshotOptions,
} from '@ephemera/image-backend';
import { ImageNotFound, type Image, type IoCtx } from '@ephemera/ceph-rbd-napi';
import type { RbdContext } from './context.js';
import { directSnapshotArgs, dropTmpSnapshot } from './direct-snapshot.js';

/** Prefix of the temporary snapshot a direct snapshot takes on the disk (`<prefix><image id>`). */
export const DIRECT_SNAP_PREFIX = 'ephemera-direct-';

/**
 * See `RbdBackend.finishDirectSnapshot`. Nothing is recorded besides what Ceph already holds: a
 * temporary snapshot on the disk and a clone of it with a protected `snap` in the images pool
 * mean "flatten pending", on the cluster, so whichever host owns the disk can resume. librbd's
 * flatten is resumable (objects already copied up are skipped), so a killed one is simply rerun.
 * The running flatten cannot be interrupted (librbd's progress callback has no cancel here): the
 * signal is checked before it and before the snapshot is dropped.
 */
export async function finishDirectSnapshot(
  ctx: RbdContext,
  disk: DiskRef,
  options: FinishDirectSnapshotOptions,
): Promise<boolean> {
  const { ops } = ctx;
  const { id, ds, imageId, tmpSnap } = directSnapshotArgs(ctx, disk, options, 'finishDirectSnapshot');
  let did = false;
  const dsIo = await openDsPool(ctx, ds);
  try {
    // The dead finisher's client still owns the image's exclusive lock, and librbd waits for its
    // watch to time out (30 s) before breaking it: fence that client (60 s) instead.
    if (options.orphaned) await ops.evictLockOwners(imageId, dsIo); // only finishers ever take it
    let dest: Image;
    try {
      dest = await dsIo.open(imageId);
    } catch (e) {
      // No image: never made, or rolled back (`removeDirectSnapshot` owns what is left).
      if (e instanceof ImageNotFound) return false;
      throw e;
    }
    try {
      const parent = await dest.parent();
      if (parent && parent.pool === ops.cfg.pool && parent.image === id && parent.snap === tmpSnap) {
        throwIfAborted(options.signal, 'finishDirectSnapshot');
        const size = await dest.size();
        const progress = new ProgressReporter(options.onProgress);
        progress.report('flatten', 0, size);
        await dest.flatten({ onProgress: (p) => progress.report('flatten', Math.floor(p.fraction * size), size) });
        progress.finish(size, size);
        did = true;
      }
    } finally {
      await dest.close().catch(() => undefined);
    }
  } catch (e) {
    throw ops.translate(e, `${ds.pool}/${imageId}`, options.signal);
  } finally {
    await dsIo.close().catch(() => undefined);
  }
  throwIfAborted(options.signal, 'finishDirectSnapshot');
  return (await dropTmpSnapshot(ctx, id, tmpSnap)) || did;
}

/** See `RbdBackend.pendingDirectSnapshots`. */
export async function pendingDirectSnapshots(ctx: RbdContext, disk: DiskRef): Promise<string[]> {
  const ds = ctx.options.directSnapshot;
  if (!ds) return [];
  const id = diskId(disk);
  const snaps = await ctx.ops.withImage(id, { readOnly: true }, (img) => img.listSnapshots());
  const ids = snaps
    .filter((s) => s.namespace === 'user' && s.name.startsWith(DIRECT_SNAP_PREFIX))
    .map((s) => s.name.slice(DIRECT_SNAP_PREFIX.length));
  if (ids.length === 0) return [];
  const out: string[] = [];
  const dsIo = await openDsPool(ctx, ds);
  try {
    for (const imageId of ids) {
      // Usable (a protected `snap`): the snapshot returned to its caller. Without it, the
      // directSnapshot call died midway and its rollback (journal) removes everything.
      const img = await dsIo.open(imageId, { readOnly: true }).catch((e: unknown) => {
        if (e instanceof ImageNotFound) return undefined;
        throw ctx.ops.translate(e, `${ds.pool}/${imageId}`);
      });
      if (!img) continue;
      try {
        if ((await img.listSnapshots()).some((s) => s.name === 'snap' && s.protected)) out.push(imageId);
      } finally {
        await img.close().catch(() => undefined);
      }
    }
  } finally {
    await dsIo.close().catch(() => undefined);
  }
  return out;
}

/** Finishes every pending direct snapshot of the disk (before it is removed); none when it is gone. */
export async function finishPendingDirectSnapshots(ctx: RbdContext, disk: DiskRef): Promise<void> {
  if (!ctx.options.directSnapshot || !(await ctx.ops.exists(diskId(disk)))) return;
  for (const imageId of await pendingDirectSnapshots(ctx, disk)) await finishDirectSnapshot(ctx, disk, { imageId });
}

async function openDsPool(ctx: RbdContext, ds: NonNullable<RbdContext['options']['directSnapshot']>): Promise<IoCtx> {
  try {
    return await (await ctx.ops.connectAs(ds)).openIoCtx(ds.pool);
  } catch (e) {
    throw ctx.ops.translate(e, ds.pool);
  }
}
