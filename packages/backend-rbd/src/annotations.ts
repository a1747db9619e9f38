// Annotations: small texts a host records on a disk (the contract's getAnnotation/setAnnotation),
// kept as RBD image metadata next to the owner record.
import { assertValidAnnotation, assertValidAnnotationKey } from '@ephemera/image-backend';
import type { RbdOps } from './rbd-ops.js';

/** The image metadata key prefix of annotations (`rbd image-meta list` shows `ephemera.note.<key>`). */
export const ANNOTATION_PREFIX = 'ephemera.note.';

/** The annotation `key` of image `id`, `null` when none (rbd_metadata_get). */
export async function getAnnotation(ops: RbdOps, id: string, key: string): Promise<string | null> {
  assertValidAnnotationKey(key);
  return ops.withImage(id, { readOnly: true }, async (img) => (await img.metadataGet(ANNOTATION_PREFIX + key)) ?? null);
}

/** Records the annotation `key` on image `id` (rbd_metadata_set; needs no exclusive lock). */
export async function setAnnotation(ops: RbdOps, id: string, key: string, value: string): Promise<void> {
  assertValidAnnotation(key, value);
  await ops.withImage(id, {}, (img) => img.metadataSet(ANNOTATION_PREFIX + key, value));
}
