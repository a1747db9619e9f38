/**
 * A snapshot by upload: the disk is converted to a raw temp file (decrypted through its key when
 * the instance is encrypted) and streamed to Glance. The temp file is journaled, so a crash
 * leaves nothing; an encrypted disk's plaintext copy sits in a 0700 directory.
 */
import { createReadStream } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { GlanceClient } from '@ephemera/glance';
import type { DiskRef, DiskSource, ImageBackend } from '@ephemera/image-backend';
import type { ImageLocation } from '@ephemera/qemu-img-wrapper';
import type { DriverConfig } from './config.js';
import type { JournalOp } from './journal.js';
import type { CephContext } from './types.js';
import { MiB } from './util.js';

/** What to upload. `key`: the passphrase of an encrypted disk. */
export interface UploadJob {
  backend: ImageBackend;
  disk: DiskRef;
  imageId: string;
  op: JournalOp;
  key?: (() => Promise<Uint8Array>) | undefined;
}

export async function uploadDisk(
  config: DriverConfig,
  ceph: CephContext,
  glance: GlanceClient,
  job: UploadJob,
): Promise<void> {
  const { QemuImg, luksImageOpts, rbdLocation, withSecretFile } = await import('@ephemera/qemu-img-wrapper');
  const src = await job.backend.diskSource(job.disk);
  const base = join(config.stateDir, 'tmp');
  await mkdir(base, { recursive: true });
  const tmpDir = job.key ? join(base, `${job.imageId}.d`) : base;
  const tmp = join(tmpDir, `${job.imageId}.raw`);
  // Journaled before it exists (reconcile keeps what an unfinished operation names).
  await job.op.intent('upload-file', { kind: 'file', path: job.key ? tmpDir : tmp });
  if (job.key) await mkdir(tmpDir, { mode: 0o700 });
  const q = new QemuImg();
  let loc: ImageLocation;
  if (src.type === 'network') {
    const [pool, ...rest] = src.name.split('/');
    loc = rbdLocation({ pool: pool!, image: rest.join('/'), user: ceph.user, confPath: config.images.rbd.cephConf });
  } else {
    loc = src.path;
  }
  try {
    if (job.key && src.encryption) {
      const key = await job.key();
      try {
        await withSecretFile(tmpDir, key, (s) =>
          q.convert(loc, tmp, {
            sourceFormat: src.format,
            targetFormat: 'raw',
            untrusted: false,
            sourceImageOpts: encryptedOpts(src, loc, s, luksImageOpts),
            secrets: [s],
          }),
        );
      } finally {
        key.fill(0);
      }
    } else {
      await q.convert(loc, tmp, { sourceFormat: src.format, targetFormat: 'raw', untrusted: false });
    }
    await glance.upload(job.imageId, createReadStream(tmp, { highWaterMark: 4 * MiB }));
  } finally {
    await rm(job.key ? tmpDir : tmp, { recursive: true, force: true });
  }
}

/** `--image-opts` that open an encrypted disk with the key: LUKS in a raw disk, or qcow2's own. */
function encryptedOpts(
  src: DiskSource,
  loc: ImageLocation,
  s: { id: string; file: string },
  luksImageOpts: (l: ImageLocation, s: { id: string; file: string }, d?: 'file' | 'host_device') => string,
): string {
  if (src.format === 'qcow2') {
    const luks = luksImageOpts(loc, s);
    // Same spelling with qcow2 as the driver and its key as `encrypt.key-secret`.
    return luks.replace(/^driver=luks,/, 'driver=qcow2,').replace(/,key-secret=/, ',encrypt.key-secret=');
  }
  return luksImageOpts(loc, s, src.type === 'block' ? 'host_device' : 'file');
}
