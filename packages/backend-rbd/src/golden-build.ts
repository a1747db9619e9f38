// Golden images, the mechanics: elect one builder in the cluster (a RADOS lock with a lease), build
// under a temporary name (import or convert, the checksum verified while streaming), record the
// metadata, snapshot, protect, rename; everyone else waits and clones. See golden.ts for the policy.
import { randomUUID } from 'node:crypto';
import {
  AbortedError,
  BusyError,
  ProgressReporter,
  formatRbdLocation,
  isImageBackendError,
  sleep,
  throwIfAborted,
  type CreateResult,
} from '@ephemera/image-backend';
import { ImageBusy, type IoCtx } from '@ephemera/ceph-rbd-napi';
import { cloneFromPlan } from './clone-image.js';
import type { RbdContext } from './context.js';
import { NAME } from './errors.js';
import {
  BUILDING_INFIX,
  GOLDEN_LOCK,
  GOLDEN_META,
  GOLDEN_SNAP,
  STALE_INFIX,
  builderLabel,
  goldenChecksum,
  goldenLockObject,
  goldenName,
  inspectGolden,
  type GoldenImageOptions,
} from './golden.js';
import { RAW_FORMATS, convertSource, importConverted, importRaw, type ImportJob } from './import.js';
import { RbdOps } from './rbd-ops.js';

/** Golden images of one backend: the concerns' context on the golden pool, and the timings. */
export interface GoldenContext {
  /** The backend's context with `ops` on the golden pool. */
  ctx: RbdContext;
  pool: string;
  leaseMs: number;
  waitTimeoutMs: number;
  pollMs: number;
}

/** Opens the golden pool's context once, on first use; a failed open is retried by the next call. */
export function goldenOpener(ctx: RbdContext, o: GoldenImageOptions): () => Promise<GoldenContext> {
  let opened: Promise<GoldenContext> | undefined;
  return () => {
    opened ??= openGolden(ctx, o).catch((e: unknown) => {
      opened = undefined;
      throw ctx.ops.translate(e);
    });
    return opened;
  };
}

/** Opens the golden pool (the instances' pool's ops when it is the same pool). */
export async function openGolden(ctx: RbdContext, o: GoldenImageOptions): Promise<GoldenContext> {
  const pool = o.pool ?? ctx.ops.cfg.pool;
  const ops =
    pool === ctx.ops.cfg.pool
      ? ctx.ops
      : new RbdOps(ctx.ops.cluster, await ctx.ops.cluster.openIoCtx(pool), { ...ctx.ops.cfg, pool });
  return {
    ctx: { ...ctx, ops },
    pool,
    leaseMs: o.leaseMs ?? 30_000,
    waitTimeoutMs: o.waitTimeoutMs ?? 3_600_000,
    pollMs: o.pollMs ?? 500,
  };
}

/**
 * Creates disk `job.id` as a clone of the image's golden image, building that first when it is
 * missing or unusable (half-built, another checksum). A golden image that disappears between the
 * check and the clone (gc, a rebuild elsewhere) is looked for once more.
 */
export async function createFromGolden(ctx: RbdContext, g: GoldenContext, job: ImportJob): Promise<CreateResult> {
  const name = goldenName(job.image.id)!;
  const checksum = goldenChecksum(job.image)!;
  for (let attempt = 0; ; attempt++) {
    const got = await ensureGolden(g, job, name, checksum);
    const url = { fsid: ctx.fsid, pool: g.pool, image: name, snapshot: GOLDEN_SNAP };
    const plan = { url, location: formatRbdLocation(url) };
    const outcome = await cloneFromPlan(ctx, job.id, job.image, plan, job.options, job.progress, job.started);
    if (outcome.kind === 'cloned') {
      await touch(g, name);
      const r = outcome.result;
      return { ...r, reason: `${r.reason}; golden image ${g.pool}/${name} ${got} (${job.reason})` };
    }
    if (attempt >= 1)
      throw new BusyError(`golden image ${g.pool}/${name} could not be cloned: ${outcome.reason}`, {
        backend: NAME,
        diskId: job.id,
      });
  }
}

