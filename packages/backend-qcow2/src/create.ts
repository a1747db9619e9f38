// Creating disks: qcow2 overlays on a cached base (or standalone imports), and blank qcow2/raw
// disks. Each is built in a temporary directory and published by one rename.
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import {
  InvalidArgumentError,
  ProgressReporter,
  UnsupportedOperationError,
  assertValidOwnerStamp,
  assertValidSize,
  diskId,
  isUuid,
  ownerRecord,
  throwIfAborted,
  type CreateBlankOptions,
  type CreateFromImageOptions,
  type CreateResult,
  type DiskEncryption,
  type DiskFormat,
  type DiskRef,
  type SourceImage,
} from '@ephemera/image-backend';
import { luksCreateOptions, withSecretFile, type QemuSecret } from '@ephemera/qemu-img-wrapper';
import { ACCEPTED_DISK_FORMATS, type CachedBase } from './base-cache.js';
import type { Qcow2Context } from './context.js';
import { toContractError } from './errors.js';
import { NAME, roundUp, writeEncryption, writeOwner } from './layout.js';

/** Refuses an encryption request this backend cannot honour, before anything exists. */
function checkEncryption(
  enc: DiskEncryption | undefined,
  format: DiskFormat,
  ctx: { backend: string; diskId: string },
) {
  if (!enc) return;
  if (enc.format !== 'luks' || !isUuid(enc.secretUuid))
    throw new InvalidArgumentError('options.encryption', "expected { format: 'luks', secretUuid: <uuid> }", ctx);
  if (typeof enc.passphrase !== 'function')
    throw new InvalidArgumentError('options.encryption.passphrase', 'an encrypted disk needs its passphrase', ctx);
  // QEMU's qcow2 encrypts inside the format; a raw file would need a LUKS container instead.
  if (format !== 'qcow2')
    throw new UnsupportedOperationError('encryption', `createBlank (format ${format}: only qcow2)`, ctx);
}

/**
 * Runs `fn` with a secret object for the disk's passphrase (a 0600 file in the disk's temporary
 * directory, removed right after), or without one for a plain disk.
 */
async function withKey<T>(
  _qc: Qcow2Context,
  dir: string,
  enc: DiskEncryption | undefined,
  fn: (s: QemuSecret | undefined) => Promise<T>,
): Promise<T> {
  if (!enc?.passphrase) return fn(undefined);
  const key = await enc.passphrase();
  try {
    return await withSecretFile(dir, key, fn);
  } finally {
    key.fill(0);
  }
}

/** Target `-o` options of a convert, with the `encrypt.*` ones when there is a key. */
function targetOpts(o: Record<string, string | number>, s: QemuSecret | undefined) {
  return s
    ? { targetOptions: { ...o, ...luksCreateOptions(s, 'encrypt.') }, secrets: [s] }
    : Object.keys(o).length
      ? { targetOptions: o }
      : {};
}

