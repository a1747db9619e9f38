// Encrypted LVs: QEMU's LUKS on the LV's block device (no dm-crypt). The LV gets a LUKS header
// and the guest sees the payload behind it; images are converted into it by qemu-img, the key
// only in a 0600 secret file while qemu-img runs.
import { createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import {
  InvalidArgumentError,
  isUuid,
  readImage,
  throwIfAborted,
  ProgressReporter,
  type CreateFromImageOptions,
  type CreateResult,
  type DiskEncryption,
  type SourceImage,
} from '@ephemera/image-backend';
import { QemuImg, luksCreateOptions, luksImageOpts, withSecretFile } from '@ephemera/qemu-img-wrapper';
import { inspectImageFile } from './qemu.js';

/** LV tag holding the libvirt secret UUID of an encrypted LV (never the key). */
export const SECRET_TAG = 'ephemera.secret=';
/** Room for QEMU's LUKS1 header (2,068,480 bytes with its defaults), rounded up. */
export const LUKS_HEADER_BYTES = 4 * 1024 * 1024;

const qemuImg = new QemuImg();

/** The secret UUID in an LV's tags, `undefined` for a plain LV. */
export function secretOf(tags: readonly string[]): string | undefined {
  return tags.find((t) => t.startsWith(SECRET_TAG))?.slice(SECRET_TAG.length);
}

/** Refuses a malformed encryption request (no key, bad UUID) before anything exists. */
export function checkEncryption(enc: DiskEncryption, ctx: { backend: string; diskId: string }): void {
  if (enc.format !== 'luks' || !isUuid(enc.secretUuid))
    throw new InvalidArgumentError('options.encryption', "expected { format: 'luks', secretUuid: <uuid> }", ctx);
  if (typeof enc.passphrase !== 'function')
    throw new InvalidArgumentError('options.encryption.passphrase', 'an encrypted disk needs its passphrase', ctx);
}

/** What the encrypted paths need from the backend. */
export interface EncryptedLvOps {
  readonly tempDir: string;
  /** Creates the LV of `bytes` with the extra tags; returns its size. */
  createLv(bytes: number, tags: string[]): Promise<number>;
  /** Maps the LV and returns its block device. */
  map(): Promise<string>;
}

async function withKey<T>(enc: DiskEncryption, dir: string, fn: (s: { id: string; file: string }) => Promise<T>) {
  const key = await enc.passphrase!();
  try {
    return await withSecretFile(dir, key, fn);
  } finally {
    key.fill(0);
  }
}

/** Formats the LV's device as LUKS with the payload filling the rest of the LV. */
async function formatLuks(
  ops: EncryptedLvOps,
  enc: DiskEncryption,
  payload: number,
  signal?: AbortSignal,
): Promise<string> {
  const lvBytes = await ops.createLv(payload + LUKS_HEADER_BYTES, [`${SECRET_TAG}${enc.secretUuid}`]);
  const dev = await ops.map();
  const size = lvBytes - LUKS_HEADER_BYTES;
  await withKey(enc, ops.tempDir, (s) =>
    qemuImg.create(dev, {
      format: 'luks',
      size,
      options: luksCreateOptions(s),
      secrets: [s],
      ...(signal ? { signal } : {}),
    }),
  );
  return dev;
}

/** An encrypted blank LV (ephemeral, swap): unwritten payload reads as noise, as with dm-crypt. */
export async function createEncryptedBlank(
  ops: EncryptedLvOps,
  enc: DiskEncryption,
  sizeBytes: number,
  signal?: AbortSignal,
): Promise<number> {
  await formatLuks(ops, enc, sizeBytes, signal);
  return sizeBytes;
}

/**
 * An encrypted LV from an image: the image is spooled (verified) to a temporary file and
 * inspected, the LV formatted as LUKS, then `qemu-img convert -n` writes it through the key.
 */
export async function createEncryptedFromImage(
  ops: EncryptedLvOps,
  image: SourceImage,
  format: 'raw' | 'qcow2',
  options: CreateFromImageOptions & { encryption: DiskEncryption },
  ctx: { backend: string; diskId: string },
): Promise<Omit<CreateResult, 'durationMs'>> {
  const { signal } = options;
  const progress = new ProgressReporter(options.onProgress);
  await mkdir(ops.tempDir, { recursive: true, mode: 0o700 });
  const spoolDir = await mkdtemp(join(ops.tempDir, 'ephemera-lvm-'));
  try {
    const spool = join(spoolDir, `image.${format}`);
    await pipeline(readImage(image, { signal, progress, backend: ctx.backend }), createWriteStream(spool));
    const { virtualSize } = await inspectImageFile(spool, format, signal);
    if (options.sizeBytes !== undefined && options.sizeBytes < virtualSize)
      throw new InvalidArgumentError('options.sizeBytes', `smaller than the image's virtual size ${virtualSize}`, ctx);
    const payload = Math.max(options.sizeBytes ?? 0, virtualSize, 1);
    const dev = await formatLuks(ops, options.encryption, payload, signal);
    throwIfAborted(signal, 'createFromImage');
    await withKey(options.encryption, spoolDir, (s) =>
      qemuImg.convert(spool, dev, {
        sourceFormat: format,
        targetFormat: 'luks',
        noCreate: true,
        untrusted: false,
        targetImageOpts: luksImageOpts(dev, s, 'host_device'),
        secrets: [s],
        timeoutMs: 3_600_000,
        ...(signal ? { signal } : {}),
        onProgress: (pct) => progress.report('convert', Math.floor((pct / 100) * virtualSize), virtualSize),
      }),
    );
    progress.finish(virtualSize, virtualSize);
    return {
      method: 'imported',
      reason: 'the lvm backend cannot clone; encrypted: the image was converted into a LUKS volume on the LV',
      bytesWritten: virtualSize,
      sizeBytes: payload,
    };
  } finally {
    await rm(spoolDir, { recursive: true, force: true }).catch(() => undefined);
  }
}
