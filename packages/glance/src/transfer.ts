// Image data in and out of Glance: upload bodies, and the download stream that is hashed on the
// fly and verified against the image record at its end.
import { Readable } from 'node:stream';
import type { DownloadOptions, DownloadResult, ImageDownload, UploadBody } from './client-types.js';
import { ChecksumMismatchError, GlanceAbortedError, ImageStateError, SizeMismatchError } from './errors.js';
import { imagePath, mapFetchError, sig, TIMEOUT, type GlanceHttp } from './http.js';
import type { GlanceImage } from './types.js';
import { expectedHash, startHash } from './verify.js';

/** @internal the body of GlanceClient.download once the image record is known. */
export async function openDownload(
  http: GlanceHttp,
  imageId: string,
  image: GlanceImage,
  idleMs: number,
  opts: DownloadOptions,
): Promise<ImageDownload> {
  if (image.status !== 'active') throw new ImageStateError(imageId, image.status, 'only active images have data');
  const verify = opts.verify ?? true;
  const expected = verify ? expectedHash(image) : undefined;
  const size = typeof image.size === 'number' ? image.size : null;
  const raw = await http.request({
    method: 'GET',
    path: `${imagePath(imageId)}/file`,
    imageId,
    idempotent: true,
    stream: true,
    ...sig(opts),
  });
  raw.done();
  const { res, controller } = raw;
  if (res.status === 204 || !res.body) throw new ImageStateError(imageId, image.status, 'Glance returned no data');
  const endpoint = http.url;
  const userSignal = opts.signal;

  let settle!: { resolve: (r: DownloadResult) => void; reject: (e: unknown) => void };
  const result = new Promise<DownloadResult>((resolve, reject) => {
    settle = { resolve, reject };
  });
  result.catch(() => undefined);

  const body = res.body;
  const onProgress = opts.onProgress;
  let lastPercent = -1;
  const report = (bytes: number, final: boolean): void => {
    if (!onProgress) return;
    const percent = final ? 100 : size ? Math.min(99, Math.floor((bytes * 100) / size)) : 0;
    if (percent <= lastPercent) return;
    lastPercent = percent;
    onProgress({ operation: 'download', imageId, percent, bytes, ...(size !== null ? { total: size } : {}) });
  };
  const onUserAbort = (): void => controller.abort(userSignal!.reason);
  let started = false;
  async function* verified(): AsyncGenerator<Buffer> {
    started = true;
    if (userSignal?.aborted) onUserAbort();
    userSignal?.addEventListener('abort', onUserAbort, { once: true });
    const hash = startHash(expected);
    let bytes = 0;
    let idle: NodeJS.Timeout | undefined;
    const arm = (): void => {
      clearTimeout(idle);
      idle = setTimeout(() => controller.abort(TIMEOUT), idleMs);
    };
    const reader = body.getReader();
    try {
      arm();
      for (;;) {
        let chunk: { done: true; value?: undefined } | { done: false; value: Uint8Array };
        try {
          chunk = await reader.read();
        } catch (err) {
          throw mapFetchError(
            err,
            controller,
            userSignal,
            imageId,
            `download of image ${imageId} broke after ${bytes} bytes`,
            idleMs,
            endpoint,
          );
        }
        if (chunk.done) break;
        arm();
        const buf = Buffer.from(chunk.value.buffer, chunk.value.byteOffset, chunk.value.byteLength);
        hash?.update(buf);
        bytes += buf.length;
        report(bytes, false);
        yield buf;
      }
    } finally {
      clearTimeout(idle);
      userSignal?.removeEventListener('abort', onUserAbort);
      reader.releaseLock();
      // Stops the transfer when the consumer gave up early.
      if (!controller.signal.aborted) body.cancel().catch(() => undefined);
    }
    if (verify && size !== null && bytes !== size) throw new SizeMismatchError(imageId, size, bytes);
    const digest = hash?.digest('hex');
    if (expected && digest !== expected.value)
      throw new ChecksumMismatchError(imageId, expected.algorithm, expected.value, digest ?? '', bytes);
    report(bytes, true);
    settle.resolve({
      imageId,
      bytes,
      ...(expected ? { algorithm: expected.algorithm, digest } : {}),
      verified: expected !== undefined,
    });
  }
  const stream = Readable.from(verified(), { objectMode: false, highWaterMark: 1 << 20 });
  stream.on('error', (err) => settle.reject(err));
  stream.on('close', () => {
    // Destroyed before the first read: the generator never ran, so release the connection here.
    if (!started) body.cancel().catch(() => undefined);
    settle.reject(new GlanceAbortedError(`download of image ${imageId} was closed before its end`, { imageId }));
  });
  return { imageId, stream, size, ...(expected ? { expected } : {}), result };
}

/** @internal */
export async function* toAsyncIterable(data: Exclude<UploadBody, Uint8Array>): AsyncGenerator<Uint8Array> {
  if (typeof (data as ReadableStream).getReader === 'function' && !(data instanceof Readable)) {
    const reader = (data as ReadableStream<Uint8Array>).getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return;
        yield value;
      }
    } finally {
      reader.releaseLock();
    }
  }
  for await (const chunk of data as AsyncIterable<Uint8Array | string>) {
    yield typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
  }
}
