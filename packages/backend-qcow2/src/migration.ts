// Live block migration: what a source host says about its disks, and the destination's empty
// copies of them (libvirt's incremental copy writes only the overlay's own clusters into a file
// that must already exist, with the same virtual size and the same base content under it).
import { mkdtemp, rm } from 'node:fs/promises';
import { basename, join } from 'node:path';
import {
  InvalidArgumentError,
  ProgressReporter,
  UnsupportedOperationError,
  assertValidSize,
  diskId,
  throwIfAborted,
  type DiskFormat,
  type DiskRef,
  type OperationOptions,
  type ProgressEvent,
  type SourceImage,
} from '@ephemera/image-backend';
import { baseKey } from './base-cache.js';
import type { Qcow2Context } from './context.js';
import { checkImage } from './create.js';
import { toContractError } from './errors.js';
import { NAME } from './layout.js';

/** What a block migration needs to know of one disk on its source host. */
export interface MigrationDiskSpec {
  /** Guest-visible size in bytes: the destination's copy has the same. */
  sizeBytes: number;
  /** The disk file's format (`qcow2` overlay or blank disk, `raw` blank disk). */
  format: DiskFormat;
  /**
   * True when the disk is an overlay on the cached base of the instance's image: the destination
   * puts its copy on its own cached base of that image (fetched once) and only the overlay moves.
   */
  backed: boolean;
}

/** What {@link prepareIncomingDisk} made. */
export interface IncomingDisk {
  /** Absolute path of the empty copy libvirt copies the disk into. */
  path: string;
  /** The copy's format (the spec's). */
  format: DiskFormat;
  /** Whether this call fetched the base into the cache (false: it was cached already). */
  fetched: boolean;
}

/**
 * The migration spec of a disk of this host. A disk backed by anything but the cached base of
 * `imageId` is refused (UNSUPPORTED_OPERATION): the destination could not rebuild its chain.
 */
export async function migrationDiskSpec(ctx: Qcow2Context, disk: DiskRef, imageId: string): Promise<MigrationDiskSpec> {
  const id = diskId(disk);
  const loc = await ctx.store.locate(id);
  if (!loc) throw ctx.store.notFound(id);
  const info = await ctx.store.describe(loc);
  if (info.parent === undefined) return { sizeBytes: info.sizeBytes, format: info.format, backed: false };
  const key = baseKey(imageId);
  const name = basename(info.parent);
  if (name !== key && name !== `${key}.qcow2`)
    throw new UnsupportedOperationError('block-migration', 'migrationDiskSpec', {
      backend: NAME,
      diskId: id,
      cause: new Error(`${id} is backed by ${info.parent}, not by the cached base of image ${imageId}`),
    });
  return { sizeBytes: info.sizeBytes, format: info.format, backed: true };
}

/**
 * Creates the empty destination copy of a migrating disk: for a backed disk a qcow2 overlay on
 * this host's cached base of `image` (fetched first if missing, once however many callers ask),
 * else a blank disk of the spec's format; always of the spec's virtual size. No owner sidecar:
 * the driver writes it (setOwner) once the guest runs here. Published atomically like any disk;
 * an existing disk is ALREADY_EXISTS.
 */
export async function prepareIncomingDisk(
  ctx: Qcow2Context,
  disk: DiskRef,
  spec: MigrationDiskSpec,
  image: SourceImage | undefined,
  options: OperationOptions & { onProgress?: (event: ProgressEvent) => void } = {},
): Promise<IncomingDisk> {
  const id = diskId(disk);
  const ectx = { backend: NAME, diskId: id };
  if (!spec || typeof spec !== 'object') throw new InvalidArgumentError('spec', 'expected a migration disk spec', ectx);
  assertValidSize(spec.sizeBytes, 'spec.sizeBytes');
  if (!ctx.diskFormats.includes(spec.format))
    throw new InvalidArgumentError('spec.format', `expected qcow2 or raw, got ${JSON.stringify(spec.format)}`, ectx);
  if (spec.backed && spec.format !== 'qcow2')
    throw new InvalidArgumentError('spec.format', 'a backed disk is a qcow2 overlay', ectx);
  if (spec.backed) checkImage(image as SourceImage, id);
  const { signal } = options;
  throwIfAborted(signal, 'prepareIncomingDisk');
  await ctx.store.claim(id);
  const progress = new ProgressReporter(options.onProgress);
  let tmp: string | undefined;
  try {
    await ctx.store.ensureDirs();
    tmp = await mkdtemp(join(ctx.store.instancesDir, `.tmp-${id}-`));
    const file = join(tmp, `disk.${spec.format}`);
    let fetched = false;
    if (spec.backed) {
      const lease = await ctx.cache.acquire(image!, { signal, progress });
      try {
        fetched = lease.fetched;
        if (spec.sizeBytes < lease.base.virtualSize)
          throw new InvalidArgumentError(
            'spec.sizeBytes',
            `${spec.sizeBytes} is smaller than the cached base (${lease.base.virtualSize} bytes)`,
            ectx,
          );
        await ctx.qemu.create(file, {
          format: 'qcow2',
          backing: { file: lease.base.path, format: lease.base.format },
          size: spec.sizeBytes,
          ...(ctx.clusterSize ? { clusterSize: ctx.clusterSize } : {}),
          ...(signal ? { signal } : {}),
        });
      } finally {
        // The overlay exists in its temporary directory, which cleanup scans: the base is referenced.
        await lease.release();
      }
    } else {
      await ctx.qemu.create(file, {
        format: spec.format,
        size: spec.sizeBytes,
        ...(spec.format === 'qcow2' && ctx.clusterSize ? { clusterSize: ctx.clusterSize } : {}),
        ...(signal ? { signal } : {}),
      });
    }
    throwIfAborted(signal, 'prepareIncomingDisk');
    await ctx.store.publish(tmp, id);
    tmp = undefined;
    progress.finish(spec.sizeBytes, spec.sizeBytes);
    return { path: join(ctx.store.instancesDir, id, `disk.${spec.format}`), format: spec.format, fetched };
  } catch (e) {
    if (tmp) await rm(tmp, { recursive: true, force: true }).catch(() => undefined);
    throw toContractError(e, { ...ectx, signal });
  } finally {
    ctx.store.pending.delete(id);
  }
}
