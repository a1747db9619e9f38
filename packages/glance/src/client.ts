/**
 * Glance v2 client over Node's built-in fetch (undici): images, streaming upload and verified
 * streaming download, properties, locations, copy-image import with polling.
 */
import { randomUUID } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { rename, unlink } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { NoAuth, type TokenProvider } from './auth.js';
import {
  ChecksumMismatchError,
  GlanceAbortedError,
  GlanceAuthError,
  GlanceConflictError,
  GlanceConnectionError,
  GlanceError,
  GlanceHttpError,
  GlanceNotFoundError,
  GlanceTimeoutError,
  ImageImportError,
  ImageImportTimeoutError,
  ImageStateError,
  SizeMismatchError,
} from './errors.js';
import { backoffDelay, DEFAULT_RETRY, sleep, type RetryPolicy } from './retry.js';
import type {
  CreateImageRequest,
  GlanceImage,
  GlanceStore,
  ImageLocationEntry,
  ImageStatus,
  JsonPatchOp,
  ListImagesFilter,
} from './types.js';
import { expectedHash, startHash, type ExpectedHash } from './verify.js';

/** Options of {@link GlanceClient}. */
export interface GlanceClientOptions {
  /** Glance base URL without `/v2`, e.g. `http://127.0.0.1:9292`. */
  url: string;
  /** Token source. Default {@link NoAuth} (keystone-less Glance). */
  auth?: TokenProvider;
  /** Time allowed for one request until its answer headers (and body, for JSON calls). Default 30 000 ms. */
  timeoutMs?: number;
  /** A download fails when no byte arrives for this long. Default 60 000 ms. */
  idleTimeoutMs?: number;
  /** Retries on 5xx, connection errors and timeouts (never on 4xx). Default {@link DEFAULT_RETRY}. */
  retry?: Partial<RetryPolicy>;
  /** Sent as `User-Agent`. */
  userAgent?: string;
}

/** Options every call accepts. */
export interface CallOptions {
  /** Cancels the call (and a running download). */
  signal?: AbortSignal;
}

/** Progress of a long operation: `percent` is monotonic and ends at exactly 100 on success. */
export interface ProgressEvent {
  operation: 'download' | 'copy-image';
  imageId: string;
  /** 0..100, never decreasing; 100 only once the operation succeeded (download: verified). */
  percent: number;
  /** Bytes done so far, when known. */
  bytes?: number;
  /** Total bytes, when known. */
  total?: number;
}

/** Options of {@link GlanceClient.download}. */
export interface DownloadOptions extends CallOptions {
  /** Called as bytes arrive (at most once per whole percent) and with 100 after verification. */
  onProgress?: (event: ProgressEvent) => void;
  /** Verify the bytes against `os_hash_value` (or `checksum`) and the size. Default true. */
  verify?: boolean;
  /** The image record when the caller already has it (saves a GET). */
  image?: GlanceImage;
}

/** What a finished download proved. */
export interface DownloadResult {
  imageId: string;
  bytes: number;
  /** Hash checked, `undefined` when Glance recorded none (or `verify: false`). */
  algorithm?: string;
  digest?: string;
  verified: boolean;
}

/** A running download. Read `stream`; it errors (at its end) when verification fails. */
export interface ImageDownload {
  imageId: string;
  /** The image's bytes. Errors: {@link ChecksumMismatchError}, {@link SizeMismatchError}, {@link GlanceConnectionError}, {@link GlanceTimeoutError}, {@link GlanceAbortedError}. */
  stream: Readable;
  /** Size Glance recorded, if any. */
  size: number | null;
  /** The hash being checked, if any. */
  expected?: ExpectedHash;
  /** Settles when the stream has ended (resolves only when verified). Never an unhandled rejection. */
  result: Promise<DownloadResult>;
}

/** Body accepted by {@link GlanceClient.upload}. */
export type UploadBody = Uint8Array | Readable | ReadableStream<Uint8Array> | AsyncIterable<Uint8Array>;

