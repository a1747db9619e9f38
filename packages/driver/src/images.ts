/** Glance helpers used by the CLI and the demo: a client from the configuration and a verified file upload with progress. */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { basename } from 'node:path';
import { Transform } from 'node:stream';
import {
  GlanceClient,
  KeystoneTokenProvider,
  NoAuth,
  StaticToken,
  type GlanceClientOptions,
  type GlanceImage,
  type TokenProvider,
} from '@ephemera/glance';
import type { ProgressEvent } from '@ephemera/image-backend';
import { inspectImageFile, isQemuImgError } from '@ephemera/qemu-img-wrapper';
import type { DriverConfig } from './config.js';
import { DriverError } from './errors.js';

/** The Glance token provider the configuration asks for. */
export function glanceAuth(config: DriverConfig): TokenProvider {
  const g = config.glance;
  if (g.auth === 'token') return new StaticToken(g.token!);
  if (g.auth === 'keystone') {
    return new KeystoneTokenProvider({
      authUrl: g.keystoneUrl!,
      username: g.username!,
      password: g.password!,
      projectName: g.project!,
      userDomainName: g.domain,
    });
  }
  return new NoAuth();
}

/**
 * The Glance client options of the configuration: `glance.timeoutMs` bounds each request until its
 * answer headers and is also the download idle timeout (no byte for that long fails the download).
 */
export function glanceClientOptions(
  config: DriverConfig,
  auth: TokenProvider = glanceAuth(config),
): GlanceClientOptions {
  const g = config.glance;
  return { url: g.url, auth, timeoutMs: g.timeoutMs, idleTimeoutMs: g.timeoutMs, retry: { attempts: g.retries + 1 } };
}

/** A Glance client for the configured endpoint (no libvirt or Ceph needed). */
export function glanceClient(config: DriverConfig): GlanceClient {
  return new GlanceClient(glanceClientOptions(config));
}

/** Options of {@link uploadImage}. */
export interface UploadImageOptions {
  /** Image name (default: the file name). */
  name?: string;
  /** Glance `disk_format` (default: detected by the format inspector; only raw and qcow2 are accepted). */
  format?: 'raw' | 'qcow2';
  /** Extra image properties. */
  properties?: Record<string, string>;
  onProgress?: (e: ProgressEvent) => void;
  signal?: AbortSignal;
}

/**
 * Uploads an image file to Glance: detects its format with the inspector (refusing a backing file
 * or a format other than raw/qcow2), creates the record, streams the bytes with progress and waits
 * until the image is active. A failed upload deletes the half-made image.
 */
export async function uploadImage(
  glance: GlanceClient,
  path: string,
  opts: UploadImageOptions = {},
): Promise<GlanceImage> {
  const st = await stat(path).catch((err: NodeJS.ErrnoException) => {
    throw new DriverError('INVALID_ARGUMENT', `cannot read ${path}: ${err.code ?? err.message}`);
  });
  if (!st.isFile()) throw new DriverError('INVALID_ARGUMENT', `${path} is not a file`);
  const inspected = await inspectImageFile(path).catch((err: unknown) => {
    // Unparseable or empty: the file is no image to upload (as a wrong format is).
    if (isQemuImgError(err, 'QEMU_IMG_BAD_IMAGE'))
      throw new DriverError('INVALID_ARGUMENT', `${path} is not a usable image: ${err.message}`, { cause: err });
    throw err;
  });
  const detected = inspected.format;
  if (detected !== 'raw' && detected !== 'qcow2')
    throw new DriverError('INVALID_ARGUMENT', `${path} is ${detected}: only raw and qcow2 images are uploaded`);
  if (inspected.backingFile)
    throw new DriverError('INVALID_ARGUMENT', `${path} names a backing file: refusing to upload it`);
  const format = opts.format ?? detected;
  if (format !== detected) throw new DriverError('INVALID_ARGUMENT', `${path} is ${detected}, not ${format}`);
  const image = await glance.createImage({
    name: opts.name ?? basename(path),
    disk_format: format,
    container_format: 'bare',
    ...(opts.properties ?? {}),
  });
  try {
    let done = 0;
    let last = -1;
    const total = st.size;
    const counter = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        done += chunk.length;
        const percent = total > 0 ? Math.min(99, Math.floor((done / total) * 100)) : 99;
        if (percent !== last) {
          last = percent;
          opts.onProgress?.({ phase: 'import', bytesDone: done, bytesTotal: total, percent });
        }
        cb(null, chunk);
      },
    });
    const stream = createReadStream(path, { highWaterMark: 4 << 20 }).pipe(counter);
    await glance.upload(image.id, stream, opts.signal ? { signal: opts.signal } : {});
    const active = await glance.waitForStatus(image.id, ['active'], { timeoutMs: 600_000 });
    opts.onProgress?.({ phase: 'done', bytesDone: total, bytesTotal: total, percent: 100 });
    return active;
  } catch (err) {
    await glance.deleteImage(image.id).catch(() => undefined);
    throw err;
  }
}
