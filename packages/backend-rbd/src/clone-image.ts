import {
  AlreadyExistsError,
  InvalidArgumentError,
  throwIfAborted,
  type CreateFromImageOptions,
  type CreateResult,
  type ProgressReporter,
  type SourceImage,
} from '@ephemera/image-backend';
import {
  ImageExists,
  ImageNotFound,
  InvalidArgument,
  ObjectNotFound,
  PermissionDenied,
  isRbdError,
  type RbdError,
} from '@ephemera/ceph-rbd-napi';
import { cloneFormatFor, type ClonePlan } from './clone.js';
import type { RbdContext } from './context.js';
import type { ParentSnapshotFacts } from './parent-cache.js';
import { NAME } from './errors.js';

type PlanOutcome = { kind: 'cloned'; result: CreateResult } | { kind: 'import'; reason: string };

/**
 * Tries every local clone candidate in order before any import; each one skipped says why (in
 * the result, or in the import's reason). `monitor` is the monitor check running beside the
 * clone (a clone needs only the OSDs): when it failed, a clone made meanwhile is removed and its
 * error is thrown, also in place of the clone's own (e.g. a timeout, a symptom of the same).
 */
export async function cloneCandidates(
  ctx: RbdContext,
  job: { id: string; image: SourceImage; options: CreateFromImageOptions; progress: ProgressReporter; started: number },
  candidates: readonly ClonePlan[],
  monitor: Promise<{ error: unknown } | undefined>,
): Promise<PlanOutcome> {
  const { id, image, options, progress, started } = job;
  const skipped: string[] = [];
  for (const plan of candidates) {
    let cloned: PlanOutcome;
    try {
      throwIfAborted(options.signal, 'createFromImage');
      cloned = await cloneFromPlan(ctx, id, image, plan, options, progress, started);
    } catch (e) {
      const down = await monitor;
      throw down ? down.error : e;
    }
    if (cloned.kind === 'cloned') {
      const down = await monitor;
      if (down) {
        await ctx.ops.removeQuietly(id);
        throw down.error;
      }
      const r = cloned.result;
      return { kind: 'cloned', result: skipped.length ? { ...r, reason: `${r.reason}; ${skipped.join('; ')}` } : r };
    }
    skipped.push(`skipped ${plan.location}: ${cloned.reason}`);
  }
  return { kind: 'import', reason: `no rbd location in this cluster could be cloned: ${skipped.join('; ')}` };
}

/**
 * Clones one candidate into disk `id` and grows it to the requested size, or says why this
 * candidate cannot be cloned (the caller tries the next one, then imports). A failure after the
 * clone exists removes it. The parent snapshot is opened only when its facts are not cached: a
 * cached entry goes straight to the clone, and one the clone contradicts (snapshot gone,
 * unprotected, unreadable) is forgotten and the candidate tried once more with a fresh read.
 */
export async function cloneFromPlan(
  ctx: RbdContext,
  id: string,
  image: SourceImage,
  plan: ClonePlan,
  options: CreateFromImageOptions,
  progress: ProgressReporter,
  started: number,
): Promise<PlanOutcome> {
  const cached = ctx.parents.get(plan.url);
  if (cached) {
    const outcome = await cloneWith(ctx, id, image, plan, options, progress, started, cached);
    if (outcome.kind === 'cloned') return outcome;
    ctx.parents.forget(plan.url);
  }
  return cloneWith(ctx, id, image, plan, options, progress, started, undefined);
}

