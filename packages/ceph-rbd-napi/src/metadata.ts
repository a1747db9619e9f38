// Image metadata (`rbd image-meta`): limits and the checks applied before librbd sees a key or value.
import { invalidArgument } from './errors.js';

/**
 * Longest image metadata key, in UTF-8 bytes. librbd sets no limit; this one catches a value
 * passed as a key and keeps keys usable as `rbd image-meta` arguments.
 */
export const METADATA_KEY_MAX_BYTES = 255;

/**
 * Largest image metadata value, in UTF-8 bytes. Pairs live in the omap of the image's one
 * header object (one OSD, read whole by `rbd image-meta list`): records and tags, not data.
 */
export const METADATA_VALUE_MAX_BYTES = 64 * 1024;

// In unicode mode a surrogate pair is one code point, so only lone surrogates match.
/** @internal */
export const loneSurrogate = /\p{Cs}/u;

// librbd takes C strings: a NUL would cut them, and a lone surrogate has no UTF-8 form (Node
// would store U+FFFD instead, so the key read back would differ from the one given).
/** @internal */
export function checkMetadataString(
  operation: string,
  target: string,
  what: string,
  v: unknown,
  maxBytes: number,
  allowEmpty: boolean,
): string {
  if (typeof v !== 'string') throw invalidArgument(operation, target, `${what} must be a string`);
  if (!allowEmpty && v.length === 0) throw invalidArgument(operation, target, `${what} must not be empty`);
  if (v.includes('\0')) throw invalidArgument(operation, target, `${what} must not contain NUL`);
  if (loneSurrogate.test(v))
    throw invalidArgument(operation, target, `${what} must be well-formed Unicode (no lone surrogate)`);
  const bytes = Buffer.byteLength(v, 'utf8');
  if (bytes > maxBytes)
    throw invalidArgument(operation, target, `${what} is ${bytes} bytes in UTF-8, at most ${maxBytes} allowed`);
  return v;
}

/** @internal */
export function checkMetadataKey(operation: string, target: string, key: unknown): string {
  return checkMetadataString(operation, target, 'key', key, METADATA_KEY_MAX_BYTES, false);
}

/** Options of {@link Image.metadataList}. */
export interface MetadataListOptions {
  /** List only keys after this one (exclusive), e.g. the last key of a previous call. Default: from the first key. */
  start?: string;
  /** At most this many pairs; 0 or absent means all. */
  max?: number;
}
