// A disk's clone chain depth, for the driver's clone-depth policy (Ceph-CSI's soft/hard clone depth).
import { diskId, type DiskRef } from '@ephemera/image-backend';
import { ObjectNotFound, PermissionDenied, type Image, type ParentInfo } from '@ephemera/ceph-rbd-napi';
import type { RbdContext } from './context.js';

/**
 * Longest chain followed. Ceph itself allows any depth; 64 bounds the walk if an operator's chain
 * is absurd (far above any sane hard limit, so the policy's answer is the same).
 */
export const MAX_WALK = 64;

/**
 * How many ancestors the disk has: 0 without a parent, 1 for a clone of a flat image. Walks the
 * parents with rbd_get_parent (`Image.parent()`) on each ancestor's snapshot, opened read-only by
 * this backend's client. An ancestor it cannot open (another pool it may not read, or an image in
 * the trash, which cannot be opened by name) ends the walk: it counts, what lies above it does
 * not (the result is then a lower bound).
 */
export async function cloneDepth(ctx: RbdContext, disk: DiskRef): Promise<number> {
  const id = diskId(disk);
  const first = await ctx.ops.withImage(id, { readOnly: true }, (img) => img.parent());
  let depth = 0;
  let parent: ParentInfo | null = first;
  while (parent && depth < MAX_WALK) {
    depth++;
    if (parent.trash) break;
    parent = await parentOf(ctx, parent);
  }
  return depth;
}

/** The parent of `p`'s snapshot, or null (none, or `p` cannot be read). */
async function parentOf(ctx: RbdContext, p: ParentInfo): Promise<ParentInfo | null> {
  let img: Image | undefined;
  try {
    const io = await ctx.ops.cluster.openIoCtx(p.pool, p.namespace);
    try {
      img = await io.open(p.image, { snapshot: p.snap, readOnly: true });
      return await img.parent();
    } finally {
      await img?.close().catch(() => undefined);
      await io.close().catch(() => undefined);
    }
  } catch (e) {
    if (e instanceof PermissionDenied || e instanceof ObjectNotFound) return null;
    throw ctx.ops.translate(e, p.image);
  }
}
