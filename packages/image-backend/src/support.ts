import { createHash, type Hash } from 'node:crypto';
import { readdir, readlink, realpath } from 'node:fs/promises';
import { AbortedError, BusyError, ImageSourceError, UnsafeImageError, isImageBackendError } from './errors.js';
import type { ImageByteStream, ImageReader, ProgressEvent, ProgressPhase, SourceImage } from './types.js';

/** Throws `AbortedError` if `signal` is aborted. */
export function throwIfAborted(signal: AbortSignal | undefined, what = 'operation'): void {
  if (signal?.aborted) throw new AbortedError(`${what} aborted`, { cause: signal.reason });
}

/** Options of {@link sleep}. */
export interface SleepOptions {
  /** What to reject with when the signal aborts, given its reason. Default: an `AbortedError` with the reason as cause. */
  abortError?: (reason: unknown) => unknown;
}

/** Resolves after `ms`, or rejects (with `AbortedError` unless `abortError` says otherwise) when `signal` aborts first. */
export function sleep(ms: number, signal?: AbortSignal, options: SleepOptions = {}): Promise<void> {
  const abortError = options.abortError ?? ((reason: unknown) => new AbortedError('wait aborted', { cause: reason }));
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(abortError(signal.reason));
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(abortError(signal?.reason));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** Options of `retryWhileBusy`. */
export interface RetryWhileBusyOptions {
  /** Give up (rethrow the last `BusyError`) after this long. Default 10 000 ms. */
  timeoutMs?: number;
  /** First delay between attempts; doubles up to `maxIntervalMs`. Default 100 ms. */
  intervalMs?: number;
  /** Default 2 000 ms. */
  maxIntervalMs?: number;
  signal?: AbortSignal;
}

/**
 * Runs `attempt` until it does not throw a `BusyError` (code `BUSY`), with exponential back-off,
 * for at most `timeoutMs`. Other errors propagate at once. What `remove` uses while a VM or a
 * watcher still holds the disk.
 */
export async function retryWhileBusy<T>(attempt: () => Promise<T>, options: RetryWhileBusyOptions = {}): Promise<T> {
  const timeoutMs = options.timeoutMs ?? 10_000;
  const maxInterval = options.maxIntervalMs ?? 2_000;
  let interval = options.intervalMs ?? 100;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    throwIfAborted(options.signal);
    try {
      return await attempt();
    } catch (err) {
      if (!isImageBackendError(err, 'BUSY')) throw err;
      const left = deadline - Date.now();
      if (left <= 0) {
        throw err instanceof BusyError ? err : new BusyError(String((err as Error).message), { cause: err });
      }
      await sleep(Math.min(interval, left), options.signal);
      interval = Math.min(interval * 2, maxInterval);
    }
  }
}

/**
 * Turns raw progress into contract events: clamps `percent` to 0..100, never lets it go back,
 * and `finish()` emits the final 100% event exactly once. Swallows listener exceptions.
 */
export class ProgressReporter {
  private last = -1;
  private finished = false;

  constructor(private readonly listener: ((event: ProgressEvent) => void) | undefined) {}

  /** Reports `bytesDone` of `bytesTotal` in `phase` (percent computed, capped at 99 until `finish`). */
  report(phase: ProgressPhase, bytesDone: number, bytesTotal?: number): void {
    let percent = bytesTotal && bytesTotal > 0 ? Math.floor((bytesDone / bytesTotal) * 100) : 0;
    percent = Math.min(99, Math.max(0, percent));
    this.emit({ phase, bytesDone, ...(bytesTotal === undefined ? {} : { bytesTotal }), percent });
  }

  /** Emits the final 100% event. */
  finish(bytesDone: number, bytesTotal?: number): void {
    if (this.finished) return;
    this.emit({ phase: 'done', bytesDone, ...(bytesTotal === undefined ? {} : { bytesTotal }), percent: 100 });
    this.finished = true;
  }