export async function createFromImage(
  qc: Qcow2Context,
  disk: DiskRef,
  image: SourceImage,
  options: CreateFromImageOptions = {},
): Promise<CreateResult> {
  const started = Date.now();
  const id = diskId(disk);
  const ctx = { backend: NAME, diskId: id };
  checkEncryption(options.encryption, 'qcow2', ctx);
  if (options.sizeBytes !== undefined) assertValidSize(options.sizeBytes, 'options.sizeBytes');
  if (options.owner !== undefined) assertValidOwnerStamp(options.owner, 'options.owner');
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
        throw new InvalidArgumentError(
          'options.sizeBytes',
          `${options.sizeBytes} is smaller than the image's virtual size ${base.virtualSize}`,
          ctx,
        );
      sizeBytes = roundUp(Math.max(options.sizeBytes ?? 0, base.virtualSize), 512);
      tmp = await mkdtemp(join(qc.store.instancesDir, `.tmp-${id}-`));
      const file = join(tmp, 'disk.qcow2');
      if (options.forceImport) {
        // A standalone copy: no backing file, nothing shared with the cache.
        await withKey(qc, tmp, options.encryption, (s) =>
          qc.qemu.convert(base.path, file, {
            sourceFormat: base.format,
            targetFormat: 'qcow2',
            untrusted: false,
            ...targetOpts(qc.clusterSize ? { cluster_size: qc.clusterSize } : {}, s),
            timeoutMs: qc.convertTimeoutMs,
            ...(signal ? { signal } : {}),
            onProgress: (pct) =>
              progress.report('import', Math.floor((pct / 100) * base.virtualSize), base.virtualSize),
          }),
        );
        // Growing an encrypted qcow2 needs its key open; creating it at the final size does not.
        if (sizeBytes > base.virtualSize && !options.encryption)
          await qc.qemu.resize(file, sizeBytes, { format: 'qcow2', ...(signal ? { signal } : {}) });
      } else {
        progress.report('clone', 0, sizeBytes);
        // Encrypted: a LUKS-encrypted overlay over the plain base (copy-on-write kept).
        await withKey(qc, tmp, options.encryption, (s) =>
          qc.qemu.create(file, {
            format: 'qcow2',
            backing: { file: base.path, format: base.format },
            size: sizeBytes,
            ...(qc.clusterSize ? { clusterSize: qc.clusterSize } : {}),
            ...(s ? { options: luksCreateOptions(s, 'encrypt.'), secrets: [s] } : {}),
            ...(signal ? { signal } : {}),
          }),
        );
      }
    } finally {
      // The overlay exists (in its temporary directory, which cleanup scans too): the base
      // is referenced from now on.
      await lease.release();
    }
    throwIfAborted(signal, 'createFromImage');
    // The sidecar is in the directory before the rename publishes it: no disk without its owner.
    if (options.owner) await writeOwner(tmp, ownerRecord(disk, options.owner));
    if (options.encryption) await writeEncryption(tmp, options.encryption.secretUuid);
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

export async function createBlank(
  qc: Qcow2Context,
  disk: DiskRef,
  sizeBytes: number,
  options: CreateBlankOptions = {},
): Promise<CreateResult> {
  const started = Date.now();
  const id = diskId(disk);
  const ctx = { backend: NAME, diskId: id };
  assertValidSize(sizeBytes);
  const format = options.format ?? qc.diskFormats[0]!;
  if (!qc.diskFormats.includes(format))
    throw new InvalidArgumentError('options.format', `expected qcow2 or raw, got ${JSON.stringify(format)}`, ctx);
  checkEncryption(options.encryption, format, ctx);
  if (options.owner !== undefined) assertValidOwnerStamp(options.owner, 'options.owner');
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
    const dir = tmp;
    await withKey(qc, dir, options.encryption, (s) =>
      qc.qemu.create(join(dir, `disk.${format}`), {
        format,
        size,
        ...(format === 'qcow2' && qc.clusterSize ? { clusterSize: qc.clusterSize } : {}),
        ...(prealloc !== 'off' ? { preallocation: prealloc } : {}),
        ...(prealloc === 'full' || prealloc === 'falloc' ? { timeoutMs: qc.convertTimeoutMs } : {}),
        ...(s ? { options: luksCreateOptions(s, 'encrypt.'), secrets: [s] } : {}),
        ...(signal ? { signal } : {}),
      }),
    );
    throwIfAborted(signal, 'createBlank');
    if (options.owner) await writeOwner(tmp, ownerRecord(disk, options.owner));
    if (options.encryption) await writeEncryption(tmp, options.encryption.secretUuid);
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
  if (typeof image.id !== 'string' || image.id.length === 0)
    throw new InvalidArgumentError('image.id', 'a non-empty string is required', ctx);
  if (!Number.isSafeInteger(image.size) || image.size < 0)
    throw new InvalidArgumentError('image.size', 'a non-negative integer is required', ctx);
  const format = String(image.diskFormat ?? '').toLowerCase();
  if (!ACCEPTED_DISK_FORMATS.includes(format))
    throw new InvalidArgumentError(
      'image.diskFormat',
      `the qcow2 backend accepts ${ACCEPTED_DISK_FORMATS.join(', ')}, not '${String(image.diskFormat)}'`,
      ctx,
    );
}
