import {
  AlreadyExistsError,
  BusyError,
  InvalidArgumentError,
  UnsupportedOperationError,
  diskId,
  isImageBackendError,
  retryWhileBusy,
  sleep,
  throwIfAborted,
  type DirectSnapshotOptions,
  type DirectSnapshotResult,
  type DiskRef,
  type RemoveDirectSnapshotOptions,
} from '@ephemera/image-backend';
import {
  ImageBusy,
  ImageExists,
  ImageHasSnapshots,
  ImageNotFound,
  ObjectNotFound,
  PermissionDenied,
  type IoCtx,
} from '@ephemera/ceph-rbd-napi';
import type { RbdContext } from './context.js';
import { NAME } from './errors.js';
import { formatRbdUrl } from './locations.js';
import { removeImageFully } from './rbd-ops.js';

/**
 * How long, after a killed process's direct snapshot, its temporary snapshot may still appear
 * when another client holds the disk's exclusive lock (a running QEMU). The killed client's
 * `rbd_snap_create` was then forwarded to that lock owner as a watch-notify; librbd sends it with
 * a 5 s notify timeout (`Notifier::NOTIFY_TIMEOUT`, src/librbd/watcher/Notifier.cc): the OSD
 * delivers it to the owner at once or not at all (no redelivery after the timeout), and the owner
 * then runs the snapshot creation itself (quiesce its I/O, a snapshot id from a monitor, the
 * header update: tens of ms). 5 s + 2 s for the owner's work. The killed client's own wait for
 * the owner's answer (`rbd_request_timed_out_seconds`, 30 s) bounds nothing: it is dead.
 */
export const PROXIED_SNAP_SETTLE_MS = 7_000;
/**
 * The same without another lock owner: the killed client did the work itself, and only OSD and
 * monitor requests it had already sent can still land (each step is sent after the previous one
 * answered), within the OSD's queueing time. 1 s was too short on a loaded 2-core host (two e2e
 * lanes at once: sigkill seed 919338292, kill 29, the snapshot landed after reconcile looked).
 */
export const LOCAL_SNAP_SETTLE_MS = 5_000;

/**
 * Features of a clone flattened later: no object map. A flatten killed midway leaves object-map
 * entries its client set before its copy-ups landed; the rerun skips objects the map says exist,
 * so those read as zeros (seen here: 3.5% of a 4 MiB image lost after a SIGKILL). Without the
 * map every object is checked on its OSD (the copy-up is conditional there), so the rerun is
 * exact. deep-flatten: the flatten must also free `snap` from the parent.
 */
export const DEFERRED_CLONE_FEATURES = ['layering', 'exclusive-lock', 'deep-flatten'] as const;

/** Validated arguments of `directSnapshot`/`removeDirectSnapshot`, and the temporary snapshot's name. */
export function directSnapshotArgs(ctx: RbdContext, disk: DiskRef, options: DirectSnapshotOptions, op: string) {
  const id = diskId(disk);
  const ds = ctx.options.directSnapshot;
  if (!ds) throw new UnsupportedOperationError('directSnapshot', 'directSnapshot', { backend: NAME, diskId: id });
  const imageId = options?.imageId;
  if (typeof imageId !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/.test(imageId))
    throw new InvalidArgumentError('options.imageId', 'expected an image id (letters, digits, ., _, -)', {
      backend: NAME,
      diskId: id,
    });
  throwIfAborted(options.signal, op);
  return { id, ds, imageId, tmpSnap: `ephemera-direct-${imageId}` };
}