/** Makes sure a usable golden image `name` exists; says how (`reused`, `built ...`, `built by ...`). */
async function ensureGolden(g: GoldenContext, job: ImportJob, name: string, checksum: string): Promise<string> {
  const { ops } = g.ctx;
  const { options, progress, image } = job;
  const lockOid = goldenLockObject(name);
  const look = () =>
    inspectGolden((n) => ops.io.open(n, { readOnly: true }), name, checksum).catch((e: unknown) => {
      throw ops.translate(e, name, options.signal);
    });
  const t0 = Date.now();
  let waitedFor: string | undefined;
  for (;;) {
    throwIfAborted(options.signal, 'createFromImage');
    const state = await look();
    if (state.kind === 'ready')
      return waitedFor ? `built by ${waitedFor} while this create waited ${Date.now() - t0} ms` : 'reused';
    const cookie = randomUUID();
    try {
      await ops.io.lockExclusive(lockOid, GOLDEN_LOCK, {
        cookie,
        durationMs: g.leaseMs,
        description: builderLabel(ops.cfg.clientId, ops.cluster.instanceId()),
      });
    } catch (e) {
      if (!(e instanceof ImageBusy)) throw ops.translate(e, name, options.signal);
      waitedFor = await holder(ops.io, lockOid);
      if (Date.now() - t0 + g.pollMs > g.waitTimeoutMs)
        throw new BusyError(
          `golden image ${g.pool}/${name} is being built by ${waitedFor}: gave up after ${g.waitTimeoutMs} ms`,
          { backend: NAME, diskId: job.id },
        );
      // Waiting: the reporter stays where it is (monotonic), and an abort ends the wait.
      progress.report('download', 0, image.size);
      await sleep(g.pollMs, options.signal, {
        abortError: (reason) =>
          new AbortedError('createFromImage aborted while waiting for the golden image', {
            backend: NAME,
            diskId: job.id,
            cause: reason,
          }),
      });
      continue;
    }
    const lease = new Lease(ops.io, lockOid, cookie, g.leaseMs, options.signal);
    try {
      // Another builder may have finished between the look and the lock.
      const now = await look();
      if (now.kind === 'ready') return 'built by another process';
      if (now.kind === 'unusable') await retire(g, name);
      await buildGolden(g, job, name, checksum, cookie, lease);
      return now.kind === 'unusable' ? `rebuilt (the previous one was ${now.reason})` : 'built';
    } finally {
      await lease.release();
    }
  }
}

/** Who holds the build lock (for messages), or `another process`. */
async function holder(io: IoCtx, oid: string): Promise<string> {
  const l = await io.listLockers(oid, GOLDEN_LOCK).catch(() => undefined);
  const first = l?.lockers[0];
  return first ? `${first.client} at ${first.address}` : 'another process';
}

/**
 * The build lock's lease, renewed every third of it while the build runs. Its signal aborts the
 * build when the caller aborts or a renewal fails (the lease may have passed to another builder:
 * two builds must never both rename into place).
 */
class Lease {
  private readonly ac = new AbortController();
  private readonly timer: NodeJS.Timeout;
  private readonly detach: () => void;
  private renewing: Promise<unknown> | undefined;
  lost: Error | undefined;

  constructor(
    private readonly io: IoCtx,
    private readonly oid: string,
    private readonly cookie: string,
    leaseMs: number,
    outer: AbortSignal | undefined,
  ) {
    const onAbort = (): void => this.ac.abort(outer?.reason);
    outer?.addEventListener('abort', onAbort, { once: true });
    if (outer?.aborted) onAbort();
    this.detach = () => outer?.removeEventListener('abort', onAbort);
    this.timer = setInterval(
      () => {
        this.renewing = io
          .lockExclusive(oid, GOLDEN_LOCK, { cookie, durationMs: leaseMs, renew: 'must' })
          .catch((e: unknown) => {
            this.lost = new BusyError(`lost the golden image build lease on ${oid}: ${(e as Error).message}`, {
              backend: NAME,
              cause: e,
            });
            this.ac.abort(this.lost);
          });
      },
      Math.floor(leaseMs / 3),
    );
  }