/** Options of {@link GlanceClient.copyImage}. */
export interface CopyImageOptions extends CallOptions {
  /** Fail when one store fails (Glance's `all_stores_must_succeed`). Default true. */
  allStoresMustSucceed?: boolean;
  /** Poll period. Default 1 000 ms. */
  pollIntervalMs?: number;
  /** Give up after this long. Default 600 000 ms. */
  timeoutMs?: number;
  /** Called with each polled image record. */
  onPoll?: (image: GlanceImage) => void;
  /** Progress from the import task's `Copied N MiB` messages; 100 when every store holds the image. */
  onProgress?: (event: ProgressEvent) => void;
}

/** An image's task (`GET /v2/images/ID/tasks`), e.g. an `api_image_import`. */
export interface ImageTask {
  id: string;
  type: string;
  status: 'pending' | 'processing' | 'success' | 'failure' | string;
  message?: string;
  created_at?: string;
  updated_at?: string;
  [key: string]: unknown;
}

/** Locations of an image as known to Glance. */
export interface ImageLocations {
  imageId: string;
  locations: ImageLocationEntry[];
  /** `direct_url` when Glance shows it. */
  directUrl?: string;
  /** Where `locations` came from: the newer `GET /v2/images/ID/locations` or the image record. */
  source: 'locations-api' | 'image';
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
type RequestBody = NonNullable<RequestInit['body']>;
const PATCH_TYPE = 'application/openstack-images-v2.1-json-patch';
const TIMEOUT = Symbol('glance-timeout');

interface RequestSpec {
  method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  path: string;
  imageId?: string;
  query?: Record<string, string | number | undefined>;
  json?: unknown;
  body?: RequestBody;
  headers?: Record<string, string>;
  /** Safe to send again after a 5xx or a broken connection. */
  idempotent: boolean;
  /** The body can be sent again (false for streams). */
  replayable?: boolean;
  signal?: AbortSignal;
  timeoutMs?: number;
  /** Return as soon as the headers arrived; the caller reads the body (and must call `done`). */
  stream?: boolean;
  /** Statuses returned to the caller instead of thrown. */
  allow?: number[];
  onAttempt?: (attempt: number) => void;
}

interface RawResponse {
  res: Response;
  /** For `stream` requests: the controller to abort the body and a function to stop the header timer. */
  controller: AbortController;
  done: () => void;
}

function splitList(v: unknown): string[] {
  return typeof v === 'string' ? v.split(',').map((s) => s.trim()).filter(Boolean) : [];
}

function errnoOf(err: unknown): string | undefined {
  let e: unknown = err;
  for (let i = 0; i < 5 && e && typeof e === 'object'; i++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string') return code;
    e = (e as { cause?: unknown }).cause;
  }
  return undefined;
}

/** Glance v2 client. Every method throws only {@link GlanceError} subclasses. */
export class GlanceClient {
  readonly url: string;
  readonly #auth: TokenProvider;
  readonly #timeoutMs: number;
  readonly #idleTimeoutMs: number;
  readonly #retry: RetryPolicy;
  readonly #userAgent: string;
  #locationsApi: boolean | undefined;

