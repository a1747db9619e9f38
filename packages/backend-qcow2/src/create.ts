// Creating disks: qcow2 overlays on a cached base (or standalone imports), and blank qcow2/raw
// disks. Each is built in a temporary directory and published by one rename.
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import {
  InvalidArgumentError,
  ProgressReporter,
  UnsupportedOperationError,
  assertValidSize,
  diskId,
  throwIfAborted,
  type CreateBlankOptions,
  type CreateFromImageOptions,
  type CreateResult,
  type DiskRef,
  type SourceImage,
} from '@ephemera/image-backend';
import { ACCEPTED_DISK_FORMATS, type CachedBase } from './base-cache.js';
import type { Qcow2Context } from './context.js';
import { toContractError } from './errors.js';
import { NAME, roundUp } from './layout.js';

export async function createFromImage(qc: Qcow2Context, disk: DiskRef, image: SourceImage, options: CreateFromImageOptions = {}): Promise<CreateResult> {
  const started = Date.now();
  const id = diskId(disk);
  const ctx = { backend: NAME, diskId: id };
  if (options.encryption) throw new UnsupportedOperationError('encryption', 'createFromImage', ctx);
  if (options.sizeBytes !== undefined) assertValidSize(options.sizeBytes, 'options.sizeBytes');
  checkImage(image, id);
  const { signal } = options;
  throwIfAborted(signal, 'createFromImage');
  await qc.store.claim(id);
  const progress = new ProgressReporter(options.onProgress);
  let tmp: string | undefined;
  try {
    await qc.store.ensureDirs();
    const lease = await qc.cache.acquire(image, { signal, progress });
    let base: CachedBase;
    let sizeBytes: number;
    try {
      base = lease.base;
      if (options.sizeBytes !== undefined && options.sizeBytes < base.virtualSize)
        throw new InvalidArgumentError('options.sizeBytes', `${options.sizeBytes} is smaller than the image's virtual size ${base.virtualSize}`, ctx);
      sizeBytes = roundUp(Math.max(options.sizeBytes ?? 0, base.virtualSize), 512);
      tmp = await mkdtemp(join(qc.store.instancesDir, `.tmp-${id}-`));
      const file = join(tmp, 'disk.qcow2');
      if (options.forceImport) {
        // A standalone copy: no backing file, nothing shared with the cache.
        await qc.qemu.convert(base.path, file, {
          sourceFormat: base.format,
          targetFormat: 'qcow2',
          untrusted: false,
          ...(qc.clusterSize ? { targetOptions: { cluster_size: qc.clusterSize } } : {}),
          timeoutMs: qc.convertTimeoutMs,
          ...(signal ? { signal } : {}),
          onProgress: (pct) => progress.report('import', Math.floor((pct / 100) * base.virtualSize), base.virtualSize),
        });
        if (sizeBytes > base.virtualSize) await qc.qemu.resize(file, sizeBytes, { format: 'qcow2', ...(signal ? { signal } : {}) });
      } else {
        progress.report('clone', 0, sizeBytes);
        await qc.qemu.create(file, {
          format: 'qcow2',
          backing: { file: base.path, format: base.format },
          size: sizeBytes,
          ...(qc.clusterSize ? { clusterSize: qc.clusterSize } : {}),
          ...(signal ? { signal } : {}),
        });
      }
    } finally {
      // The overlay exists (in its temporary directory, which cleanup scans too): the base
      // is referenced from now on.
      await lease.release();
    }
    throwIfAborted(signal, 'createFromImage');
    await qc.store.publish(tmp, id);
    tmp = undefined;
    const fetched = lease.bytesFetched;
    progress.finish(lease.fetched ? fetched : base.virtualSize, lease.fetched ? image.size : base.virtualSize);
    const durationMs = Date.now() - started;
    if (options.forceImport) {
      return {
        method: 'imported',
        reason: 'forceImport: a standalone qcow2 copy of the image, without a backing file',
        bytesWritten: base.virtualSize,
        sizeBytes,
        durationMs,
      };
    }
    if (lease.fetched) {
      return {
        method: 'imported',
        reason: `qcow2 backend: image fetched into the host cache (${base.format} base); the disk is a qcow2 overlay on it`,
        bytesWritten: fetched,
        sizeBytes,
        durationMs,
      };
    }
    return { method: 'cloned', sizeBytes, durationMs };
  } catch (e) {
    if (tmp) await rm(tmp, { recursive: true, force: true }).catch(() => undefined);
    throw toContractError(e, { ...ctx, signal });
  } finally {
    qc.store.pending.delete(id);
  }
}

export async function createBlank(qc: Qcow2Context, disk: DiskRef, sizeBytes: number, options: CreateBlankOptions = {}): Promise<CreateResult> {
  const started = Date.now();
  const id = diskId(disk);
  const ctx = { backend: NAME, diskId: id };
  assertValidSize(sizeBytes);
  const format = options.format ?? qc.diskFormats[0]!;
  if (!qc.diskFormats.includes(format)) throw new InvalidArgumentError('options.format', `expected qcow2 or raw, got ${JSON.stringify(format)}`, ctx);
  if (options.encryption) throw new UnsupportedOperationError('encryption', 'createBlank', ctx);
  const { signal } = options;
  throwIfAborted(signal, 'createBlank');
  await qc.store.claim(id);
  let tmp: string | undefined;
  try {
    await qc.store.ensureDirs();
    const size = roundUp(sizeBytes, 512);
    if (!qc.thin) await qc.store.checkFree(size, id);
    tmp = await mkdtemp(join(qc.store.instancesDir, `.tmp-${id}-`));
    const prealloc = format === 'raw' && qc.preallocation === 'metadata' ? 'off' : qc.preallocation;
    await qc.qemu.create(join(tmp, `disk.${format}`), {
      format,
      size,
      ...(format === 'qcow2' && qc.clusterSize ? { clusterSize: qc.clusterSize } : {}),
      ...(prealloc !== 'off' ? { preallocation: prealloc } : {}),
      ...(prealloc === 'full' || prealloc === 'falloc' ? { timeoutMs: qc.convertTimeoutMs } : {}),
      ...(signal ? { signal } : {}),
    });
    throwIfAborted(signal, 'createBlank');
    await qc.store.publish(tmp, id);
    tmp = undefined;
    return { method: 'blank', sizeBytes: size, durationMs: Date.now() - started };
  } catch (e) {
    if (tmp) await rm(tmp, { recursive: true, force: true }).catch(() => undefined);
    throw toContractError(e, { ...ctx, signal });
  } finally {
    qc.store.pending.delete(id);
  }
}

/** @internal checks a SourceImage before anything is fetched or created. */
export function checkImage(image: SourceImage, id: string | undefined): void {
  const ctx = { backend: NAME, ...(id ? { diskId: id } : {}) };
  if (!image || typeof image !== 'object' || typeof image.open !== 'function')
    throw new InvalidArgumentError('image', 'expected a SourceImage', ctx);
  if (typeof image.id !== 'string' || image.id.length === 0) throw new InvalidArgumentError('image.id', 'a non-empty string is required', ctx);
  if (!Number.isSafeInteger(image.size) || image.size < 0) throw new InvalidArgumentError('image.size', 'a non-negative integer is required', ctx);
  const format = String(image.diskFormat ?? '').toLowerCase();
  if (!ACCEPTED_DISK_FORMATS.includes(format))
    throw new InvalidArgumentError('image.diskFormat', `the qcow2 backend accepts ${ACCEPTED_DISK_FORMATS.join(', ')}, not '${String(image.diskFormat)}'`, ctx);
}
