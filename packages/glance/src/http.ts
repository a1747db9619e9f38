// Glance HTTP transport: one request with its timeout, token and headers, retries with backoff,
// and the mapping of every failure to a typed GlanceError.
import { isUuid, sleep } from '@ephemera/image-backend';
import type { TokenProvider } from './auth.js';
import type { CallOptions } from './client-types.js';
import {
  GlanceAbortedError,
  GlanceAuthError,
  GlanceConflictError,
  GlanceConnectionError,
  GlanceError,
  GlanceHttpError,
  GlanceNotFoundError,
  GlanceTimeoutError,
} from './errors.js';
import { backoffDelay, type RetryPolicy } from './retry.js';

/** @internal */
export type RequestBody = NonNullable<RequestInit['body']>;
/** @internal abort reason of a request's own timer, told apart from the caller's abort. */
export const TIMEOUT = Symbol('glance-timeout');

/** @internal */
export interface RequestSpec {
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

/** @internal */
export interface RawResponse {
  res: Response;
  /** For `stream` requests: the controller to abort the body and a function to stop the header timer. */
  controller: AbortController;
  done: () => void;
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

/** @internal settings of {@link GlanceHttp}, resolved by GlanceClient. */
export interface GlanceHttpOptions {
  url: string;
  auth: TokenProvider;
  timeoutMs: number;
  retry: RetryPolicy;
  userAgent: string;
}

/** @internal requests to one Glance endpoint; every method throws only GlanceError subclasses. */
export class GlanceHttp {
  readonly url: string;
  readonly #auth: TokenProvider;
  readonly #timeoutMs: number;
  readonly #retry: RetryPolicy;
  readonly #userAgent: string;

  constructor(opts: GlanceHttpOptions) {
    this.url = opts.url;
    this.#auth = opts.auth;
    this.#timeoutMs = opts.timeoutMs;
    this.#retry = opts.retry;
    this.#userAgent = opts.userAgent;
  }

  async json<T>(spec: RequestSpec): Promise<T> {
    const raw = await this.request(spec);
    const text = await raw.res.text().catch((err: unknown) => {
      raw.done();
      throw mapFetchError(
        err,
        raw.controller,
        spec.signal,
        spec.imageId,
        `reading ${spec.method} ${spec.path}`,
        spec.timeoutMs ?? this.#timeoutMs,
        this.url,
      );
    });
    raw.done();
    if (!text) return undefined as T;
    return parseJson<T>(text, spec.method, spec.path, raw.res.status, spec.imageId);
  }

  /** Waits `ms`; an abort rejects with GlanceAbortedError (the signal's reason as cause). */
  sleep(ms: number, signal: AbortSignal | undefined, imageId: string | undefined): Promise<void> {
    return sleep(ms, signal, {
      abortError: (reason) => new GlanceAbortedError('aborted', { ...(imageId ? { imageId } : {}), cause: reason }),
    });
  }

  /** One logical request with retries. Throws typed errors for statuses >= 400 not in `allow`. */
  async request(spec: RequestSpec): Promise<RawResponse> {
    const attempts = Math.max(1, this.#retry.attempts);
    let reauthed = false;
    for (let attempt = 1; ; attempt++) {
      spec.onAttempt?.(attempt);
      if (spec.signal?.aborted)
        throw new GlanceAbortedError(`${spec.method} ${spec.path} aborted`, withId(spec.imageId, spec.signal.reason));
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
      await this.sleep(backoffDelay(this.#retry, attempt), spec.signal, spec.imageId);
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
    const headers: Record<string, string> = {
      accept: 'application/json',
      'user-agent': this.#userAgent,
      ...spec.headers,
    };
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
      const init: RequestInit & { duplex?: 'half' } = {
        method: spec.method,
        headers,
        signal: controller.signal,
        redirect: 'error',
      };
      if (body !== undefined) {
        init.body = body;
        if (!(typeof body === 'string' || body instanceof Uint8Array)) init.duplex = 'half';
      }
      // The timer keeps running while the caller reads a JSON body; `done` stops it.
      const res = await fetch(url, init);
      return { res, controller, done };
    } catch (err) {
      done();
      throw mapFetchError(
        err,
        controller,
        spec.signal,
        spec.imageId,
        `${spec.method} ${spec.path}`,
        timeoutMs,
        this.url,
      );
    }
  }
}

/** @internal */
export function withId(imageId: string | undefined, cause: unknown): { imageId?: string; cause?: unknown } {
  return { ...(imageId !== undefined ? { imageId } : {}), cause };
}

/** @internal */
export function sig(opts: CallOptions): { signal?: AbortSignal } {
  return opts.signal ? { signal: opts.signal } : {};
}

/** @internal */
export function imagePath(imageId: string): string {
  if (typeof imageId !== 'string' || !isUuid(imageId))
    throw new GlanceError(
      'GLANCE_BAD_IMAGE_ID',
      `image id ${JSON.stringify(String(imageId)).slice(0, 80)} is not a UUID`,
    );
  return `/v2/images/${imageId.toLowerCase()}`;
}

/** @internal */
export function parseJson<T>(text: string, method: string, path: string, status: number, imageId?: string): T {
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
    if (Array.isArray(inner) && inner.length)
      parts.push(inner.map((x) => (x as Error)?.message ?? String(x)).join(', '));
    else if (msg && msg !== 'fetch failed') parts.push(msg);
    e = (e as { cause?: unknown }).cause;
  }
  const code = errnoOf(err);
  const text = parts.length ? parts[parts.length - 1]! : '';
  return text ? (code && !text.includes(code) ? `${text} (${code})` : text) : (code ?? 'connection failed');
}

/** @internal */
export function mapFetchError(
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
    return new GlanceTimeoutError(
      `Glance ${endpoint} ${what}: no answer within ${timeoutMs} ms`,
      timeoutMs,
      withId(imageId, err),
    );
  if (userSignal?.aborted) return new GlanceAbortedError(`${what}: aborted`, withId(imageId, userSignal.reason));
  return new GlanceConnectionError(`Glance ${endpoint} ${what}: ${causeText(err)}`, withId(imageId, err));
}
