import {
  BackendUnavailableError,
  BusyError,
  formatOwner,
  ownerRecord,
  parseDiskId,
  parseOwner,
  retryWhileBusy,
  throwIfAborted,
  type DiskInfo,
  type DiskOwner,
  type NetworkHost,
  type OwnerStamp,
} from '@ephemera/image-backend';
import {
  connect,
  ImageBusy,
  ImageHasSnapshots,
  ImageNotFound,
  InvalidArgument,
  type Cluster,
  type Image,
  type IoCtx,
} from '@ephemera/ceph-rbd-napi';
import { blocklistAdd, busyAdvice, isOwnClient, registerOwnClient } from './clients.js';
import { NAME, diskNotFound, translateRbdError } from './errors.js';
import type { RbdUrl } from './locations.js';
import { MONITOR_FRESH_MS, MonitorProbe } from './monitor.js';
import type { ParentSnapshotFacts } from './parent-cache.js';
import { Window, isAllZero } from './stream.js';

/** The image metadata key of the owner record (`rbd image-meta get <pool>/<disk> ephemera.owner`). */
export const OWNER_KEY = 'ephemera.owner';

/** A snapshot as the binding lists it. */
export type RbdSnapshot = Awaited<ReturnType<Image['listSnapshots']>>[number];

/** How {@link RbdOps} reaches the cluster (no policy: the backend decides what to do). */
export interface RbdOpsConfig {
  pool: string;
  clientId: string;
  confPath: string;
  keyringPath?: string | undefined;
  connectTimeoutMs: number;
  busyTimeoutMs: number;
  blockBytes: number;
  inFlight: number;
  monitors: readonly NetworkHost[];
}

/**
 * librbd mechanics over `@ephemera/ceph-rbd-napi` for one pool, as Nova's `rbd_utils.RBDDriver`:
 * opening, removing fully (snapshots, trash snapshots, half-removed images, this client's stale
 * lock), watchers and lockers, reads and copies, the ceph CLI. Errors come out as the contract's.
 */
export class RbdOps {
  private lockCluster: Promise<{ cluster: Cluster; io: IoCtx }> | undefined;
  private readonly connections = new Map<string, Promise<Cluster>>();
  private readonly monitor: MonitorProbe;

  constructor(
    readonly cluster: Cluster,
    readonly io: IoCtx,
    readonly cfg: RbdOpsConfig,
  ) {
    registerOwnClient(cluster);
    this.monitor = new MonitorProbe(() => cluster.pingMonitor());
  }

  /** Binding errors as the contract's (see {@link translateRbdError}). */
  translate(e: unknown, id?: string, signal?: AbortSignal, phase?: 'create'): unknown {
    return translateRbdError(e, { clientId: this.cfg.clientId, id, signal, phase });
  }

  notFound(id: string): Error {
    return diskNotFound(this.cfg.pool, id);
  }

  /** Opens `id`, runs `fn`, closes; errors translated (ImageNotFound -> NotFoundError). */
  async withImage<T>(
    id: string,
    opts: { readOnly?: boolean },
    fn: (img: Image) => Promise<T>,
    signal?: AbortSignal,
  ): Promise<T> {
    let img: Image;
    try {
      img = await this.io.open(id, opts);
    } catch (e) {
      throw this.translate(e, id, signal);
    }
    try {
      return await fn(img);
    } catch (e) {
      throw this.translate(e, id, signal);
    } finally {
      await img.close().catch(() => undefined);
    }
  }

  /** The owner record of an open image (`null`: none, or not one of ours). */
  async readOwner(img: Image): Promise<DiskOwner | null> {
    return parseOwner(await img.metadataGet(OWNER_KEY));
  }

  /**
   * Writes the owner of the just-created image `id` (no-op without a stamp). Callers create the
   * image, then call this inside the block that removes the image on failure, so no image of a
   * failed create stays without an owner (a crash in between is undone by the journal's rollback).
   */
  async stampOwner(id: string, stamp: OwnerStamp | undefined): Promise<void> {
    if (!stamp) return;
    await this.withImage(id, {}, (img) => this.stampOwnerOn(img, id, stamp));
  }

  /** {@link stampOwner} on an image the caller has open read-write (one open fewer). */
  async stampOwnerOn(img: Image, id: string, stamp: OwnerStamp | undefined): Promise<void> {
    if (stamp) await img.metadataSet(OWNER_KEY, formatOwner(ownerRecord(parseDiskId(id)!, stamp)));
  }