  constructor(opts: GlanceClientOptions) {
    let u: URL;
    try {
      u = new URL(opts.url);
    } catch {
      throw new TypeError(`GlanceClient: bad url ${JSON.stringify(opts.url)}`);
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new TypeError('GlanceClient: url must be http(s)');
    // Requests add `/v2/...` themselves; an endpoint given with its version (`.../v2`, as the
    // service catalog lists it) is stripped to the root, as the OpenStack clients do.
    this.url = `${u.origin}${u.pathname.replace(/\/+$/, '').replace(/\/v2(\.\d+)?$/, '')}`;
    this.#auth = opts.auth ?? new NoAuth();
    this.#timeoutMs = opts.timeoutMs ?? 30_000;
    this.#idleTimeoutMs = opts.idleTimeoutMs ?? 60_000;
    this.#retry = { ...DEFAULT_RETRY, ...opts.retry };
    this.#userAgent = opts.userAgent ?? 'ephemera-glance/0';
  }

  // ---------------------------------------------------------------- images

  /** `GET /v2/images/ID`. */
  async getImage(imageId: string, opts: CallOptions = {}): Promise<GlanceImage> {
    return this.#json<GlanceImage>({ method: 'GET', path: imagePath(imageId), imageId, idempotent: true, ...sig(opts) });
  }

  /** All images matching `filter`, following Glance's `next` links page by page. */
  async *listImages(filter: ListImagesFilter = {}, opts: CallOptions = {}): AsyncGenerator<GlanceImage> {
    let path: string | undefined = '/v2/images';
    let query: Record<string, string | number | undefined> | undefined = { ...filter };
    while (path) {
      const page: { images: GlanceImage[]; next?: string } = await this.#json({
        method: 'GET',
        path,
        ...(query ? { query } : {}),
        idempotent: true,
        ...sig(opts),
      });
      for (const img of page.images) yield img;
      if (!page.next || page.images.length === 0) return;
      const next = new URL(page.next, 'http://x');
      if (!next.pathname.endsWith('/v2/images')) return;
      path = `/v2/images${next.search}`;
      query = undefined;
    }
  }

