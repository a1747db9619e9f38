/**
 * Glance v2 client over Node's built-in fetch (undici): images, streaming upload and verified
 * streaming download, properties, locations, copy-image import with polling.
 */
import { randomUUID } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { rename, unlink } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { NoAuth } from './auth.js';
import type {
  CallOptions,
  CopyImageOptions,
  DownloadOptions,
  DownloadResult,
  GlanceClientOptions,
  ImageDownload,
  ImageLocations,
  ImageTask,
  UploadBody,
} from './client-types.js';
import { GlanceConflictError, GlanceNotFoundError, GlanceTimeoutError, ImageStateError } from './errors.js';
import { GlanceHttp, imagePath, parseJson, sig, type RequestBody } from './http.js';
import { copyImageToStores } from './image-import.js';
import { DEFAULT_RETRY } from './retry.js';
import { openDownload, toAsyncIterable } from './transfer.js';
import type {
  CreateImageRequest,
  GlanceImage,
  GlanceStore,
  ImageLocationEntry,
  ImageStatus,
  JsonPatchOp,
  ListImagesFilter,
} from './types.js';

export type {
  CallOptions,
  CopyImageOptions,
  DownloadOptions,
  DownloadResult,
  GlanceClientOptions,
  ImageDownload,
  ImageLocations,
  ImageTask,
  ProgressEvent,
  UploadBody,
} from './client-types.js';

const PATCH_TYPE = 'application/openstack-images-v2.1-json-patch';

/** Glance v2 client. Every method throws only {@link GlanceError} subclasses. */
export class GlanceClient {
  readonly url: string;
  readonly #http: GlanceHttp;
  readonly #idleTimeoutMs: number;
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
    this.#http = new GlanceHttp({
      url: this.url,
      auth: opts.auth ?? new NoAuth(),
      timeoutMs: opts.timeoutMs ?? 30_000,
      retry: { ...DEFAULT_RETRY, ...opts.retry },
      userAgent: opts.userAgent ?? 'ephemera-glance/0',
    });
    this.#idleTimeoutMs = opts.idleTimeoutMs ?? 60_000;
  }

  // ---------------------------------------------------------------- images

  /** `GET /v2/images/ID`. */
  async getImage(imageId: string, opts: CallOptions = {}): Promise<GlanceImage> {
    return this.#http.json<GlanceImage>({
      method: 'GET',
      path: imagePath(imageId),
      imageId,
      idempotent: true,
      ...sig(opts),
    });
  }

  /** All images matching `filter`, following Glance's `next` links page by page. */
  async *listImages(filter: ListImagesFilter = {}, opts: CallOptions = {}): AsyncGenerator<GlanceImage> {
    let path: string | undefined = '/v2/images';
    let query: Record<string, string | number | undefined> | undefined = { ...filter };
    while (path) {
      const page: { images: GlanceImage[]; next?: string } = await this.#http.json({
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
      return await this.#http.json<GlanceImage>({
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
      await this.#http.json({
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
    return this.#http.json<GlanceImage>({
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
    const ops: JsonPatchOp[] = keys
      .filter((k) => k in image)
      .map((k) => ({ op: 'remove', path: `/${escapePointer(k)}` }));
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
      if (Date.now() > deadline)
        throw new GlanceTimeoutError(`image ${imageId} still ${image.status}`, opts.timeoutMs ?? 300_000, { imageId });
      await this.#http.sleep(opts.pollIntervalMs ?? 500, opts.signal, imageId);
    }
  }

  // ---------------------------------------------------------------- data

  /**
   * `PUT /v2/images/ID/file` from a buffer or a stream; returns the image after the upload.
   * A buffer upload is retried like an idempotent call; a stream upload is never retried.
   */
  async upload(
    imageId: string,
    data: UploadBody,
    opts: CallOptions & { timeoutMs?: number } = {},
  ): Promise<GlanceImage> {
    const replayable = data instanceof Uint8Array;
    const body: RequestBody = replayable ? (data as Uint8Array) : (toAsyncIterable(data) as unknown as RequestBody);
    let attempts = 0;
    try {
      await this.#http.json({
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
    return openDownload(this.#http, imageId, image, this.#idleTimeoutMs, opts);
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
      const raw = await this.#http.request({
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
        const locations = parseJson<ImageLocationEntry[]>(
          text,
          'GET',
          `${imagePath(imageId)}/locations`,
          raw.res.status,
          imageId,
        );
        const image = known ?? (await this.getImage(imageId, opts));
        return {
          imageId,
          locations,
          ...(image.direct_url ? { directUrl: image.direct_url } : {}),
          source: 'locations-api',
        };
      }
      // 404 is ambiguous (no image, or no such API): a record the caller just read says the image
      // exists (no second GET per spawn); without one, the image GET below decides.
      if (raw.res.status !== 404) this.#locationsApi = false;
      const image = known ?? (await this.getImage(imageId, opts));
      this.#locationsApi = false;
      return fromImage(image);
    }
    return fromImage(known ?? (await this.getImage(imageId, opts)));
  }

  /** Add a location (`PATCH add /locations/-`; Glance needs `show_multiple_locations = True`). */
  async addLocation(
    imageId: string,
    url: string,
    metadata: Record<string, unknown> = {},
    opts: CallOptions = {},
  ): Promise<GlanceImage> {
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
    const raw = await this.#http.request({
      method: 'GET',
      path: '/v2/info/stores',
      idempotent: true,
      allow: [404, 410],
      ...sig(opts),
    });
    const text = await raw.res.text().finally(raw.done);
    if (!raw.res.ok) return [];
    return parseJson<{ stores: GlanceStore[] }>(text, 'GET', '/v2/info/stores', raw.res.status).stores ?? [];
  }

  /** Import methods this Glance enables (`GET /v2/info/import`). */
  async importMethods(opts: CallOptions = {}): Promise<string[]> {
    const info = await this.#http.json<{ 'import-methods'?: { value?: string[] } }>({
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
    return copyImageToStores(this, this.#http, imageId, stores, opts);
  }

  /** Tasks of an image (`GET /v2/images/ID/tasks`, Glance Wallaby+); `[]` when the API is absent. */
  async imageTasks(imageId: string, opts: CallOptions = {}): Promise<ImageTask[]> {
    const path = `${imagePath(imageId)}/tasks`;
    const raw = await this.#http.request({
      method: 'GET',
      path,
      imageId,
      idempotent: true,
      allow: [404, 405],
      ...sig(opts),
    });
    const text = await raw.res.text().finally(raw.done);
    if (!raw.res.ok) return [];
    return parseJson<{ tasks?: ImageTask[] }>(text, 'GET', path, raw.res.status, imageId).tasks ?? [];
  }

  /** `GET /healthcheck` answered 200. Never throws. */
  async healthy(opts: CallOptions = {}): Promise<boolean> {
    try {
      const raw = await this.#http.request({
        method: 'GET',
        path: '/healthcheck',
        idempotent: true,
        allow: [503],
        ...sig(opts),
      });
      await raw.res.arrayBuffer().finally(raw.done);
      return raw.res.status === 200;
    } catch {
      return false;
    }
  }
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
