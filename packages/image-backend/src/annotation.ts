/**
 * Annotations: small named texts a caller records on a disk (RBD image metadata), so that what
 * the storage cluster holds is enough to rebuild an instance on another host after its own host
 * died (the driver records the instance's definition on its root disk at spawn).
 */
import { InvalidArgumentError } from './errors.js';

/** The largest annotation value, in UTF-8 bytes (RBD keeps metadata in the image header's omap). */
export const MAX_ANNOTATION_BYTES = 64 * 1024;

const KEY_RE = /^[a-z][a-z0-9._-]{0,63}$/;

/** Whether `key` can name an annotation: 1..64 of `a-z0-9._-`, starting with a letter. */
export function isAnnotationKey(key: unknown): key is string {
  return typeof key === 'string' && KEY_RE.test(key);
}

/** Throws `InvalidArgumentError` unless `key` is an annotation key ({@link isAnnotationKey}). */
export function assertValidAnnotationKey(key: unknown): asserts key is string {
  if (!isAnnotationKey(key))
    throw new InvalidArgumentError(
      'key',
      `${JSON.stringify(key)} is not an annotation key (1..64 of a-z0-9._-, starting with a letter)`,
    );
}

/**
 * Throws `InvalidArgumentError` unless `key` is an annotation key and `value` a string of at most
 * {@link MAX_ANNOTATION_BYTES} UTF-8 bytes.
 */
export function assertValidAnnotation(key: unknown, value: unknown): asserts value is string {
  assertValidAnnotationKey(key);
  if (typeof value !== 'string') throw new InvalidArgumentError('value', 'an annotation value is a string');
  const n = Buffer.byteLength(value, 'utf8');
  if (n > MAX_ANNOTATION_BYTES)
    throw new InvalidArgumentError('value', `${n} bytes is more than the ${MAX_ANNOTATION_BYTES} an annotation holds`);
}