  /**
   * `POST /v2/images`. The client picks the image id when `req.id` is absent, which makes a retry
   * after a lost answer safe: a 409 on a retry means the first attempt created it.
   */
  async createImage(req: CreateImageRequest, opts: CallOptions = {}): Promise<GlanceImage> {
    const id = req.id ?? randomUUID();
    let attempts = 0;
    try {
      return await this.#json<GlanceImage>({
        method: 'POST',
        path: '/v2/images',
        json: { ...req, id },
        imageId: id,
        idempotent: true,
        onAttempt: (n) => {
          attempts = n;
        },
        ...sig(opts),
      });
    } catch (err) {
      if (err instanceof GlanceConflictError && attempts > 1) return this.getImage(id, opts);
      throw err;
    }
  }

  /** `DELETE /v2/images/ID`. A 404 on a retry (the first attempt worked) counts as success. */
  async deleteImage(imageId: string, opts: CallOptions = {}): Promise<void> {
    let attempts = 0;
    try {
      await this.#json({
        method: 'DELETE',
        path: imagePath(imageId),
        imageId,
        idempotent: true,
        onAttempt: (n) => {
          attempts = n;
        },
        ...sig(opts),
      });
    } catch (err) {
      if (err instanceof GlanceNotFoundError && attempts > 1) return;
      throw err;
    }
  }

  /** `PATCH /v2/images/ID` with JSON-patch operations. Not retried after a 5xx (not idempotent in general). */
  async updateImage(imageId: string, ops: JsonPatchOp[], opts: CallOptions = {}): Promise<GlanceImage> {
    return this.#json<GlanceImage>({
      method: 'PATCH',
      path: imagePath(imageId),
      imageId,
      json: ops,
      headers: { 'content-type': PATCH_TYPE },
      idempotent: false,
      ...sig(opts),
    });
  }

  /** Set custom properties (string values): `add` for new keys, `replace` for existing ones. */
  async setProperties(imageId: string, props: Record<string, string>, opts: CallOptions = {}): Promise<GlanceImage> {
    const image = await this.getImage(imageId, opts);
    const ops: JsonPatchOp[] = Object.entries(props).map(([k, v]) => ({
      op: k in image ? 'replace' : 'add',
      path: `/${escapePointer(k)}`,
      value: v,
    }));
    return ops.length ? this.updateImage(imageId, ops, opts) : image;
  }

  /** Remove custom properties; keys the image does not have are ignored. */
  async removeProperties(imageId: string, keys: string[], opts: CallOptions = {}): Promise<GlanceImage> {
    const image = await this.getImage(imageId, opts);
    const ops: JsonPatchOp[] = keys.filter((k) => k in image).map((k) => ({ op: 'remove', path: `/${escapePointer(k)}` }));
    return ops.length ? this.updateImage(imageId, ops, opts) : image;
  }

  /** Poll until the image reaches one of `statuses`; `killed`/`deleted` end the wait with {@link ImageStateError}. */
  async waitForStatus(
    imageId: string,
    statuses: ImageStatus[],
    opts: CallOptions & { timeoutMs?: number; pollIntervalMs?: number } = {},
  ): Promise<GlanceImage> {
    const deadline = Date.now() + (opts.timeoutMs ?? 300_000);
    for (;;) {
      const image = await this.getImage(imageId, opts);
      if (statuses.includes(image.status)) return image;
      if (['killed', 'deleted', 'pending_delete'].includes(image.status))
        throw new ImageStateError(imageId, image.status, `waited for ${statuses.join('|')}`);
      if (Date.now() > deadline) throw new GlanceTimeoutError(`image ${imageId} still ${image.status}`, opts.timeoutMs ?? 300_000, { imageId });
      await this.#sleep(opts.pollIntervalMs ?? 500, opts.signal, imageId);
    }
  }

  // ---------------------------------------------------------------- data

  /**
   * `PUT /v2/images/ID/file` from a buffer or a stream; returns the image after the upload.
   * A buffer upload is retried like an idempotent call; a stream upload is never retried.
   */
  async upload(imageId: string, data: UploadBody, opts: CallOptions & { timeoutMs?: number } = {}): Promise<GlanceImage> {
    const replayable = data instanceof Uint8Array;
    const body: RequestBody = replayable ? (data as Uint8Array) : (toAsyncIterable(data) as unknown as RequestBody);
    let attempts = 0;
    try {
      await this.#json({
        method: 'PUT',
        path: `${imagePath(imageId)}/file`,
        imageId,
        body,
        headers: { 'content-type': 'application/octet-stream' },
        idempotent: replayable,
        replayable,
        timeoutMs: opts.timeoutMs ?? 3_600_000,
        onAttempt: (n) => {
          attempts = n;
        },
        ...sig(opts),
      });
    } catch (err) {
      // A retried buffer upload whose first attempt did land: the image is active with our size.
      if (!(err instanceof GlanceConflictError && attempts > 1)) throw err;
      const image = await this.getImage(imageId, opts);
      if (image.status === 'active' && image.size === (data as Uint8Array).byteLength) return image;
      throw err;
    }
    return this.getImage(imageId, opts);
  }

  /**
   * `GET /v2/images/ID/file` as a stream, hashed on the fly. At the end of the stream the digest is
   * compared to `os_hash_value` (falling back to `checksum`) and the byte count to `size`; a
   * mismatch errors the stream with {@link ChecksumMismatchError} / {@link SizeMismatchError}, so a
   * consumer that writes while reading can roll back. Only the request is retried, never a
   * broken body.
   */
  async download(imageId: string, opts: DownloadOptions = {}): Promise<ImageDownload> {
    const image = opts.image ?? (await this.getImage(imageId, opts));
    if (image.status !== 'active') throw new ImageStateError(imageId, image.status, 'only active images have data');
    const verify = opts.verify ?? true;
    const expected = verify ? expectedHash(image) : undefined;
    const size = typeof image.size === 'number' ? image.size : null;
    const raw = await this.#request({
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
    const idleMs = this.#idleTimeoutMs;
    const endpoint = this.url;
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
            throw mapFetchError(err, controller, userSignal, imageId, `download of image ${imageId} broke after ${bytes} bytes`, idleMs, endpoint);
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

  /**
   * Download into `dest` through a temporary file in the same directory, renamed into place only
   * after verification passed; on any failure the temporary file is removed (nothing is left).
   */
  async downloadToFile(imageId: string, dest: string, opts: DownloadOptions = {}): Promise<DownloadResult> {
    const dl = await this.download(imageId, opts);
    const tmp = `${dest}.part-${randomUUID().slice(0, 8)}`;
    try {
      await pipeline(dl.stream, createWriteStream(tmp, { flags: 'wx', mode: 0o600 }));
      const r = await dl.result;
      await rename(tmp, dest);
      return r;
    } catch (err) {
      dl.stream.destroy();
      await unlink(tmp).catch(() => undefined);
      throw err;
    }
  }

  // ---------------------------------------------------------------- locations

  /**
   * The image's locations: from `GET /v2/images/ID/locations` when this Glance has it (2023.2+),
   * else from the image record (`locations`, needs `show_multiple_locations`) plus `direct_url`.
   */
  async getLocations(imageId: string, opts: CallOptions & { image?: GlanceImage } = {}): Promise<ImageLocations> {
    const known = opts.image?.id === imageId ? opts.image : undefined;
    if (this.#locationsApi !== false) {
      const raw = await this.#request({
        method: 'GET',
        path: `${imagePath(imageId)}/locations`,
        imageId,
        idempotent: true,
        allow: [403, 404, 405, 501],
        ...sig(opts),
      });
      const text = await raw.res.text().finally(raw.done);
      if (raw.res.ok) {
        this.#locationsApi = true;
        const locations = parseJson<ImageLocationEntry[]>(text, 'GET', `${imagePath(imageId)}/locations`, raw.res.status, imageId);
        const image = known ?? (await this.getImage(imageId, opts));
        return { imageId, locations, ...(image.direct_url ? { directUrl: image.direct_url } : {}), source: 'locations-api' };
      }
      // 404 is ambiguous (no image, or no such API): the image GET below decides.
      if (raw.res.status !== 404) this.#locationsApi = false;
      const image = raw.res.status === 404 || !known ? await this.getImage(imageId, opts) : known;
      this.#locationsApi = false;
      return fromImage(image);
    }
    return fromImage(known ?? (await this.getImage(imageId, opts)));
  }

  /** Add a location (`PATCH add /locations/-`; Glance needs `show_multiple_locations = True`). */
  async addLocation(imageId: string, url: string, metadata: Record<string, unknown> = {}, opts: CallOptions = {}): Promise<GlanceImage> {
    return this.updateImage(imageId, [{ op: 'add', path: '/locations/-', value: { url, metadata } }], opts);
  }

  /** Remove the location with this URL (`PATCH remove /locations/N`). */
  async removeLocation(imageId: string, url: string, opts: CallOptions = {}): Promise<GlanceImage> {
    const image = await this.getImage(imageId, opts);
    const index = (image.locations ?? []).findIndex((l) => l.url === url);
    if (index < 0) throw new GlanceNotFoundError('PATCH', imagePath(imageId), `no location ${url}`, imageId);
    return this.updateImage(imageId, [{ op: 'remove', path: `/locations/${index}` }], opts);
  }

  // ---------------------------------------------------------------- stores and import

  /** Stores of a multi-store Glance (`GET /v2/info/stores`); `[]` when multi-store is off. */
  async stores(opts: CallOptions = {}): Promise<GlanceStore[]> {
    const raw = await this.#request({ method: 'GET', path: '/v2/info/stores', idempotent: true, allow: [404, 410], ...sig(opts) });
    const text = await raw.res.text().finally(raw.done);
    if (!raw.res.ok) return [];
    return parseJson<{ stores: GlanceStore[] }>(text, 'GET', '/v2/info/stores', raw.res.status).stores ?? [];
  }

  /** Import methods this Glance enables (`GET /v2/info/import`). */
  async importMethods(opts: CallOptions = {}): Promise<string[]> {
    const info = await this.#json<{ 'import-methods'?: { value?: string[] } }>({
      method: 'GET',
      path: '/v2/info/import',
      idempotent: true,
      ...sig(opts),
    });
    return info['import-methods']?.value ?? [];
  }

  /**
   * Copy an active image into other stores (interoperable import, method `copy-image`), then poll
   * `os_glance_importing_to_stores` / `os_glance_failed_import` until the stores hold it.
   * Stores already holding the image are skipped. Throws {@link ImageImportError} or
   * {@link ImageImportTimeoutError}.
   */
  async copyImage(imageId: string, stores: string[], opts: CopyImageOptions = {}): Promise<GlanceImage> {
    const before = await this.getImage(imageId, opts);
    if (before.status !== 'active') throw new ImageStateError(imageId, before.status, 'copy-image needs an active image');
    const missing = stores.filter((s) => !splitList(before.stores).includes(s));
    if (missing.length === 0) return before;
    await this.#json({
      method: 'POST',
      path: `${imagePath(imageId)}/import`,
      imageId,
      json: { method: { name: 'copy-image' }, stores: missing, all_stores_must_succeed: opts.allStoresMustSucceed ?? true },
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
      opts.onProgress({ operation: 'copy-image', imageId, percent, ...(bytes !== undefined ? { bytes } : {}), ...(total !== undefined ? { total } : {}) });
    };
    report(0);
    for (;;) {
      const image = await this.getImage(imageId, opts);
      opts.onPoll?.(image);
      if (opts.onProgress && total) {
        const taskId = typeof image.os_glance_import_task === 'string' ? image.os_glance_import_task : undefined;
        const task = taskId ? (await this.imageTasks(imageId, opts)).find((t) => t.id === taskId) : undefined;
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
        const task = taskId ? (await this.imageTasks(imageId, opts)).find((t) => t.id === taskId) : undefined;
        if (task?.status === 'failure') throw new ImageImportError(imageId, missing.filter((s) => !have.includes(s)), `image ${imageId}: import task ${task.id} failed: ${task.message ?? ''}`);
        if (task?.status === 'success') {
          const last = await this.getImage(imageId, opts);
          if (missing.every((s) => splitList(last.stores).includes(s))) {
            report(100, total);
            return last;
          }
          const notThere = missing.filter((s) => !splitList(last.stores).includes(s));
          throw new ImageImportError(imageId, notThere, `image ${imageId}: import task ${task.id} ended without copying to ${notThere.join(', ')}`);
        }
      }
      if (Date.now() >= deadline) throw new ImageImportTimeoutError(imageId, pending.length ? pending : missing, timeoutMs);
      await this.#sleep(Math.min(opts.pollIntervalMs ?? 1_000, Math.max(0, deadline - Date.now())), opts.signal, imageId);
    }
  }

  /** Tasks of an image (`GET /v2/images/ID/tasks`, Glance Wallaby+); `[]` when the API is absent. */
  async imageTasks(imageId: string, opts: CallOptions = {}): Promise<ImageTask[]> {
    const path = `${imagePath(imageId)}/tasks`;
    const raw = await this.#request({ method: 'GET', path, imageId, idempotent: true, allow: [404, 405], ...sig(opts) });
    const text = await raw.res.text().finally(raw.done);
    if (!raw.res.ok) return [];
    return parseJson<{ tasks?: ImageTask[] }>(text, 'GET', path, raw.res.status, imageId).tasks ?? [];
  }

  /** `GET /healthcheck` answered 200. Never throws. */
  async healthy(opts: CallOptions = {}): Promise<boolean> {
    try {
      const raw = await this.#request({ method: 'GET', path: '/healthcheck', idempotent: true, allow: [503], ...sig(opts) });
      await raw.res.arrayBuffer().finally(raw.done);
      return raw.res.status === 200;
    } catch {
      return false;
    }
  }

  // ---------------------------------------------------------------- core

  async #json<T>(spec: RequestSpec): Promise<T> {
    const raw = await this.#request(spec);
    const text = await raw.res.text().catch((err: unknown) => {
      raw.done();
      throw mapFetchError(err, raw.controller, spec.signal, spec.imageId, `reading ${spec.method} ${spec.path}`, spec.timeoutMs ?? this.#timeoutMs, this.url);
    });
    raw.done();
    if (!text) return undefined as T;
    return parseJson<T>(text, spec.method, spec.path, raw.res.status, spec.imageId);
  }

  async #sleep(ms: number, signal: AbortSignal | undefined, imageId: string | undefined): Promise<void> {
    try {
      await sleep(ms, signal);
    } catch (err) {
      throw new GlanceAbortedError('aborted', { ...(imageId ? { imageId } : {}), cause: err });
    }
  }

  /** One logical request with retries. Throws typed errors for statuses >= 400 not in `allow`. */
  async #request(spec: RequestSpec): Promise<RawResponse> {
    const attempts = Math.max(1, this.#retry.attempts);
    let reauthed = false;
    for (let attempt = 1; ; attempt++) {
      spec.onAttempt?.(attempt);
      if (spec.signal?.aborted) throw new GlanceAbortedError(`${spec.method} ${spec.path} aborted`, withId(spec.imageId, spec.signal.reason));
      let raw: RawResponse | undefined;
      let retryable = false;
      try {
        raw = await this.#once(spec);
      } catch (err) {
        const code = errnoOf((err as GlanceError).cause);
        const canResend = spec.replayable !== false;
        // A refused connection never delivered the request: safe to resend even when not idempotent.
        retryable =
          canResend &&
          ((err instanceof GlanceConnectionError && (spec.idempotent || code === 'ECONNREFUSED')) ||
            (err instanceof GlanceTimeoutError && spec.idempotent));
        if (!retryable || attempt >= attempts) throw err;
      }
      if (raw) {
        const { res } = raw;
        if (res.ok || spec.allow?.includes(res.status)) return raw;
        const text = await res.text().catch(() => '');
        raw.done();
        if (res.status === 401 && this.#auth.invalidate && !reauthed) {
          reauthed = true;
          this.#auth.invalidate();
          attempt--;
          continue;
        }
        const err = httpError(res.status, spec.method, spec.path, text, spec.imageId);
        if (res.status < 500 || !spec.idempotent || spec.replayable === false || attempt >= attempts) throw err;
      }
      await this.#sleep(backoffDelay(this.#retry, attempt), spec.signal, spec.imageId);
    }
  }

  async #once(spec: RequestSpec): Promise<RawResponse> {
    const timeoutMs = spec.timeoutMs ?? this.#timeoutMs;
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(TIMEOUT), timeoutMs);
    const onUserAbort = (): void => controller.abort(spec.signal!.reason);
    spec.signal?.addEventListener('abort', onUserAbort, { once: true });
    const done = (): void => {
      clearTimeout(timer);
      spec.signal?.removeEventListener('abort', onUserAbort);
    };
    let url = `${this.url}${spec.path}`;
    if (spec.query) {
      const q = new URLSearchParams();
      for (const [k, v] of Object.entries(spec.query)) if (v !== undefined) q.set(k, String(v));
      const s = q.toString();
      if (s) url += `?${s}`;
    }
    const headers: Record<string, string> = { accept: 'application/json', 'user-agent': this.#userAgent, ...spec.headers };
    let token: string | undefined;
    try {
      token = await this.#auth.token(controller.signal);
    } catch (err) {
      done();
      if (err instanceof GlanceError) throw err;
      throw new GlanceConnectionError(`token provider failed: ${(err as Error).message}`, withId(spec.imageId, err));
    }
    if (token) headers['x-auth-token'] = token;
    if (this.#auth.headers) Object.assign(headers, this.#auth.headers());
    let body = spec.body;
    if (spec.json !== undefined) {
      body = JSON.stringify(spec.json);
      headers['content-type'] ??= 'application/json';
    }
    try {
      const init: RequestInit & { duplex?: 'half' } = { method: spec.method, headers, signal: controller.signal, redirect: 'error' };
      if (body !== undefined) {
        init.body = body;
        if (!(typeof body === 'string' || body instanceof Uint8Array)) init.duplex = 'half';
      }
      // The timer keeps running while the caller reads a JSON body; `done` stops it.
      const res = await fetch(url, init);
      return { res, controller, done };
    } catch (err) {
      done();
      throw mapFetchError(err, controller, spec.signal, spec.imageId, `${spec.method} ${spec.path}`, timeoutMs, this.url);
    }
  }
}

