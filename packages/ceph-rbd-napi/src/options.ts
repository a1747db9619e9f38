// Options of image creation, cloning and opening, and their translation for the addon.
import { invalidArgument } from './errors.js';
import { featureMask, type Features } from './features.js';
import type { IoCtx } from './ioctx.js';
import type { NativeImageOpts } from './native.js';
import { checkName, checkUint } from './validation.js';

/** Options for {@link IoCtx.create}. Unset values take the cluster's `rbd_default_*`. */
export interface CreateOptions {
  features?: Features;
  /** Object size as a power of two, 12..25 (4 KiB..32 MiB). */
  order?: number;
  stripeUnit?: number;
  stripeCount?: number;
  /** Pool for the image's data objects (erasure-coded pools). */
  dataPool?: string;
}

/** Options for {@link IoCtx.clone}. */
export interface CloneOptions {
  /** The parent snapshot: its pool (by name, on the same cluster) or an open IoCtx (default: this one). */
  parent: { pool?: string; namespace?: string; ioctx?: IoCtx; image: string; snap: string };
  /** The new image: its IoCtx (default: this one) and name. */
  dest: { ioctx?: IoCtx; name: string };
  features?: Features;
  order?: number;
  stripeUnit?: number;
  stripeCount?: number;
  dataPool?: string;
  /**
   * 1 needs a protected parent snapshot; 2 does not (the snapshot is then kept in the trash
   * namespace until its last child goes). Default: the cluster's `rbd_default_clone_format`.
   */
  cloneFormat?: 1 | 2;
}

/** Options for {@link IoCtx.open}. */
export interface OpenOptions {
  /** Open the image at this snapshot (always read-only). */
  snapshot?: string;
  /** Open without a watch (no write caps needed); writes fail with ReadOnlyImage. */
  readOnly?: boolean;
}

/** @internal */
export function imageOpts(op: string, target: string, o: CreateOptions & { cloneFormat?: number }): NativeImageOpts {
  const out: NativeImageOpts = {};
  if (o.features !== undefined) out.features = featureMask(o.features, op);
  if (o.order !== undefined) {
    if (!Number.isInteger(o.order) || o.order < 12 || o.order > 25)
      throw invalidArgument(op, target, 'order must be an integer in 12..25');
    out.order = o.order;
  }
  if (o.stripeUnit !== undefined) out.stripeUnit = checkUint(op, target, 'stripeUnit', o.stripeUnit);
  if (o.stripeCount !== undefined) out.stripeCount = checkUint(op, target, 'stripeCount', o.stripeCount);
  if (o.dataPool !== undefined) out.dataPool = checkName(op, 'dataPool', o.dataPool);
  if (o.cloneFormat !== undefined) {
    if (o.cloneFormat !== 1 && o.cloneFormat !== 2) throw invalidArgument(op, target, 'cloneFormat must be 1 or 2');
    out.cloneFormat = o.cloneFormat;
  }
  return out;
}
