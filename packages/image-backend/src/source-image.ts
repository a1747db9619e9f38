import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open as openFile, stat } from 'node:fs/promises';
import type { ImageLocation, SourceImage } from './types.js';

/** Options of `sourceImageFromBytes`. */
export interface BytesImageOptions {
  /** Image id (default: a random UUID). */
  id?: string;
  diskFormat?: string;
  virtualSize?: number;
  locations?: ImageLocation[];
  /** Chunk size of the stream (default 64 KiB). */
  chunkBytes?: number;
  /** The stream throws after this many bytes (a source failing midway). */
  failAfterBytes?: number;
  /** Called before each chunk is yielded with the bytes already yielded (e.g. to abort midway). */
  onChunk?: (bytesSoFar: number) => void;
  /** Declare a wrong `os_hash_value` (the import must refuse it). */
  corruptHash?: boolean;
  /** Omit checksum and hash. */
  noHash?: boolean;
}

/**
 * A `SourceImage` over bytes in memory with a correct sha512 `os_hash_value` and md5
 * `checksum`: for tests of backends (and of whatever composes them), with knobs to make the
 * stream fail midway or the hash lie.
 */
export function sourceImageFromBytes(bytes: Uint8Array, options: BytesImageOptions = {}): SourceImage {
  const sha = createHash('sha512').update(bytes).digest('hex');
  const md5 = createHash('md5').update(bytes).digest('hex');
  const chunk = options.chunkBytes ?? 64 * 1024;
  const hashes = options.noHash
    ? {}
    : {
        checksum: md5,
        osHashAlgo: 'sha512',
        osHashValue: options.corruptHash ? sha.replace(/^./, (c) => (c === '0' ? '1' : '0')) : sha,
      };
  return {
    id: options.id ?? globalThis.crypto.randomUUID(),
    size: bytes.byteLength,
    virtualSize: options.virtualSize ?? bytes.byteLength,
    diskFormat: options.diskFormat ?? 'raw',
    containerFormat: 'bare',
    ...hashes,
    locations: options.locations ?? [],
    async open() {
      return (async function* () {
        for (let at = 0; at < bytes.byteLength; at += chunk) {
          options.onChunk?.(at);
          if (options.failAfterBytes !== undefined && at >= options.failAfterBytes) {
            throw new Error(`simulated source failure after ${at} bytes`);
          }
          // Let timers and aborts run between chunks, as a network stream would.
          await new Promise<void>((r) => setImmediate(r));
          yield bytes.subarray(at, Math.min(at + chunk, bytes.byteLength));
        }
      })();
    },
  };
}

/** Deterministic pseudo-random bytes (xorshift32) for test images. */
export function patternBytes(length: number, seed = 0x9e3779b9): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

/** What `sourceImageFromFile` declares about the file (its size is the file's). */
export type FileImageOptions = Partial<Omit<SourceImage, 'size' | 'open' | 'openReader'>>;

/**
 * A `SourceImage` over a local file: `open()` streams it (4 MiB chunks) and `openReader()` reads
 * it into the importer's own buffers (no new buffer per chunk). `options` declares the rest: id
 * (default a random UUID), `diskFormat` (default `raw`), hashes to verify (none by default),
 * locations (none by default).
 */
export async function sourceImageFromFile(path: string, options: FileImageOptions = {}): Promise<SourceImage> {
  const size = (await stat(path)).size;
  return {
    id: globalThis.crypto.randomUUID(),
    name: path,
    virtualSize: options.diskFormat === undefined || options.diskFormat === 'raw' ? size : null,
    diskFormat: 'raw',
    containerFormat: 'bare',
    locations: [],
    ...options,
    size,
    async open() {
      return createReadStream(path, { highWaterMark: 4 * 1024 * 1024 });
    },
    async openReader() {
      const fh = await openFile(path, 'r');
      return {
        read: async (target: Uint8Array) => (await fh.read(target, 0, target.byteLength, null)).bytesRead,
        close: () => fh.close(),
      };
    },
  };
}
