import type { SourceImage } from '@ephemera/image-backend';
import { parseRbdUrl, type RbdUrl } from './locations.js';
import { allowsCloneV2 } from './options.js';

/** One clone candidate: a parsed `rbd://` location of the image and its text. */
export interface ClonePlan {
  url: RbdUrl;
  location: string;
}

/**
 * What `createFromImage` decides from the image record alone: clone candidates (every `rbd://`
 * location in this cluster, in the order given, tried one after the other as Nova's `Rbd.clone`
 * does), or an import and why (with an `rbd://` location the image has, for
 * `neverDownloadIfOnRbd`).
 */
export type CloneDecision =
  | { kind: 'clone'; candidates: ClonePlan[] }
  | { kind: 'import'; reason: string; rbdLocation?: string };

/** Every `rbd://` location of the image in the cluster `fsid`, in the order of `image.locations`. */
export function localRbdLocations(image: Pick<SourceImage, 'locations'>, fsid: string): ClonePlan[] {
  const out: ClonePlan[] = [];
  for (const l of image.locations ?? []) {
    const u = parseRbdUrl(l.url);
    if (u && u.fsid === fsid) out.push({ url: u, location: l.url });
  }
  return out;
}

/**
 * Clone or import, from the image record alone (no I/O), as Nova's `is_cloneable`: a raw image
 * with an `rbd://` location in this cluster (`fsid`, lower case) is cloned; anything else, or
 * `forceImport`, is imported.
 */
export function decideClone(
  image: Pick<SourceImage, 'locations' | 'diskFormat'>,
  fsid: string,
  forceImport: boolean,
): CloneDecision {
  const rbd = (image.locations ?? [])
    .map((l) => ({ location: l.url, url: parseRbdUrl(l.url) }))
    .filter((l): l is { location: string; url: RbdUrl } => l.url !== undefined);
  const local = localRbdLocations(image, fsid);
  const here = local[0];
  const anyRbd = here?.location ?? rbd[0]?.location;
  const withLoc = (reason: string): CloneDecision => ({
    kind: 'import',
    reason,
    ...(anyRbd ? { rbdLocation: anyRbd } : {}),
  });
  if (forceImport) return withLoc('forceImport: clone not attempted');
  if (rbd.length === 0) return withLoc('no rbd:// location (image not in an RBD store)');
  if (!here) return withLoc(`rbd location is in another cluster (fsid ${rbd[0]!.url.fsid}, this cluster ${fsid})`);
  const format = String(image.diskFormat ?? '').toLowerCase();
  if (format !== 'raw')
    return withLoc(
      `image is ${format || 'of unknown format'}, not raw: a clone would hand QEMU ${format} data as a raw disk`,
    );
  return { kind: 'clone', candidates: local };
}

/** The clone format the cluster allows (undefined: unknown, decided per parent) and why. */
export interface CloneFormatPolicy {
  format: 1 | 2 | undefined;
  why: string;
}

/**
 * The clone format from the configuration and the cluster's `require_min_compat_client`
 * (undefined when it could not be read).
 */
export function cloneFormatPolicy(configured: 'auto' | 1 | 2, minCompatClient: string | undefined): CloneFormatPolicy {
  if (configured !== 'auto') return { format: configured, why: 'configured' };
  if (!minCompatClient) return { format: undefined, why: 'require_min_compat_client unknown' };
  return allowsCloneV2(minCompatClient)
    ? { format: 2, why: `require_min_compat_client ${minCompatClient} >= mimic` }
    : { format: 1, why: `require_min_compat_client ${minCompatClient} < mimic` };
}

/**
 * The clone format for one parent snapshot: format 1 needs it protected (else import); an unknown
 * policy uses format 1 for a protected snapshot and 2 otherwise.
 */
export function cloneFormatFor(
  policy: CloneFormatPolicy,
  parentProtected: boolean,
  parentLabel: string,
): { kind: 'clone'; format: 1 | 2; why: string } | { kind: 'import'; reason: string } {
  if (policy.format === 2) return { kind: 'clone', format: 2, why: policy.why };
  if (policy.format === 1) {
    if (!parentProtected)
      return {
        kind: 'import',
        reason: `clone format 2 not allowed (${policy.why}) and parent snapshot ${parentLabel} is not protected`,
      };
    return { kind: 'clone', format: 1, why: `${policy.why}; parent snapshot protected` };
  }
  return parentProtected
    ? { kind: 'clone', format: 1, why: `${policy.why}; parent snapshot protected` }
    : { kind: 'clone', format: 2, why: `${policy.why}; parent snapshot unprotected` };
}