  async exists(id: string): Promise<boolean> {
    try {
      const img = await this.io.open(id, { readOnly: true });
      await img.close();
      return true;
    } catch (e) {
      if (e instanceof ImageNotFound) return false;
      throw this.translate(e, id);
    }
  }

  async describe(id: string, img: Image): Promise<DiskInfo> {
    const ref = parseDiskId(id)!;
    const [size, parent, owner, secret] = await Promise.all([
      img.size(),
      img.parent(),
      this.readOwner(img),
      img.metadataGet('ephemera.secret'),
    ]);
    return {
      disk: ref,
      id,
      sizeBytes: size,
      format: 'raw',
      encrypted: secret !== undefined,
      owner,
      ...(parent
        ? { parent: `${parent.pool}/${parent.namespace ? `${parent.namespace}/` : ''}${parent.image}@${parent.snap}` }
        : {}),
    };
  }

  /** Opens `<pool>/<image>@<snapshot>` of another pool read-only and closes it again. */
  async probeSnapshot(u: RbdUrl): Promise<void> {
    await (await this.openSnapshot(u)).close();
  }

  /**
   * Id, size and protection of a parent snapshot (binding errors as they are). One open of the
   * parent: the listing, size and protection come from the header it read.
   */
  async parentSnapshot(u: RbdUrl): Promise<ParentSnapshotFacts> {
    const parentIo = await this.cluster.parentIoCtx(u.pool, '');
    const parent = await parentIo.open(u.image, { snapshot: u.snapshot, readOnly: true });
    try {
      const snap = (await parent.listSnapshots()).find((s) => s.name === u.snapshot && s.namespace === 'user');
      if (!snap) throw new ImageNotFound(2, 'image.snapList', `${u.pool}/${u.image}@${u.snapshot}`, 'no such snapshot');
      return { snapId: snap.id, size: snap.size, isProtected: snap.protected };
    } finally {
      await parent.close().catch(() => undefined);
    }
  }

  /** Opens `u`'s snapshot read-only (no watch, so read caps on its pool suffice); the caller closes it. */
  async openSnapshot(u: RbdUrl): Promise<Image> {
    const io = await this.cluster.parentIoCtx(u.pool, '');
    return io.open(u.image, { snapshot: u.snapshot, readOnly: true });
  }

  /** Copies `<id>@<snap>` into a new image `name` of `dest` (aio, zero blocks skipped). */
  async copySnapshot(
    id: string,
    snap: string,
    dest: IoCtx,
    name: string,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    const src = await this.io.open(id, { snapshot: snap, readOnly: true });
    let out: Image | undefined;
    const window = new Window(this.cfg.inFlight);
    try {
      const size = await src.size();
      await dest.create(name, size);
      out = await dest.open(name);
      for (let at = 0; at < size; at += this.cfg.blockBytes) {
        throwIfAborted(signal, 'directSnapshot');
        const block = await src.read(at, Math.min(this.cfg.blockBytes, size - at));
        if (isAllZero(block)) continue;
        const o = out;
        const pos = at;
        await window.push(() => o.write(pos, block));
      }
      await window.drain();
      await out.flush();
    } finally {
      await window.settle();
      if (out) await out.close().catch(() => undefined);
      await src.close().catch(() => undefined);
    }
  }

  /**
   * A cached connection as another client (e.g. the images-pool client of direct snapshots),
   * forgotten when it fails so the next call retries.
   */
  connectAs(c: { clientId: string; confPath: string; keyringPath?: string | undefined }): Promise<Cluster> {
    const key = JSON.stringify([c.clientId, c.confPath, c.keyringPath ?? null]);
    let p = this.connections.get(key);
    if (!p) {
      p = connect({
        confPath: c.confPath,
        clientId: c.clientId,
        ...(c.keyringPath ? { keyringPath: c.keyringPath } : {}),
        timeoutMs: this.cfg.connectTimeoutMs,
      }).then(registerOwnClient);
      this.connections.set(key, p);
      p.catch(() => this.connections.delete(key));
    }
    return p;
  }

  /**
   * Who holds the disk's exclusive lock: this client (`mine`, `client.<instanceId>`) and/or
   * others. Both false when it is unlocked, or the disk cannot be read (gone).
   */
  async lockHolders(id: string): Promise<{ mine: boolean; others: boolean }> {
    try {
      const self = `client.${this.cluster.instanceId()}`;
      const { lockers } = await this.withImage(id, { readOnly: true }, (img) => img.lockers());
      return { mine: lockers.some((l) => l.client === self), others: lockers.some((l) => l.client !== self) };
    } catch {
      return { mine: false, others: false };
    }
  }