/** See `RbdBackend.directSnapshot`. */
export async function directSnapshot(
  ctx: RbdContext,
  disk: DiskRef,
  options: DirectSnapshotOptions,
): Promise<DirectSnapshotResult> {
  const { ops } = ctx;
  const { id, ds, imageId, tmpSnap } = directSnapshotArgs(ctx, disk, options, 'directSnapshot');
  if (!(await ops.exists(id))) throw ops.notFound(id);
  let dsIo: IoCtx | undefined;
  let snapMade = false;
  let snapProtected = false;
  let destMade = false;
  try {
    const dsCluster = await ops.connectAs(ds);
    dsIo = await dsCluster.openIoCtx(ds.pool);
    await ops.withImage(id, {}, async (img) => {
      await img.createSnapshot(tmpSnap);
      snapMade = true;
    });
    let method: 'clone' | 'copy' = 'copy';
    // Clone + flatten when the images-pool client can read this pool.
    try {
      const srcViaDs = await dsCluster.openIoCtx(ops.cfg.pool);
      try {
        const probe = await srcViaDs.open(id, { snapshot: tmpSnap, readOnly: true });
        await probe.close();
        const cf = await ctx.cloneFormat();
        if (cf.format !== 2) {
          await ops.withImage(id, {}, (img) => img.protectSnapshot(tmpSnap));
          snapProtected = true;
        }
        await dsIo.clone({
          parent: { ioctx: srcViaDs, image: id, snap: tmpSnap },
          dest: { name: imageId },
          cloneFormat: cf.format === 2 ? 2 : 1,
          ...(options.deferFlatten ? { features: DEFERRED_CLONE_FEATURES } : {}),
        });
        destMade = true;
        // Deferred: the clone is usable now (its reads fall through to the temporary snapshot);
        // `finishDirectSnapshot` flattens it and drops that snapshot later.
        if (!options.deferFlatten) {
          const dest = await dsIo.open(imageId);
          try {
            await dest.flatten();
          } finally {
            await dest.close();
          }
        }
        method = 'clone';
      } finally {
        await srcViaDs.close().catch(() => undefined);
      }
    } catch (e) {
      if (!(e instanceof PermissionDenied || e instanceof ObjectNotFound)) throw e;
    }
    if (method === 'copy')
      await ops.copySnapshot(id, tmpSnap, dsIo, imageId, options.signal).then(() => (destMade = true));
    throwIfAborted(options.signal, 'directSnapshot');
    const dest = await dsIo.open(imageId);
    try {
      await dest.createSnapshot('snap');
      await dest.protectSnapshot('snap');
    } finally {
      await dest.close();
    }
    const url = formatRbdUrl({ fsid: ctx.fsid, pool: ds.pool, image: imageId, snapshot: 'snap' });
    if (method === 'clone' && options.deferFlatten) return { url, metadata: { method }, flattenPending: true };
    await ops.withImage(id, {}, async (img) => {
      if (snapProtected) await img.unprotectSnapshot(tmpSnap);
      await img.removeSnapshot(tmpSnap);
    });
    snapMade = false;
    return { url, metadata: { method } };
  } catch (e) {
    if (destMade && dsIo) await removeImageFully(dsIo, imageId).catch(() => undefined);
    if (snapMade) {
      await ops
        .withImage(id, {}, async (img) => {
          if (snapProtected) await img.unprotectSnapshot(tmpSnap).catch(() => undefined);
          await img.removeSnapshot(tmpSnap);
        })
        .catch(() => undefined);
    }
    if (e instanceof ImageExists)
      throw new AlreadyExistsError(`${ds.pool}/${imageId} already exists`, { backend: NAME, diskId: id, cause: e });
    throw ops.translate(e, id, options.signal);
  } finally {
    if (dsIo) await dsIo.close().catch(() => undefined);
  }
}

