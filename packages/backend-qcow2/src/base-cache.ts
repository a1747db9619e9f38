import { createHash, randomBytes } from 'node:crypto';
import { open, readdir, realpath, rename, stat, statfs, unlink, utimes, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import {
  AbortedError,
  InsufficientCapacityError,
  ProgressReporter,
  readImage,
  throwIfAborted,
  type ProgressPhase,
  type SourceImage,
} from '@ephemera/image-backend';
import { ImageInspector, safetyCheck, type QemuImg } from '@ephemera/qemu-img-wrapper';
import { toContractError } from './errors.js';
import { errno, fsyncPath } from './fsutil.js';
import { lockWait, tryLock, type Unlock } from './lock.js';
import { readQcow2Header } from './qcow2-header.js';

/** Format of a cached base file. */
export type BaseFormat = 'raw' | 'qcow2';

/** A base image file in the cache directory. */
export interface CachedBase {
  /** `sha1(image id)` in hex: the base's file name (plus `.qcow2` for a qcow2 base). */
  readonly key: string;
  /** Absolute path of the base file. */
  readonly path: string;
  readonly format: BaseFormat;
  /** Guest-visible size in bytes. */
  readonly virtualSize: number;
}

/** A base held for use: cleanup (in any process) leaves it alone until `release()`. */
export interface BaseLease {
  readonly base: CachedBase;
  /** True for exactly one of the callers that shared a fetch: the one that reports `imported`. */
  readonly fetched: boolean;
  /** Bytes downloaded from the source (when `fetched`). */
  readonly bytesFetched: number;
  release(): Promise<void>;
}

/** Outcome of {@link BaseCache.cleanup}. */
export interface CacheCleanupResult {
  /** Base (and stale temporary) files that were deleted. */
  readonly removed: string[];
  /** Bases that were kept, and why. */
  readonly kept: { path: string; reason: 'in-use' | 'recent' | 'locked' }[];
}

/** Image formats the cache accepts (Glance `disk_format`) and what becomes of them. */
export const ACCEPTED_DISK_FORMATS: readonly string[] = Object.freeze([
  'raw',
  'iso',
  'qcow2',
  'vmdk',
  'vhd',
  'vpc',
  'vhdx',
  'vdi',
]);

const KEY_RE = /^[0-9a-f]{40}$/;
const BASE_RE = /^([0-9a-f]{40})(\.qcow2)?$/;
const TEMP_RE = /^\.tmp-([0-9a-f]{40})-/;

/** The cache key (and base file name) of an image: sha1 of its id, as Nova names `_base` files. */
export function baseKey(imageId: string): string {
  return createHash('sha1').update(imageId, 'utf8').digest('hex');
}

interface FetchResult {
  base: CachedBase;
  fetched: boolean;
}

interface Entry {
  readonly key: string;
  refs: number;
  /** Attached callers, oldest first. */
  readonly waiters: symbol[];
  readonly listeners: Set<ProgressReporter>;
  readonly controller: AbortController;
  ready: Promise<FetchResult>;
  settled: boolean;
  /** The caller credited with the fetch (the oldest still attached when it completed). */
  owner: symbol | undefined;
  unlock: Unlock | undefined;
}

/** Settings of a {@link BaseCache}. */
export interface BaseCacheOptions {
  readonly dir: string;
  readonly qemuImg: QemuImg;
  /** Convert non-raw images to raw once, when they enter the cache (Nova's `force_raw_images`). */
  readonly forceRaw: boolean;
  readonly lockStaleMs: number;
  readonly convertTimeoutMs: number;
  readonly maxVirtualSize: number | undefined;
  readonly backend: string;
}

async function writeAll(fh: FileHandle, chunk: Uint8Array): Promise<void> {
  let off = 0;
  while (off < chunk.byteLength) {
    const { bytesWritten } = await fh.write(chunk, off, chunk.byteLength - off);
    off += bytesWritten;
  }
}

function abortable<T>(p: Promise<T>, signal: AbortSignal | undefined, what: string): Promise<T> {
  if (!signal) return p;
  return new Promise<T>((resolve, reject) => {
    if (signal.aborted) {
      reject(new AbortedError(`${what} aborted`, { cause: signal.reason }));
      return;
    }
    const onAbort = (): void => reject(new AbortedError(`${what} aborted`, { cause: signal.reason }));
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}

/**
 * The `_base` image cache shared by every instance (and every process) on the host.
 *
 * - One file per image, named `sha1(image id)` (raw) or `sha1(image id).qcow2`.
 * - Single flight: callers in one process share one in-flight fetch (a promise per key);
 *   processes exclude each other with a lock directory per key (`<key>.lock`, proper-lockfile,
 *   taken over when its holder stops refreshing it). A process keeps the lock while any of its
 *   callers holds a lease, so cleanup never deletes a base between fetch and overlay creation.
 * - A fetch streams into `.tmp-<key>-<random>` in the cache directory while the declared
 *   checksum is verified and the format inspector watches the bytes; then the inspector's verdict
 *   (declared format, no backing file, no data file, no encryption), an optional conversion to
 *   raw (`qemu-img convert`, with progress), fsync and an atomic rename. Any failure deletes the
 *   temporary files: never a half base.
 * - The fetch is aborted only when every caller waiting for it has aborted.
 */
export class BaseCache {
  private readonly entries = new Map<string, Entry>();

  constructor(private readonly options: BaseCacheOptions) {}

  /** The cache directory. */
  get dir(): string {
    return this.options.dir;
  }

  /** Whether a caller of this object holds or awaits the base of `key`. */
  busy(key: string): boolean {
    return this.entries.has(key);
  }

  /** The cached base of an image, if there is one (no lock, no fetch). */
  async lookup(imageId: string): Promise<CachedBase | undefined> {
    return this.find(baseKey(imageId));
  }

  /**
   * Returns a lease on the image's base, fetching it first if it is not cached (once, however
   * many callers ask at the same time, in this process or others). `progress` receives the
   * fetch's `download`/`convert` events. Release the lease when the overlay exists.
   */
  async acquire(
    image: SourceImage,
    options: { signal?: AbortSignal | undefined; progress?: ProgressReporter | undefined } = {},
  ): Promise<BaseLease> {
    throwIfAborted(options.signal, 'createFromImage');
    const key = baseKey(image.id);
    let e = this.entries.get(key);
    if (!e) e = this.start(key, image);
    const me = Symbol('waiter');
    e.refs++;
    e.waiters.push(me);
    if (options.progress) e.listeners.add(options.progress);
    let r: FetchResult;
    try {
      r = await abortable(e.ready, options.signal, 'createFromImage');
    } catch (err) {
      await this.detach(e, me, options.progress);
      throw err;
    } finally {
      if (options.progress) e.listeners.delete(options.progress);
    }
    const entry = e;
    let released = false;
    return {
      base: r.base,
      fetched: r.fetched && entry.owner === me,
      bytesFetched: r.fetched && entry.owner === me ? image.size : 0,
      release: async () => {
        if (released) return;
        released = true;
        await this.detach(entry, me, undefined);
      },
    };
  }

  /**
   * Deletes bases not used for `olderThanMs` (by mtime, which every use refreshes) that no disk
   * references (`referenced()` is called under each base's lock, so an overlay made meanwhile
   * by another process is seen), and temporary files of fetches that died. A base locked by a
   * fetch or lease in progress is kept.
   */
  async cleanup(options: {
    olderThanMs: number;
    referenced: () => Promise<Set<string>>;
    signal?: AbortSignal | undefined;
  }): Promise<CacheCleanupResult> {
    const removed: string[] = [];
    const kept: CacheCleanupResult['kept'] = [];
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch (e) {
      if (errno(e) === 'ENOENT') return { removed, kept };
      throw e;
    }
    const now = Date.now();
    for (const name of names.sort()) {
      throwIfAborted(options.signal, 'cleanupBases');
      const base = BASE_RE.exec(name);
      const temp = TEMP_RE.exec(name);
      const key = base?.[1] ?? temp?.[1];
      if (!key) continue;
      const path = join(this.dir, name);
      if (this.busy(key)) {
        kept.push({ path, reason: 'locked' });
        continue;
      }
      let mtime: number;
      try {
        mtime = (await stat(path)).mtimeMs;
      } catch {
        continue;
      }
      if (now - mtime < options.olderThanMs) {
        if (base) kept.push({ path, reason: 'recent' });
        continue;
      }
      const unlock = await tryLock(join(this.dir, key), this.lockOptions(key));
      if (!unlock) {
        if (base) kept.push({ path, reason: 'locked' });
        continue;
      }
      try {
        if (base) {
          const refs = await options.referenced();
          const real = await realpath(path).catch(() => path);
          if (refs.has(path) || refs.has(real)) {
            kept.push({ path, reason: 'in-use' });
            continue;
          }
          // Re-check the age under the lock: a lease may have touched it since.
          if (now - (await stat(path)).mtimeMs < options.olderThanMs) {
            kept.push({ path, reason: 'recent' });
            continue;
          }
        }
        await unlink(path);
        removed.push(path);
      } catch (e) {
        if (errno(e) !== 'ENOENT') throw e;
      } finally {
        await unlock();
      }
    }
    if (removed.length) await fsyncPath(this.dir).catch(() => undefined);
    return { removed, kept };
  }

  // --- internals ---

  private lockOptions(key: string): { lockPath: string; staleMs: number } {
    if (!KEY_RE.test(key)) throw new Error(`invalid cache key ${key}`);
    return { lockPath: join(this.dir, `${key}.lock`), staleMs: this.options.lockStaleMs };
  }

  private start(key: string, image: SourceImage): Entry {
    const e: Entry = {
      key,
      refs: 0,
      waiters: [],
      listeners: new Set(),
      controller: new AbortController(),
      ready: Promise.resolve(undefined as never),
      settled: false,
      owner: undefined,
      unlock: undefined,
    };
    e.ready = (async (): Promise<FetchResult> => {
      const unlock = await lockWait(join(this.dir, key), { ...this.lockOptions(key), signal: e.controller.signal });
      e.unlock = unlock;
      try {
        let result: FetchResult;
        const found = await this.find(key);
        if (found) {
          result = { base: found, fetched: false };
        } else {
          result = { base: await this.fetch(image, key, e), fetched: true };
          e.owner = e.waiters[0];
        }
        // Every use refreshes the mtime: cleanup removes bases unused for its age limit.
        const now = new Date();
        await utimes(result.base.path, now, now);
        return result;
      } catch (err) {
        e.unlock = undefined;
        await unlock();
        throw err;
      }
    })();
    e.ready.then(
      () => {
        e.settled = true;
      },
      () => {
        e.settled = true;
        if (this.entries.get(key) === e) this.entries.delete(key);
      },
    );
    this.entries.set(key, e);
    return e;
  }

  private async detach(e: Entry, me: symbol, progress: ProgressReporter | undefined): Promise<void> {
    const i = e.waiters.indexOf(me);
    if (i < 0) return;
    e.waiters.splice(i, 1);
    if (progress) e.listeners.delete(progress);
    e.refs--;
    if (e.refs > 0) return;
    if (this.entries.get(e.key) === e) this.entries.delete(e.key);
    if (!e.settled) {
      // Nobody wants this fetch any more: abort it and wait for its rollback.
      e.controller.abort(new Error('every caller waiting for this image aborted'));
      await e.ready.catch(() => undefined);
    }
    const unlock = e.unlock;
    e.unlock = undefined;
    await unlock?.();
  }

  private async find(key: string): Promise<CachedBase | undefined> {
    for (const [name, format] of [
      [key, 'raw'],
      [`${key}.qcow2`, 'qcow2'],
    ] as const) {
      const path = join(this.dir, name);
      try {
        const st = await stat(path);
        if (!st.isFile()) continue;
        const virtualSize = format === 'raw' ? st.size : (await readQcow2Header(path)).virtualSize;
        return { key, path, format, virtualSize };
      } catch (e) {
        if (errno(e) === 'ENOENT') continue;
        throw e;
      }
    }
    return undefined;
  }

  private async fetch(image: SourceImage, key: string, e: Entry): Promise<CachedBase> {
    const { signal } = e.controller;
    const backend = this.options.backend;
    const declared = String(image.diskFormat).toLowerCase();
    const asRaw = declared === 'raw' || declared === 'iso';
    const convert = !asRaw && (declared !== 'qcow2' || this.options.forceRaw);
    const report = (phase: ProgressPhase, done: number, total?: number): void => {
      for (const l of e.listeners) l.report(phase, done, total);
    };

    const need = image.size + (convert ? Math.max(image.virtualSize ?? 0, image.size) : 0);
    const fsinfo = await statfs(this.dir);
    const free = Number(fsinfo.bavail) * Number(fsinfo.bsize);
    if (free < need) {
      throw new InsufficientCapacityError(`image ${image.id} needs ${need} bytes in ${this.dir}, ${free} free`, {
        backend,
        requestedBytes: need,
        availableBytes: free,
      });
    }

    const tmp = join(this.dir, `.tmp-${key}-${randomBytes(6).toString('hex')}`);
    let tmpRaw: string | undefined;
    try {
      const fh = await open(tmp, 'wx', 0o644);
      const inspector = new ImageInspector();
      const reporter = new ProgressReporter((ev) => report(ev.phase, ev.bytesDone, ev.bytesTotal));
      try {
        for await (const chunk of readImage(image, { signal, progress: reporter, backend })) {
          inspector.push(chunk);
          await writeAll(fh, chunk);
        }
        await fh.sync();
      } finally {
        await fh.close();
      }
      // The checksum matched (readImage): now the format inspector's verdict on the bytes.
      const inspected = safetyCheck(inspector.end(), {
        declaredFormat: declared,
        allowBackingFile: false,
        allowDataFile: false,
        allowEncrypted: false,
        ...(this.options.maxVirtualSize !== undefined ? { maxVirtualSize: this.options.maxVirtualSize } : {}),
      });
      throwIfAborted(signal, 'image fetch');
      if (!convert) {
        const format: BaseFormat = asRaw ? 'raw' : 'qcow2';
        const path = join(this.dir, format === 'raw' ? key : `${key}.qcow2`);
        await rename(tmp, path);
        await fsyncPath(this.dir);
        return { key, path, format, virtualSize: inspected.virtualSize ?? image.size };
      }
      const virtual = inspected.virtualSize ?? 0;
      tmpRaw = `${tmp}.raw`;
      await this.options.qemuImg.convert(tmp, tmpRaw, {
        sourceFormat: inspected.qemuFormat,
        targetFormat: 'raw',
        untrusted: true,
        safety: {
          declaredFormat: declared,
          allowEncrypted: false,
          ...(this.options.maxVirtualSize !== undefined ? { maxVirtualSize: this.options.maxVirtualSize } : {}),
        },
        timeoutMs: this.options.convertTimeoutMs,
        signal,
        onProgress: (pct) => report('convert', Math.floor((pct / 100) * virtual), virtual),
      });
      await fsyncPath(tmpRaw);
      const path = join(this.dir, key);
      await rename(tmpRaw, path);
      tmpRaw = undefined;
      await unlink(tmp);
      await fsyncPath(this.dir);
      return { key, path, format: 'raw', virtualSize: (await stat(path)).size };
    } catch (err) {
      await unlink(tmp).catch(() => undefined);
      if (tmpRaw) await unlink(tmpRaw).catch(() => undefined);
      throw toContractError(err, { backend, signal, what: `image ${image.id}` });
    }
  }
}