  /** Blocklists (60 s) the clients watching `id` (in `io`, default this pool): monitor commands, `profile rbd` allows them. */
  evictWatchers(id: string, io: IoCtx = this.io): Promise<void> {
    return this.evict(id, io, async (img) =>
      (await img.watchers()).filter((w) => !isOwnClient(w.id)).map((w) => w.address),
    );
  }

  /** Blocklists (60 s) the clients holding `id`'s exclusive lock (in `io`, default this pool). */
  evictLockOwners(id: string, io: IoCtx = this.io): Promise<void> {
    return this.evict(id, io, async (img) =>
      (await img.lockers()).lockers.filter((l) => !isOwnClient(l.client)).map((l) => l.address),
    );
  }

  /** Blocklists (60 s) the addresses `of` reads from `id`, never this process's own clients; nothing when `id` cannot be read. */
  private async evict(id: string, io: IoCtx, of: (img: Image) => Promise<string[]>): Promise<void> {
    let addresses: string[] = [];
    try {
      const img = await io.open(id, { readOnly: true });
      try {
        addresses = await of(img);
      } finally {
        await img.close();
      }
    } catch {
      return;
    }
    for (const addr of addresses) await blocklistAdd(this, addr, 60).catch(() => undefined);
  }

  /**
   * The cluster's `require_min_compat_client`, or undefined when it cannot be read. Asked on the
   * open connection (a few ms), not with the ceph CLI (a process and a new connection, ~0.5 s).
   */
  async minCompatClient(): Promise<string | undefined> {
    try {
      return await this.cluster.requireMinCompatClient();
    } catch {
      return undefined;
    }
  }

  /**
   * Fails with `BackendUnavailableError` (within `connectTimeoutMs`) when no monitor answers. A
   * connected client clones and writes on its cached OSD sessions without monitors, but every new
   * client (QEMU's librbd opening the disk, qemu-img) needs one: without this check a spawn would
   * create the disk and then hang in the domain start until `client_mount_timeout`.
   */
  async requireMonitor(id?: string, freshMs = 0): Promise<void> {
    try {
      await this.monitor.check(freshMs);
    } catch (e) {
      const mons = this.cfg.monitors.map((m) => `${m.host}:${m.port}`).join(', ');
      throw new BackendUnavailableError(
        `the Ceph monitor is unreachable (${mons} did not answer within ${this.cfg.connectTimeoutMs} ms)${id ? `: nothing was created for ${id}` : ''}`,
        { backend: NAME, ...(id ? { diskId: id } : {}), cause: e },
      );
    }
  }

  /**
   * {@link requireMonitor} started now, settled: its error (if any) to throw later. A clone runs
   * beside it (a clone needs only the OSDs) and is removed again when no monitor answered. An
   * answer of the last {@link MONITOR_FRESH_MS} (a spawn's preflight) counts.
   */
  monitorCheck(id: string): Promise<{ error: unknown } | undefined> {
    return this.requireMonitor(id, MONITOR_FRESH_MS).then(
      () => undefined,
      (e: unknown) => ({ error: e }),
    );
  }