/** See `RbdBackend.removeDirectSnapshot`. */
export async function removeDirectSnapshot(
  ctx: RbdContext,
  disk: DiskRef,
  options: RemoveDirectSnapshotOptions,
): Promise<boolean> {
  const started = Date.now();
  const { ops } = ctx;
  const { id, ds, imageId, tmpSnap } = directSnapshotArgs(ctx, disk, options, 'removeDirectSnapshot');
  const retry = {
    timeoutMs: options.busyTimeoutMs ?? ops.cfg.busyTimeoutMs,
    ...(options.signal ? { signal: options.signal } : {}),
  };
  let removed = false;
  // 1. The image written for Glance first: it may be a clone child of the temporary snapshot.
  const dsIo = await (await ops.connectAs(ds)).openIoCtx(ds.pool).catch((e: unknown) => {
    throw ops.translate(e, `${ds.pool}/${imageId}`, options.signal);
  });
  try {
    let evicted = false;
    removed = await retryWhileBusy(async () => {
      try {
        await removeImageFully(dsIo, imageId);
        return true;
      } catch (e) {
        if (e instanceof ImageNotFound) {
          // Nothing there, or half-removed (directory entry without header): rbd_remove cleans that.
          try {
            await dsIo.remove(imageId);
            return true;
          } catch (e2) {
            if (e2 instanceof ImageNotFound) return false;
            throw ops.translate(e2, `${ds.pool}/${imageId}`, options.signal);
          }
        }
        if (e instanceof ImageBusy && !evicted) {
          // Only the process that was making this snapshot ever watches the image: it is dead
          // (or this call is its own rollback, whose handles are closed). Its watch lingers
          // until osd_client_watch_timeout: evict it instead of waiting.
          evicted = true;
          await ops.evictWatchers(imageId, dsIo);
        }
        if (e instanceof ImageBusy || e instanceof ImageHasSnapshots)
          throw new BusyError(`${ds.pool}/${imageId} is busy: ${(e as Error).message}`, {
            backend: NAME,
            diskId: id,
            cause: e,
          });
        throw ops.translate(e, `${ds.pool}/${imageId}`, options.signal);
      }
    }, retry);
  } finally {
    await dsIo.close().catch(() => undefined);
  }
  // 2. The temporary snapshot on the disk.
  const dropTmpSnap = () => retryWhileBusy(() => dropTmpSnapshot(ctx, id, tmpSnap), retry);
  let snapGone = await dropTmpSnap();
  if (options.orphaned && !removed && !snapGone) {
    // The process may have died inside the snapshot creation, which may still land.
    const window = (await ops.lockHolders(id)).others ? PROXIED_SNAP_SETTLE_MS : LOCAL_SNAP_SETTLE_MS;
    while (!snapGone && Date.now() - started < window) {
      throwIfAborted(options.signal, 'removeDirectSnapshot');
      await sleep(Math.min(200, Math.max(0, window - (Date.now() - started))), options.signal);
      snapGone = await dropTmpSnap();
    }
  }
  return removed || snapGone;
}

/**
 * Drops the temporary snapshot `tmpSnap` of disk `id`, and a trash copy of it without children
 * (removed while the clone written from it existed, clone v2, and the clone removed since but not
 * purged: a kill in between). `true` if one went; `false` also when the disk is gone.
 */
export async function dropTmpSnapshot(ctx: RbdContext, id: string, tmpSnap: string): Promise<boolean> {
  const { ops } = ctx;
  try {
    return await ops.withImage(id, {}, async (img) => {
      const snaps = await img.listSnapshots();
      let dropped = false;
      for (const t of snaps.filter((x) => x.namespace === 'trash' && x.originalName === tmpSnap)) {
        const children = await img
          .snapshotChildren(t.id)
          .catch((e: unknown) => (e instanceof ImageNotFound ? [] : Promise.reject(e)));
        if (children.length === 0) dropped = (await ops.purgeTrashSnapshot(id, img, t)) || dropped;
      }
      const snap = snaps.find((x) => x.name === tmpSnap && x.namespace === 'user');
      if (!snap) return dropped;
      await ops.dropSnapshot(id, img, snap.name, snap.protected);
      return true;
    });
  } catch (e) {
    if (isImageBackendError(e, 'NOT_FOUND')) return false;
    throw e;
  }
}
