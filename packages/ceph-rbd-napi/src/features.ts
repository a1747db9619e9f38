// librbd image feature bits and their names, as the `rbd` CLI prints them.
import { invalidArgument } from './errors.js';

/** librbd image feature bits (`rbd/features.h`). */
export const RbdFeature = {
  layering: 1,
  striping: 2,
  'exclusive-lock': 4,
  'object-map': 8,
  'fast-diff': 16,
  'deep-flatten': 32,
  journaling: 64,
  'data-pool': 128,
  operations: 256,
  migrating: 512,
  'non-primary': 1024,
  'dirty-cache': 2048,
} as const;

/** A feature name as the `rbd` CLI prints it, e.g. `'exclusive-lock'`. */
export type FeatureName = keyof typeof RbdFeature;

/** Features as a bit mask or as a list of names. */
export type Features = number | readonly FeatureName[];

/** The names of the bits set in `mask` (unknown bits are ignored). */
export function featureNames(mask: number): FeatureName[] {
  return (Object.keys(RbdFeature) as FeatureName[]).filter((n) => (mask & RbdFeature[n]) !== 0);
}

/** The bit mask of `features`; throws InvalidArgument on an unknown name. */
export function featureMask(features: Features, operation = 'featureMask'): number {
  if (typeof features === 'number') {
    if (!Number.isSafeInteger(features) || features < 0) {
      throw invalidArgument(operation, '', 'features must be a non-negative integer mask');
    }
    return features;
  }
  if (!Array.isArray(features)) throw invalidArgument(operation, '', 'features must be a mask or a list of names');
  let mask = 0;
  for (const name of features) {
    const bit = (RbdFeature as Record<string, number>)[name];
    if (bit === undefined) throw invalidArgument(operation, '', `unknown feature ${JSON.stringify(name)}`);
    mask |= bit;
  }
  return mask;
}

/** An image's features: the mask and its names. */
export interface ImageFeatures {
  mask: number;
  names: FeatureName[];
}