  get signal(): AbortSignal {
    return this.ac.signal;
  }

  async release(): Promise<void> {
    clearInterval(this.timer);
    this.detach();
    await this.renewing;
    await this.io.unlock(this.oid, GOLDEN_LOCK, this.cookie).catch(() => false);
  }
}

/**
 * Builds golden image `name` under `<name>.building-<cookie>`: import or convert (the checksum is
 * verified as the bytes stream: the import fails on a mismatch), metadata, snapshot, protect, and
 * only then the rename, so an image under the golden name is complete. Any failure removes the
 * temporary image (the import removes its own on failure); a process killed mid-build leaves it
 * for `gc --cache`.
 */
async function buildGolden(
  g: GoldenContext,
  job: ImportJob,
  name: string,
  checksum: string,
  cookie: string,
  lease: Lease,
): Promise<void> {
  const { ops } = g.ctx;
  const tmp = `${name}${BUILDING_INFIX}${cookie.slice(0, 8)}`;
  const signal = lease.signal;
  // The build's own reporter: its final 100% is not the create's (the clone follows).
  const sub = new ProgressReporter((ev) => {
    if (ev.phase !== 'done') job.progress.report(ev.phase, ev.bytesDone, ev.bytesTotal);
  });
  const build: ImportJob = { ...job, id: tmp, options: { signal }, progress: sub };
  try {
    if (RAW_FORMATS.has(job.format)) await importRaw(g.ctx, build);
    else {
      const source =
        g.ctx.options.convertFromRbd === false
          ? ({ kind: 'image-stream' } as const)
          : (await convertSource(g.ctx, job.image)).source;
      await importConverted(g.ctx, build, source);
    }
  } catch (e) {
    throw lease.lost ?? e;
  }
  try {
    await ops.withImage(tmp, {}, async (img) => {
      await img.metadataSet(GOLDEN_META.source, job.image.id);
      await img.metadataSet(GOLDEN_META.checksum, checksum);
      await img.metadataSet(GOLDEN_META.format, job.format);
      await img.metadataSet(GOLDEN_META.builder, builderLabel(ops.cfg.clientId, ops.cluster.instanceId()));
      await img.metadataSet(GOLDEN_META.builtAt, new Date().toISOString());
      await img.createSnapshot(GOLDEN_SNAP);
      await img.protectSnapshot(GOLDEN_SNAP);
    });
    throwIfAborted(signal, 'golden image build');
    await ops.io.rename(tmp, name);
  } catch (e) {
    await ops.removeQuietly(tmp);
    throw lease.lost ?? ops.translate(e, tmp, signal);
  }
}

/**
 * Takes an unusable golden image out of the way: removed, or, when clones still use it, renamed
 * to `<name>.stale-<ms>` (they keep reading it; `gc --cache` removes it once they are gone).
 */
async function retire(g: GoldenContext, name: string): Promise<void> {
  const { ops } = g.ctx;
  try {
    await ops.removeDisk(name, { busyTimeoutMs: 5_000 });
  } catch (e) {
    if (!isImageBackendError(e, 'BUSY')) throw e;
    try {
      await ops.io.rename(name, `${name}${STALE_INFIX}${Date.now()}`);
    } catch (e2) {
      throw ops.translate(e2, name);
    }
  }
}

/** Records the last use (for `gc --cache`'s unused time); best effort: a clone exists already. */
async function touch(g: GoldenContext, name: string): Promise<void> {
  await g.ctx.ops
    .withImage(name, {}, (img) => img.metadataSet(GOLDEN_META.lastUsed, new Date().toISOString()))
    .catch(() => undefined);
}
