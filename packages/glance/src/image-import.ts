// Interoperable image import (`copy-image`): start it, then poll the image and its import task
// until every requested store holds the image.
import type { GlanceClient } from './client.js';
import type { CopyImageOptions } from './client-types.js';
import { ImageImportError, ImageImportTimeoutError, ImageStateError } from './errors.js';
import { imagePath, sig, type GlanceHttp } from './http.js';
import type { GlanceImage } from './types.js';

function splitList(v: unknown): string[] {
  return typeof v === 'string'
    ? v
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean)
    : [];
}

/** @internal the body of GlanceClient.copyImage. */
export async function copyImageToStores(
  client: GlanceClient,
  http: GlanceHttp,
  imageId: string,
  stores: string[],
  opts: CopyImageOptions,
): Promise<GlanceImage> {
  const before = await client.getImage(imageId, opts);
  if (before.status !== 'active') throw new ImageStateError(imageId, before.status, 'copy-image needs an active image');
  const missing = stores.filter((s) => !splitList(before.stores).includes(s));
  if (missing.length === 0) return before;
  await http.json({
    method: 'POST',
    path: `${imagePath(imageId)}/import`,
    imageId,
    json: {
      method: { name: 'copy-image' },
      stores: missing,
      all_stores_must_succeed: opts.allStoresMustSucceed ?? true,
    },
    idempotent: false,
    ...sig(opts),
  });
  const timeoutMs = opts.timeoutMs ?? 600_000;
  const deadline = Date.now() + timeoutMs;
  let lastPercent = -1;
  const total = typeof before.size === 'number' ? before.size : undefined;
  const report = (percent: number, bytes?: number): void => {
    if (!opts.onProgress || percent <= lastPercent) return;
    lastPercent = percent;
    opts.onProgress({
      operation: 'copy-image',
      imageId,
      percent,
      ...(bytes !== undefined ? { bytes } : {}),
      ...(total !== undefined ? { total } : {}),
    });
  };
  report(0);
  for (;;) {
    const image = await client.getImage(imageId, opts);
    opts.onPoll?.(image);
    if (opts.onProgress && total) {
      const taskId = typeof image.os_glance_import_task === 'string' ? image.os_glance_import_task : undefined;
      const task = taskId ? (await client.imageTasks(imageId, opts)).find((t) => t.id === taskId) : undefined;
      const m = /Copied (\d+) MiB/.exec(task?.message ?? '');
      if (m) {
        const bytes = Math.min(total, Number(m[1]) * 1024 * 1024);
        report(Math.min(99, Math.floor((bytes * 100) / total)), bytes);
      }
    }
    const have = splitList(image.stores);
    const importing = splitList(image.os_glance_importing_to_stores);
    const failed = splitList(image.os_glance_failed_import);
    if (missing.every((s) => have.includes(s))) {
      report(100, total);
      return image;
    }
    const failedHere = missing.filter((s) => failed.includes(s));
    const pending = missing.filter((s) => importing.includes(s));
    if (failedHere.length > 0 && (pending.length === 0 || (opts.allStoresMustSucceed ?? true)))
      throw new ImageImportError(imageId, failedHere);
    if (pending.length === 0) {
      // Between the 202 and the task starting, and after it ended, nothing is "importing":
      // the import task's own status decides.
      const taskId = typeof image.os_glance_import_task === 'string' ? image.os_glance_import_task : undefined;
      const task = taskId ? (await client.imageTasks(imageId, opts)).find((t) => t.id === taskId) : undefined;
      if (task?.status === 'failure')
        throw new ImageImportError(
          imageId,
          missing.filter((s) => !have.includes(s)),
          `image ${imageId}: import task ${task.id} failed: ${task.message ?? ''}`,
        );
      if (task?.status === 'success') {
        const last = await client.getImage(imageId, opts);
        if (missing.every((s) => splitList(last.stores).includes(s))) {
          report(100, total);
          return last;
        }
        const notThere = missing.filter((s) => !splitList(last.stores).includes(s));
        throw new ImageImportError(
          imageId,
          notThere,
          `image ${imageId}: import task ${task.id} ended without copying to ${notThere.join(', ')}`,
        );
      }
    }
    if (Date.now() >= deadline)
      throw new ImageImportTimeoutError(imageId, pending.length ? pending : missing, timeoutMs);
    await http.sleep(Math.min(opts.pollIntervalMs ?? 1_000, Math.max(0, deadline - Date.now())), opts.signal, imageId);
  }
}
