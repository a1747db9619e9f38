// Options and results of GlanceClient's calls.
import type { Readable } from 'node:stream';
import type { TokenProvider } from './auth.js';
import type { RetryPolicy } from './retry.js';
import type { GlanceImage, ImageLocationEntry } from './types.js';
import type { ExpectedHash } from './verify.js';

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
