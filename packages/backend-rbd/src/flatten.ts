// Flattening an instance disk (the contract's `flatten`), with progress: used by the driver's
// clone-depth policy, whose hard limit flattens before a spawn returns.
import { ProgressReporter, diskId, throwIfAborted, type DiskRef, type FlattenOptions } from '@ephemera/image-backend';
import type { RbdContext } from './context.js';

/** See `RbdBackend.flatten`. */
export async function flattenDisk(ctx: RbdContext, disk: DiskRef, options: FlattenOptions): Promise<void> {
  const id = diskId(disk);
  throwIfAborted(options.signal, 'flatten');
  await ctx.ops.withImage(
    id,
    {},
    async (img) => {
      if ((await img.parent()) === null) return;
      const size = await img.size();
      const progress = new ProgressReporter(options.onProgress);
      progress.report('flatten', 0, size);
      await img.flatten({ onProgress: (p) => progress.report('flatten', Math.floor(p.fraction * size), size) });
      progress.finish(size, size);
    },
    options.signal,
  );
}