  private emit(event: ProgressEvent): void {
    if (!this.listener || this.finished) return;
    if (event.percent < this.last) event = { ...event, percent: this.last };
    this.last = event.percent;
    try {
      this.listener(event);
    } catch {
      // A faulty listener must not break the operation.
    }
  }
}

function isReadableStream(s: ImageByteStream): s is ReadableStream<Uint8Array> {
  return (
    typeof (s as ReadableStream<Uint8Array>).getReader === 'function' &&
    typeof (s as AsyncIterable<Uint8Array>)[Symbol.asyncIterator] !== 'function'
  );
}

/**
 * Chunks read in place into the caller's buffers, each filled unless the source ended. An
 * iterator, not a generator: `return()` closes the reader even before the first `next()`.
 */
function readInto(reader: ImageReader, into: () => Uint8Array): AsyncIterator<Uint8Array> {
  let ended = false;
  let closed = false;
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    await reader.close();
  };
  const finished = (): IteratorResult<Uint8Array> => ({ done: true, value: undefined });
  return {
    async next() {
      if (ended) return finished();
      try {
        const buf = into();
        let n = 0;
        while (n < buf.byteLength) {
          const got = await reader.read(n === 0 ? buf : buf.subarray(n));
          if (got === 0) break;
          n += got;
        }
        if (n < buf.byteLength) ended = true;
        if (n === 0) {
          await close();
          return finished();
        }
        return { done: false, value: n === buf.byteLength ? buf : buf.subarray(0, n) };
      } catch (err) {
        ended = true;
        await close().catch(() => undefined);
        throw err;
      }
    },
    async return() {
      ended = true;
      await close();
      return finished();
    },
  };
}

async function* iterate(stream: ImageByteStream): AsyncGenerator<Uint8Array> {
  if (isReadableStream(stream)) {
    const reader = stream.getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return;
        yield value;
      }
    } finally {
      reader.releaseLock();
    }
  } else {
    yield* stream;
  }
}

/** Options of `readImage`. */
export interface ReadImageOptions {
  signal?: AbortSignal;
  /** Receives `download` progress (bytes of `image.size`). */
  progress?: ProgressReporter;
  /** Verify `os_hash_value` (and `checksum`) at the end. Default true. */
  verify?: boolean;
  /**
   * The caller's buffers: with a source that has `openReader`, each chunk is one of these, filled
   * (the last one may be a shorter view of it), read in place; the caller gets a new one for every
   * chunk and may hand the same memory out again once it is done with a chunk. Without it, or
   * without `openReader`, the chunks are the stream's.
   */
  into?: () => Uint8Array;
  /** Backend name for error context. */
  backend?: string;
}

const HASH_ALGOS: Record<string, string> = {
  sha512: 'sha512',
  sha256: 'sha256',
  sha384: 'sha384',
  sha1: 'sha1',
  md5: 'md5',
};

/**
 * Reads an image's bytes as an async iterable of chunks, for backends that import:
 * - honours `signal` (rejects with `AbortedError`),
 * - wraps stream failures in `ImageSourceError`, and fails when fewer or more bytes than
 *   `image.size` arrive,
 * - verifies `os_hash_value` after the last chunk, or the legacy md5 `checksum` when no
 *   multihash is declared, as glanceclient and Nova do (`UnsafeImageError`, reason
 *   `checksum-mismatch`); an unknown hash algorithm is `UnsafeImageError` (`unknown-hash-algo`).
 *   md5 on top of sha512 proved nothing more and cost 1.4 s of CPU per GiB (bench/README.md).
 * A backend writes the chunks as they come and deletes what it wrote if iteration throws.
 */
