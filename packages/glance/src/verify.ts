/** Hashing while streaming: which hash to check and how. */
import { createHash, getHashes, type Hash } from 'node:crypto';
import type { GlanceImage } from './types.js';

/** The hash a download is checked against. */
export interface ExpectedHash {
  /** Node hash name, e.g. `sha512`, `sha3-256`, `md5`. */
  algorithm: string;
  /** Lower-case hex digest. */
  value: string;
  /** Which image field it came from. */
  source: 'os_hash_value' | 'checksum';
}

/** Map a Python hashlib name (`sha3_512`, `blake2b`) to Node's, or undefined when unsupported. */
export function nodeHashName(pyName: string): string | undefined {
  const lower = pyName.toLowerCase();
  const candidates = [
    lower,
    lower.replace(/_/g, '-'),
    lower === 'blake2b' ? 'blake2b512' : '',
    lower === 'blake2s' ? 'blake2s256' : '',
  ];
  const available = new Set(getHashes().map((h) => h.toLowerCase()));
  return candidates.find((c) => c && available.has(c));
}

/**
 * The hash to verify a download of `image` against: `os_hash_algo`/`os_hash_value` when Node
 * supports the algorithm, else the legacy MD5 `checksum`, else none.
 */
export function expectedHash(
  image: Pick<GlanceImage, 'os_hash_algo' | 'os_hash_value' | 'checksum'>,
): ExpectedHash | undefined {
  if (image.os_hash_algo && image.os_hash_value) {
    const algo = nodeHashName(image.os_hash_algo);
    if (algo) return { algorithm: algo, value: image.os_hash_value.toLowerCase(), source: 'os_hash_value' };
  }
  if (image.checksum) return { algorithm: 'md5', value: image.checksum.toLowerCase(), source: 'checksum' };
  return undefined;
}

/** Start a hash for `expected` (undefined when nothing is to be verified). */
export function startHash(expected: ExpectedHash | undefined): Hash | undefined {
  return expected ? createHash(expected.algorithm) : undefined;
}
