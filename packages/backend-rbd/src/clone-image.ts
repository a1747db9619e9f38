import {
  AlreadyExistsError,
  InvalidArgumentError,
  throwIfAborted,
  type CreateFromImageOptions,
  type CreateResult,
  type ProgressReporter,
  type SourceImage,
} from '@ephemera/image-backend';
import { ImageExists, ImageNotFound, InvalidArgument, ObjectNotFound, PermissionDenied, RbdError } from '@ephemera/ceph-rbd-napi';
import { cloneFormatFor, type ClonePlan } from './clone.js';
import type { RbdContext } from './context.js';
import { NAME } from './errors.js';

/**
 * Clones one candidate into disk `id` and grows it to the requested size, or says why this
 * candidate cannot be cloned (the caller tries the next one, then imports). A failure after the
 * clone exists removes it.
 */
export async function cloneFromPlan(
  ctx: RbdContext,
  id: string,
  image: SourceImage,
  plan: ClonePlan,
  options: CreateFromImageOptions,
  progress: ProgressReporter,
  started: number,
): Promise<{ kind: 'cloned'; result: CreateResult } | { kind: 'import'; reason: string }> {
  const { ops } = ctx;
  const { pool, image: parentName, snapshot: snap } = plan.url;
  const parentLabel = `${pool}/${parentName}@${snap}`;
  // Look at the parent snapshot: it must exist and be readable; its size and protection.
  let parentSize: number;
  let isProtected: boolean;
  try {
    ({ size: parentSize, isProtected } = await ops.parentSnapshot(plan.url));
  } catch (e) {
    if (e instanceof RbdError) return { kind: 'import', reason: `parent ${parentLabel} is not usable (${e.code}: ${e.message})` };
    throw e;
  }
  const wanted = options.sizeBytes ?? parentSize;
  if (wanted < parentSize)
    throw new InvalidArgumentError('options.sizeBytes', `${wanted} is smaller than the image (${parentSize} bytes)`, { backend: NAME, diskId: id });
  throwIfAborted(options.signal, 'createFromImage');
  const choice = cloneFormatFor(await ctx.cloneFormat(), isProtected, parentLabel);
  if (choice.kind === 'import') return choice;
  const { format, why } = choice;
  progress.report('clone', 0, wanted);
  try {
    await ops.io.clone({ parent: { pool, image: parentName, snap }, dest: { name: id }, cloneFormat: format });
  } catch (e) {
    if (e instanceof ImageExists) throw new AlreadyExistsError(`disk ${id} already exists`, { backend: NAME, diskId: id, cause: e });
    if (e instanceof PermissionDenied || e instanceof InvalidArgument || e instanceof ImageNotFound || e instanceof ObjectNotFound)
      return { kind: 'import', reason: `clone of ${parentLabel} failed (${e.code}: ${e.message})` };
    throw ops.translate(e, id, options.signal);
  }
  try {
    if (wanted > parentSize) {
      progress.report('resize', 0, wanted);
      await ops.withImage(id, {}, (img) => img.resize(wanted, { allowShrink: false }));
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