export async function* readImage(image: SourceImage, options: ReadImageOptions = {}): AsyncGenerator<Uint8Array> {
  const { signal, progress, backend } = options;
  const verify = options.verify ?? true;
  throwIfAborted(signal, 'image read');
  const hashes: { name: string; expected: string; hash: Hash }[] = [];
  if (verify && image.osHashAlgo && image.osHashValue) {
    const algo = HASH_ALGOS[image.osHashAlgo.toLowerCase()];
    if (!algo) {
      throw new UnsafeImageError(
        'unknown-hash-algo',
        `image ${image.id}: unsupported os_hash_algo '${image.osHashAlgo}'`,
        { backend },
      );
    }
    hashes.push({ name: image.osHashAlgo, expected: image.osHashValue.toLowerCase(), hash: createHash(algo) });
  }
  if (verify && hashes.length === 0 && image.checksum) {
    hashes.push({ name: 'checksum (md5)', expected: image.checksum.toLowerCase(), hash: createHash('md5') });
  }
  let it: AsyncIterator<Uint8Array>;
  try {
    it =
      options.into && image.openReader
        ? readInto(await image.openReader(signal ? { signal } : {}), options.into)
        : iterate(await image.open(signal ? { signal } : {}))[Symbol.asyncIterator]();
  } catch (err) {
    if (isImageBackendError(err)) throw err;
    if (signal?.aborted) throw new AbortedError('image read aborted', { cause: err, backend });
    throw new ImageSourceError(`image ${image.id}: cannot open: ${(err as Error)?.message ?? String(err)}`, {
      cause: err,
      backend,
    });
  }
  let done = 0;
  try {
    for (;;) {
      throwIfAborted(signal, 'image read');
      let next: IteratorResult<Uint8Array>;
      try {
        next = await it.next();
      } catch (err) {
        if (signal?.aborted) throw new AbortedError('image read aborted', { cause: err, backend });
        if (isImageBackendError(err)) throw err;
        throw new ImageSourceError(
          `image ${image.id}: read failed after ${done} bytes: ${(err as Error)?.message ?? String(err)}`,
          { cause: err, backend },
        );
      }
      throwIfAborted(signal, 'image read');
      if (next.done) break;
      const chunk = next.value;
      done += chunk.byteLength;
      if (done > image.size) {
        throw new ImageSourceError(`image ${image.id}: more data than its size (${image.size} bytes)`, { backend });
      }
      for (const h of hashes) h.hash.update(chunk);
      progress?.report('download', done, image.size);
      yield chunk;
    }
  } finally {
    await it.return?.(undefined)?.catch?.(() => undefined);
  }
  if (done !== image.size) {
    throw new ImageSourceError(`image ${image.id}: stream ended after ${done} of ${image.size} bytes`, { backend });
  }
  for (const h of hashes) {
    const got = h.hash.digest('hex');
    if (got !== h.expected) {
      throw new UnsafeImageError(
        'checksum-mismatch',
        `image ${image.id}: ${h.name} mismatch (expected ${h.expected}, got ${got})`,
        { backend },
      );
    }
  }
}

/**
 * Process ids of other processes that hold `path` open (a disk file or a block device), found by
 * scanning `/proc/<pid>/fd` like `fuser`. Backends use it to explain a busy disk and to refuse
 * removing or resizing one a guest still uses. A path that does not exist is held by nobody.
 */
export async function processesHoldingOpen(path: string): Promise<number[]> {
  let target: string;
  try {
    target = await realpath(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    target = path;
  }
  let entries: string[];
  try {
    entries = await readdir('/proc');
  } catch {
    return [];
  }
  const pids: number[] = [];
  await Promise.all(
    entries
      .filter((e) => /^\d+$/.test(e) && Number(e) !== process.pid)
      .map(async (pid) => {
        let fds: string[];
        try {
          fds = await readdir(`/proc/${pid}/fd`);
        } catch {
          return; // the process is gone, or not ours to read
        }
        for (const fd of fds) {
          try {
            if ((await readlink(`/proc/${pid}/fd/${fd}`)) === target) {
              pids.push(Number(pid));
              return;
            }
          } catch {
            // the fd was closed meanwhile
          }
        }
      }),
  );
  return pids.sort((a, b) => a - b);
}
