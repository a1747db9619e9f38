// Encrypted RBD disks with QEMU's LUKS (LUKS1; librbd's own LUKS2 costs ~0.5 GiB per unlock).
// Ceph 16 cannot format a clone ("cannot format a cloned image"), so an encrypted root disk is a
// copy: the image is made as a plain disk first (a clone when possible, else the verified
// import), then `qemu-img convert -O luks` streams it, Ceph to Ceph, into the encrypted disk,
// and the plain one is removed. The key reaches qemu-img only in a 0600 file while it runs.
import { tmpdir } from 'node:os';
import {
  AlreadyExistsError,
  InvalidArgumentError,
  ProgressReporter,
  isUuid,
  type CreateFromImageOptions,
  type CreateResult,
  type DiskEncryption,
  type DiskRef,
  type ImageBackend,
  type OwnerStamp,
  type SourceImage,
} from '@ephemera/image-backend';
import { QemuImg, luksCreateOptions, withSecretFile } from '@ephemera/qemu-img-wrapper';
import type { RbdContext } from './context.js';
import { NAME } from './errors.js';
import { rbdTarget } from './qemu.js';

/** Image metadata key of the libvirt secret UUID of an encrypted disk (never the key). */
export const SECRET_KEY = 'ephemera.secret';
/** Why an encrypted disk from an image is a copy: the spawn result and `image explain` say it. */
export const COPY_REASON =
  'encrypted: copied, not cloned, because Ceph 16 cannot encrypt a clone of a plain image (rbd encryption format refuses clones); the image was streamed by qemu-img convert into a LUKS image';

/** The temporary plain disk an encrypted create copies from (removed after, and by `remove`). */
export function plainSourceRef(disk: DiskRef): DiskRef {
  return { instance: disk.instance, name: `${disk.name}.plain` };
}

/** Refuses a malformed encryption request (no key, bad UUID) before anything exists. */
export function checkEncryption(enc: DiskEncryption, ctx: { backend: string; diskId: string }): void {
  if (enc.format !== 'luks' || !isUuid(enc.secretUuid))
    throw new InvalidArgumentError('options.encryption', "expected { format: 'luks', secretUuid: <uuid> }", ctx);
  if (typeof enc.passphrase !== 'function')
    throw new InvalidArgumentError('options.encryption.passphrase', 'an encrypted disk needs its passphrase', ctx);
}

function qemuFor(ctx: RbdContext): QemuImg {
  return new QemuImg(ctx.options.qemuImgBinary ? { binary: ctx.options.qemuImgBinary } : {});
}

function target(ctx: RbdContext, id: string) {
  const o = ctx.options;
  return rbdTarget({
    pool: ctx.ops.cfg.pool,
    image: id,
    user: ctx.ops.cfg.clientId,
    confPath: o.confPath,
    ...(o.keyringPath ? { keyringPath: o.keyringPath } : {}),
  });
}

async function withKey<T>(enc: DiskEncryption, fn: (s: { id: string; file: string }) => Promise<T>): Promise<T> {
  const key = await enc.passphrase!();
  try {
    return await withSecretFile(tmpdir(), key, fn);
  } finally {
    key.fill(0);
  }
}

/** Records the owner and the secret UUID on the new encrypted image. */
async function stamp(ctx: RbdContext, id: string, enc: DiskEncryption, owner: OwnerStamp | undefined) {
  await ctx.ops.stampOwner(id, owner);
  await ctx.ops.withImage(id, {}, (img) => img.metadataSet(SECRET_KEY, enc.secretUuid));
}

/** An encrypted blank disk: `qemu-img create -f luks` on RBD. */
export async function createEncryptedBlank(
  ctx: RbdContext,
  id: string,
  sizeBytes: number,
  enc: DiskEncryption,
  options: { owner?: OwnerStamp; signal?: AbortSignal },
  started: number,
): Promise<CreateResult> {
  const { owner, signal } = options;
  try {
    await withKey(enc, (s) =>
      qemuFor(ctx).create(target(ctx, id), {
        format: 'luks',
        size: sizeBytes,
        options: luksCreateOptions(s),
        secrets: [s],
        cleanup: () => ctx.ops.removeQuietly(id),
        ...(signal ? { signal } : {}),
      }),
    );
    await stamp(ctx, id, enc, owner);
  } catch (e) {
    await ctx.ops.removeQuietly(id);
    throw ctx.ops.translate(e, id, signal);
  }
  return { method: 'blank', sizeBytes, durationMs: Date.now() - started };
}

/** An encrypted disk from an image: a plain disk first, then a streamed conversion into LUKS. */
export async function createEncryptedFromImage(
  backend: ImageBackend,
  ctx: RbdContext,
  disk: DiskRef,
  image: SourceImage,
  options: CreateFromImageOptions & { encryption: DiskEncryption },
  started: number,
): Promise<CreateResult> {
  const id = `${disk.instance}_${disk.name}`;
  checkEncryption(options.encryption, { backend: NAME, diskId: id });
  if (await backend.exists(disk))
    throw new AlreadyExistsError(`disk ${id} already exists`, { backend: NAME, diskId: id });
  const plainRef = plainSourceRef(disk);
  const plainId = `${plainRef.instance}_${plainRef.name}`;
  const progress = new ProgressReporter(options.onProgress);
  const { encryption, onProgress: _p, owner, ...rest } = options;
  const plain = await backend.createFromImage(plainRef, image, {
    ...rest,
    onProgress: (e) => progress.report(e.phase === 'done' ? 'clone' : e.phase, e.bytesDone / 2, e.bytesTotal),
  });
  try {
    const size = plain.sizeBytes;
    await withKey(encryption, (s) =>
      qemuFor(ctx).convert(target(ctx, plainId), target(ctx, id), {
        untrusted: false,
        sourceFormat: 'raw',
        targetFormat: 'luks',
        targetOptions: luksCreateOptions(s),
        secrets: [s],
        timeoutMs: ctx.options.convertTimeoutMs ?? 3_600_000,
        ...(options.signal ? { signal: options.signal } : {}),
        onProgress: (pct) => progress.report('convert', Math.floor(size / 2 + (pct / 200) * size), size),
        cleanup: () => ctx.ops.removeQuietly(id),
      }),
    );
    await stamp(ctx, id, encryption, owner);
    progress.finish(size, size);
    return {
      method: 'imported',
      reason: plain.reason ? `${COPY_REASON} (plain copy: ${plain.method}, ${plain.reason})` : COPY_REASON,
      bytesWritten: size,
      sizeBytes: size,
      durationMs: Date.now() - started,
    };
  } catch (e) {
    await ctx.ops.removeQuietly(id);
    throw ctx.ops.translate(e, id, options.signal);
  } finally {
    await ctx.ops.removeQuietly(plainId);
  }
}