  /**
   * Removes the disk and its snapshots; retries while it is busy (watchers: a running or just
   * killed QEMU) up to `busyTimeoutMs`. A disk whose snapshot has clones is refused at once with
   * `BusyError`. A half-removed disk (directory entry without header) is cleaned too. True when
   * something was removed, false when nothing existed.
   */
  async removeDisk(
    id: string,
    options: { busyTimeoutMs?: number | undefined; signal?: AbortSignal | undefined } = {},
  ): Promise<boolean> {
    await this.checkNoChildren(id);
    return retryWhileBusy(
      async () => {
        try {
          let img: Image;
          try {
            // Read-only (no watch) to list the snapshots: a read-write open registers a header
            // watch, and a process killed while that WATCH op commits can leave a watch the OSD
            // never times out (Ceph tracker 58120, Pacific): see docs/operations.md. Only a disk
            // with snapshots to drop is opened read-write.
            img = await this.io.open(id, { readOnly: true });
          } catch (e) {
            if (!(e instanceof ImageNotFound)) throw e;
            // Not openable, but maybe half-removed (a kill inside rbd_remove: the directory entry
            // without a header, still listed): rbd_remove cleans that as `rbd rm` does, and
            // fails with ImageNotFound when nothing is there at all.
            try {
              await this.io.remove(id);
              return true;
            } catch (e2) {
              if (e2 instanceof ImageNotFound) return false;
              throw e2;
            }
          }
          let snaps: RbdSnapshot[];
          try {
            // User snapshots, and trash ones (checkNoChildren refused those with children).
            snaps = (await img.listSnapshots()).filter((s) => s.namespace === 'user' || s.namespace === 'trash');
          } finally {
            await img.close();
          }
          if (snaps.length) {
            const rw = await this.io.open(id);
            try {
              for (const s of snaps) {
                if (s.namespace === 'trash') await this.purgeTrashSnapshot(id, rw, s);
                else await this.dropSnapshot(id, rw, s.name, s.protected);
              }
            } finally {
              await rw.close();
            }
          }
          try {
            await this.io.remove(id);
          } catch (e) {
            // An exclusive lock this very client left behind (an image closed while the OSDs were
            // unreachable: the lock release timed out) cannot be broken by this client: librbd
            // refuses to blocklist itself. No handle of this backend still holds it: a live one
            // keeps a watch, which librbd checks before breaking the lock (removeOwnStaleLock).
            if (!(e instanceof ImageBusy) || !(await this.lockHolders(id)).mine) throw e;
            await this.removeOwnStaleLock(id);
          }
          return true;
        } catch (e) {
          if (e instanceof ImageNotFound) return false;
          if (e instanceof ImageHasSnapshots)
            throw new BusyError(`${id}: a snapshot appeared during removal`, { backend: NAME, diskId: id, cause: e });
          throw this.translate(e, id, options.signal);
        }
      },
      {
        timeoutMs: options.busyTimeoutMs ?? this.cfg.busyTimeoutMs,
        ...(options.signal ? { signal: options.signal } : {}),
      },
    ).catch(async (e: unknown) => {
      throw e instanceof BusyError && !options.signal?.aborted ? await this.busyWithWatchers(e, id) : e;
    });
  }

  /** Removes a partial image (and snapshots), waiting out our own lingering watches briefly. */
  async removeQuietly(id: string): Promise<void> {
    await this.removeDisk(id, { busyTimeoutMs: this.cfg.busyTimeoutMs }).catch(() => undefined);
  }

  /**
   * `e` with the disk's watchers named (address, client) and what to do when none of them is a
   * live client: a watch left by a process killed while registering it never times out on a
   * Pacific OSD (Ceph tracker 58120); re-peering its PG clears it (docs/operations.md).
   */
  private async busyWithWatchers(e: BusyError, id: string): Promise<BusyError> {
    let watchers: { address: string; id: number }[];
    let owner: DiskOwner | null = null;
    try {
      [watchers, owner] = await this.withImage(id, { readOnly: true }, (img) =>
        Promise.all([img.watchers(), this.readOwner(img).catch(() => null)]),
      );
    } catch {
      return e;
    }
    if (!watchers.length) return e;
    const list = watchers.map((w) => `client.${w.id} at ${w.address}`).join(', ');
    return new BusyError(
      `${this.cfg.pool}/${id} is busy: still watched by ${list} after the busy timeout. ${busyAdvice(owner)}`,
      { backend: NAME, diskId: id, cause: e },
    );
  }

  /**
   * Removes `id` through a second connection of the same user that does not blocklist on lock
   * breaks: librbd breaks the stale lock of this client only once its holder has no watch (a
   * watch the OSD kept lingers `osd_client_watch_timeout`, ~30 s, after the OSD returns: until
   * then this fails with ImageBusy and the caller retries). Without blocklisting, because the
   * holder is this process's own connection.
   */
  private async removeOwnStaleLock(id: string): Promise<void> {
    this.lockCluster ??= (async () => {
      const cluster = await connect({
        confPath: this.cfg.confPath,
        clientId: this.cfg.clientId,
        ...(this.cfg.keyringPath ? { keyringPath: this.cfg.keyringPath } : {}),
        timeoutMs: this.cfg.connectTimeoutMs,
        options: { rbd_blocklist_on_break_lock: 'false' },
      }).then(registerOwnClient);
      try {
        return { cluster, io: await cluster.openIoCtx(this.cfg.pool) };
      } catch (e) {
        await cluster.close().catch(() => undefined);
        throw e;
      }
    })();
    this.lockCluster.catch(() => (this.lockCluster = undefined));
    const { io } = await this.lockCluster;
    await io.remove(id);
  }