async function cloneWith(
  ctx: RbdContext,
  id: string,
  image: SourceImage,
  plan: ClonePlan,
  options: CreateFromImageOptions,
  progress: ProgressReporter,
  started: number,
  cached: ParentSnapshotFacts | undefined,
): Promise<PlanOutcome> {
  const { ops } = ctx;
  const { pool, image: parentName, snapshot: snap } = plan.url;
  const parentLabel = `${pool}/${parentName}@${snap}`;
  const notUsable = (e: RbdError): PlanOutcome => ({
    kind: 'import',
    reason: `parent ${parentLabel} is not usable (${e.code}: ${e.message})`,
  });
  const tooSmall = (size: number, wanted: number) =>
    new InvalidArgumentError('options.sizeBytes', `${wanted} is smaller than the image (${size} bytes)`, {
      backend: NAME,
      diskId: id,
    });
  const policy = await ctx.cloneFormat();
  // The parent snapshot must exist and be readable: its id, size and protection. Not cached: read
  // while the clone runs when the format is known (the clone itself refuses a missing or, in
  // format 1, unprotected snapshot), so that a first clone costs about one clone, not two steps.
  let facts = cached;
  let reading: Promise<{ facts: ParentSnapshotFacts } | { error: RbdError }> | undefined;
  if (!facts) {
    reading = ops.parentSnapshot(plan.url).then(
      (f) => ({ facts: f }),
      (e: unknown) => {
        if (isRbdError(e)) return { error: e };
        throw e;
      },
    );
    reading.catch(() => undefined); // awaited below; an early exit leaves no unhandled rejection
    if (policy.format === undefined) {
      const r = await reading;
      reading = undefined;
      if ('error' in r) return notUsable(r.error);
      facts = r.facts;
      ctx.parents.observe(plan.url, facts);
    }
  }
  if (facts && options.sizeBytes !== undefined && options.sizeBytes < facts.size) {
    // A cached size is confirmed by a fresh read before it refuses anything.
    if (cached) return { kind: 'import', reason: 'cached parent size contradicted' };
    throw tooSmall(facts.size, options.sizeBytes);
  }
  throwIfAborted(options.signal, 'createFromImage');
  // Unknown protection (read in parallel) counts as protected: a format 1 clone then says otherwise.
  const choice = cloneFormatFor(policy, facts?.isProtected ?? true, parentLabel);
  if (choice.kind === 'import') return choice;
  const { format, why } = choice;
  progress.report('clone', 0, options.sizeBytes ?? facts?.size ?? image.size);
  let cloneError: unknown;
  try {
    // No existence check first: the clone's own EEXIST says the same, one round trip fewer.
    await ops.io.clone({ parent: { pool, image: parentName, snap }, dest: { name: id }, cloneFormat: format });
  } catch (e) {
    cloneError = e;
  }
  if (reading) {
    const r = await reading;
    if (cloneError instanceof ImageExists)
      throw new AlreadyExistsError(`disk ${id} already exists`, { backend: NAME, diskId: id, cause: cloneError });
    if ('error' in r) {
      if (cloneError === undefined) await ops.removeQuietly(id);
      return notUsable(r.error);
    }
    facts = r.facts;
    ctx.parents.observe(plan.url, facts);
    if (cloneError !== undefined) {
      const real = cloneFormatFor(policy, facts.isProtected, parentLabel);
      if (real.kind === 'import') return real;
    }
  }
  if (cloneError !== undefined) {
    const e = cloneError;
    if (e instanceof ImageExists)
      throw new AlreadyExistsError(`disk ${id} already exists`, { backend: NAME, diskId: id, cause: e });
    if (
      e instanceof PermissionDenied ||
      e instanceof InvalidArgument ||
      e instanceof ImageNotFound ||
      e instanceof ObjectNotFound
    )
      return { kind: 'import', reason: `clone of ${parentLabel} failed (${e.code}: ${e.message})` };
    throw ops.translate(e, id, options.signal);
  }
  if (!facts) throw new Error('unreachable: parent snapshot facts neither cached nor read');
  let parentSize = facts.size;
  const wanted = options.sizeBytes ?? parentSize;
  // An explicit size from a cached entry is checked against the clone (its parent info comes
  // with the open): without one the disk has the snapshot's size, whatever it is now.
  const reopen = wanted > parentSize || (cached !== undefined && options.sizeBytes !== undefined);
  try {
    // The owner goes on before anything else (in the same open when the clone is opened anyway):
    // a clone that fails from here on is removed.
    if (!reopen) await ops.stampOwner(id, options.owner);
    if (wanted < parentSize) throw tooSmall(parentSize, wanted); // read in parallel: the clone goes
    if (reopen) {
      if (wanted > parentSize) progress.report('resize', 0, wanted);
      await ops.withImage(id, {}, async (img) => {
        await ops.stampOwnerOn(img, id, options.owner);
        // The clone's parent info (read with the open) shows the snapshot id actually cloned: a
        // name reused for another snapshot since it was cached replaces the entry here.
        const parent = await img.parent();
        if (cached && parent && parent.snapId !== cached.snapId) {
          parentSize = await img.size();
          ctx.parents.observe(plan.url, { snapId: parent.snapId, size: parentSize, isProtected: facts.isProtected });
          if (wanted < parentSize) throw tooSmall(parentSize, wanted);
        }
        if (wanted > parentSize) await img.resize(wanted, { allowShrink: false });
      });
    }
    throwIfAborted(options.signal, 'createFromImage');
  } catch (e) {
    await ops.removeQuietly(id);
    throw ops.translate(e, id, options.signal);
  }
  progress.finish(wanted, wanted);
  return {
    kind: 'cloned',
    result: {
      method: 'cloned',
      reason: `clone format ${format} of ${parentLabel} (${why}) for image ${image.id}`,
      sizeBytes: wanted,
      durationMs: Date.now() - started,
    },
  };
}