function withId(imageId: string | undefined, cause: unknown): { imageId?: string; cause?: unknown } {
  return { ...(imageId !== undefined ? { imageId } : {}), cause };
}

function sig(opts: CallOptions): { signal?: AbortSignal } {
  return opts.signal ? { signal: opts.signal } : {};
}

function imagePath(imageId: string): string {
  if (typeof imageId !== 'string' || !UUID_RE.test(imageId))
    throw new GlanceError('GLANCE_BAD_IMAGE_ID', `image id ${JSON.stringify(String(imageId)).slice(0, 80)} is not a UUID`);
  return `/v2/images/${imageId.toLowerCase()}`;
}

function escapePointer(key: string): string {
  return key.replace(/~/g, '~0').replace(/\//g, '~1');
}

function fromImage(image: GlanceImage): ImageLocations {
  return {
    imageId: image.id,
    locations: image.locations ?? [],
    ...(image.direct_url ? { directUrl: image.direct_url } : {}),
    source: 'image',
  };
}

function parseJson<T>(text: string, method: string, path: string, status: number, imageId?: string): T {
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new GlanceHttpError(status, method, path, `answer is not JSON: ${text.slice(0, 200)}`, {
      code: 'GLANCE_BAD_ANSWER',
      ...(imageId !== undefined ? { imageId } : {}),
    });
  }
}