  /** Refuses (BusyError, no retry) a disk whose snapshots have clone children. */
  async checkNoChildren(id: string): Promise<void> {
    let img: Image;
    try {
      img = await this.io.open(id, { readOnly: true });
    } catch (e) {
      if (e instanceof ImageNotFound) return;
      throw this.translate(e, id);
    }
    try {
      for (const s of await img.listSnapshots()) {
        if (s.namespace === 'trash') {
          // A removed snapshot kept for its clone v2 children; one left without children (a
          // process killed before librbd purged it) is purged by removeDisk() instead.
          const children = await img.snapshotChildren(s.id).catch((e: unknown) => {
            if (e instanceof ImageNotFound) return []; // purged meanwhile
            throw e;
          });
          if (children.length > 0) {
            const names = children.map((c) => `${c.pool}/${c.image}`).join(', ');
            throw new BusyError(
              `${id} has clone (format 2) children (${names}) of a removed snapshot${s.originalName ? ` (${s.originalName})` : ''}: remove or flatten them first`,
              { backend: NAME, diskId: id },
            );
          }
          continue;
        }
        if (s.namespace !== 'user') continue; // format 2 children need no protection: check all
        const at = await this.io.open(id, { snapshot: s.name, readOnly: true });
        try {
          const children = await at.children();
          if (children.length > 0) {
            const names = children.map((c) => `${c.pool}/${c.image}`).join(', ');
            throw new BusyError(`${id}@${s.name} has clones (${names}): flatten or remove them first`, {
              backend: NAME,
              diskId: id,
            });
          }
        } finally {
          await at.close().catch(() => undefined);
        }
      }
    } catch (e) {
      throw this.translate(e, id);
    } finally {
      await img.close().catch(() => undefined);
    }
  }

  /** Unprotects (when protected, refusing with BusyError if it has clones) and removes a snapshot. */
  async dropSnapshot(id: string, img: Image, name: string, isProtected: boolean): Promise<void> {
    if (isProtected) {
      try {
        await img.unprotectSnapshot(name);
      } catch (e) {
        if (e instanceof ImageBusy)
          throw new BusyError(`${id}@${name} has clones: flatten or remove them first`, {
            backend: NAME,
            diskId: id,
            cause: e,
          });
        if (!(e instanceof InvalidArgument)) throw e; // InvalidArgument: not protected (any more)
      }
    }
    try {
      await img.removeSnapshot(name);
    } catch (e) {
      if (e instanceof ImageNotFound) return;
      throw e;
    }
  }

  /**
   * Removes a `trash` snapshot (by id: it has no usable name) that has no clone children left;
   * false when it was already gone. `BusyError` when it still has children.
   */
  async purgeTrashSnapshot(id: string, img: Image, snap: RbdSnapshot): Promise<boolean> {
    try {
      await img.removeSnapshotById(snap.id);
      return true;
    } catch (e) {
      if (e instanceof ImageNotFound) return false; // purged meanwhile (by librbd)
      if (e instanceof ImageBusy)
        throw new BusyError(
          `${id}: the removed snapshot ${snap.originalName ?? snap.name} still has clone (format 2) children`,
          { backend: NAME, diskId: id, cause: e },
        );
      throw e;
    }
  }

  /** Closes the extra connections (the stale-lock one, other clients'), then the main one. */
  async close(): Promise<void> {
    if (this.lockCluster) await (await this.lockCluster.catch(() => undefined))?.cluster.close().catch(() => undefined);
    for (const p of this.connections.values()) await (await p.catch(() => undefined))?.close().catch(() => undefined);
    await this.cluster.close();
  }
}

/** Unprotects and removes every user snapshot of `name`, then the image. */
export async function removeImageFully(io: IoCtx, name: string): Promise<void> {
  // Read-only first (no watch, see removeDisk()); read-write only when there are snapshots to drop.
  const ro = await io.open(name, { readOnly: true });
  let snaps: RbdSnapshot[];
  try {
    snaps = (await ro.listSnapshots()).filter((s) => s.namespace === 'user');
  } finally {
    await ro.close().catch(() => undefined);
  }
  if (snaps.length) {
    const img = await io.open(name);
    try {
      for (const s of snaps) {
        if (s.protected) await img.unprotectSnapshot(s.name).catch(() => undefined);
        await img.removeSnapshot(s.name).catch(() => undefined);
      }
    } finally {
      await img.close().catch(() => undefined);
    }
  }
  await io.remove(name);
}
