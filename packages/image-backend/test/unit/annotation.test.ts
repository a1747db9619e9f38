import { describe, expect, it } from 'vitest';
import {
  MAX_ANNOTATION_BYTES,
  assertValidAnnotation,
  assertValidAnnotationKey,
  isAnnotationKey,
  isImageBackendError,
} from '@ephemera/image-backend';

const refused = (fn: () => void, argument: string): void => {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(isImageBackendError(err, 'INVALID_ARGUMENT'), String(err)).toBe(true);
  expect((err as { argument?: string }).argument).toBe(argument);
};

describe('annotations', () => {
  it('keys are 1..64 of a-z0-9._- starting with a letter', () => {
    for (const k of ['instance', 'a', 'instance.v1', 'x-y_z.0', 'a'.repeat(64)])
      expect(isAnnotationKey(k), k).toBe(true);
    for (const k of ['', '1abc', 'Instance', 'a b', 'a/b', 'a'.repeat(65), 'ä', '.x', 3, null, undefined])
      expect(isAnnotationKey(k), String(k)).toBe(false);
    refused(() => assertValidAnnotationKey('Bad Key'), 'key');
    expect(() => assertValidAnnotationKey('instance')).not.toThrow();
  });

  it(`values are strings of at most ${MAX_ANNOTATION_BYTES} UTF-8 bytes`, () => {
    expect(() => assertValidAnnotation('k', '')).not.toThrow();
    expect(() => assertValidAnnotation('k', 'x'.repeat(MAX_ANNOTATION_BYTES))).not.toThrow();
    refused(() => assertValidAnnotation('k', 'x'.repeat(MAX_ANNOTATION_BYTES + 1)), 'value');
    // Bytes, not characters: 2-byte characters fill it at half the length.
    refused(() => assertValidAnnotation('k', 'é'.repeat(MAX_ANNOTATION_BYTES / 2 + 1)), 'value');
    refused(() => assertValidAnnotation('k', 42), 'value');
    refused(() => assertValidAnnotation('K', 'v'), 'key');
  });
});