function httpError(status: number, method: string, path: string, body: string, imageId?: string): GlanceHttpError {
  if (status === 404) return new GlanceNotFoundError(method, path, body, imageId);
  if (status === 409) return new GlanceConflictError(method, path, body, imageId);
  if (status === 401 || status === 403) return new GlanceAuthError(status, method, path, body, imageId);
  return new GlanceHttpError(status, method, path, body, imageId !== undefined ? { imageId } : {});
}

/**
 * What actually went wrong under a fetch failure: undici's own message is only "fetch failed", the
 * socket's error (`connect ECONNREFUSED 127.0.0.1:9292`, `getaddrinfo ENOTFOUND host`) is its cause,
 * or several of them in an AggregateError when every address of a name was refused.
 */
function causeText(err: unknown): string {
  const parts: string[] = [];
  let e: unknown = err;
  for (let i = 0; i < 5 && e && typeof e === 'object'; i++) {
    const msg = (e as Error).message;
    const inner = (e as { errors?: unknown }).errors;
    if (Array.isArray(inner) && inner.length) parts.push(inner.map((x) => (x as Error)?.message ?? String(x)).join(', '));
    else if (msg && msg !== 'fetch failed') parts.push(msg);
    e = (e as { cause?: unknown }).cause;
  }
  const code = errnoOf(err);
  const text = parts.length ? parts[parts.length - 1]! : '';
  return text ? (code && !text.includes(code) ? `${text} (${code})` : text) : (code ?? 'connection failed');
}

function mapFetchError(
  err: unknown,
  controller: AbortController,
  userSignal: AbortSignal | undefined,
  imageId: string | undefined,
  what: string,
  timeoutMs: number,
  endpoint: string,
): GlanceError {
  if (err instanceof GlanceError) return err;
  if (controller.signal.aborted && controller.signal.reason === TIMEOUT)
    return new GlanceTimeoutError(`Glance ${endpoint} ${what}: no answer within ${timeoutMs} ms`, timeoutMs, withId(imageId, err));
  if (userSignal?.aborted) return new GlanceAbortedError(`${what}: aborted`, withId(imageId, userSignal.reason));
  return new GlanceConnectionError(`Glance ${endpoint} ${what}: ${causeText(err)}`, withId(imageId, err));
}

async function* toAsyncIterable(data: Exclude<UploadBody, Uint8Array>): AsyncGenerator<Uint8Array> {
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
