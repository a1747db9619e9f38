// Golden images: the policy of building, checking and reusing one cluster-wide cached raw copy of
// an image the backend cannot clone (qcow2, or any image not on RBD in this cluster), so that it is
// downloaded and converted once per cluster and cloned for every instance.
import { hostname } from 'node:os';
import { InvalidArgumentError, type SourceImage } from '@ephemera/image-backend';
import { ImageNotFound, type Image } from '@ephemera/ceph-rbd-napi';

/** Name prefix of golden images (`ephemera-golden-<image id>`). */
export const GOLDEN_PREFIX = 'ephemera-golden-';
/** The protected snapshot every clone is made from. */
export const GOLDEN_SNAP = 'snap';
/** Name of the RADOS lock on `<golden name>.lock` that elects the one builder. */
export const GOLDEN_LOCK = 'ephemera-golden-build';
/** Infix of an image still being built: `<golden name>.building-<cookie>`. */
export const BUILDING_INFIX = '.building-';
/** Infix of a retired golden image that still had clones: `<golden name>.stale-<ms>`. */
export const STALE_INFIX = '.stale-';

/** Image metadata of a golden image: what it was built from, by whom, and when it was last used. */
export const GOLDEN_META = {
  source: 'ephemera.golden.source',
  checksum: 'ephemera.golden.checksum',
  format: 'ephemera.golden.format',
  builder: 'ephemera.golden.builder',
  builtAt: 'ephemera.golden.built-at',
  lastUsed: 'ephemera.golden.last-used',
} as const;

/** Glance image ids (and anything else) that make a valid RBD image name after the prefix. */
const IMAGE_ID_RE = /^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$/;

/** The golden image name of a Glance image, or `undefined` when its id cannot name an RBD image. */
export function goldenName(imageId: string): string | undefined {
  return IMAGE_ID_RE.test(imageId) ? `${GOLDEN_PREFIX}${imageId}` : undefined;
}

/** The RADOS object whose lock elects the builder of `name`. */
export function goldenLockObject(name: string): string {
  return `${name}.lock`;
}

/**
 * The checksum a golden image is built against and must keep matching: Glance's multihash
 * (`<os_hash_algo>:<os_hash_value>`), else its legacy md5 (`md5:<checksum>`), lower case;
 * `undefined` when Glance gives neither (then nothing could prove the cache is that image).
 */
export function goldenChecksum(
  image: Pick<SourceImage, 'osHashAlgo' | 'osHashValue' | 'checksum'>,
): string | undefined {
  if (image.osHashAlgo && image.osHashValue) return `${image.osHashAlgo}:${image.osHashValue}`.toLowerCase();
  if (image.checksum) return `md5:${image.checksum}`.toLowerCase();
  return undefined;
}

/** Who builds: recorded in the golden image's metadata (host, pid, cephx client). */
export function builderLabel(clientId: string, instanceId: number): string {
  return `${hostname()} pid ${process.pid} client.${clientId} (client.${instanceId})`;
}

/** Configuration of golden images (see `RbdBackendOptions.goldenImages`). */
export interface GoldenImageOptions {
  /** Pool of the golden images. Default: the instances' pool (`pool`). */
  pool?: string;
  /**
   * Lease of the build lock (ms): renewed every third of it while building; a builder that dies
   * frees the lock this long after its last renewal. Default 30 000.
   */
  leaseMs?: number;
  /** How long a create waits for another process's build before failing with `BusyError` (ms). Default 3 600 000. */
  waitTimeoutMs?: number;
  /** How often a waiting create looks again (ms). Default 500. */
  pollMs?: number;
}

/** Validates `goldenImages`; throws `InvalidArgumentError` naming the bad field. */
export function validateGoldenOptions(g: GoldenImageOptions | undefined, poolRe: RegExp): void {
  if (g === undefined) return;
  if (!g || typeof g !== 'object') throw new InvalidArgumentError('goldenImages', 'expected an object');
  if (g.pool !== undefined && (typeof g.pool !== 'string' || !poolRe.test(g.pool)))
    throw new InvalidArgumentError('goldenImages.pool', 'expected a pool name');
  for (const k of ['leaseMs', 'waitTimeoutMs', 'pollMs'] as const) {
    const v = g[k];
    if (v !== undefined && (!Number.isSafeInteger(v) || v <= 0))
      throw new InvalidArgumentError(`goldenImages.${k}`, 'expected a positive integer');
  }
  if (g.leaseMs !== undefined && g.leaseMs < 3_000)
    throw new InvalidArgumentError('goldenImages.leaseMs', 'at least 3000 (renewed every third of it)');
}

/** What is found under a golden image's name. */
export type GoldenState =
  | { kind: 'ready' }
  | { kind: 'missing' }
  /** Present but must not be cloned: half-built, or another checksum (Glance's image changed). */
  | { kind: 'unusable'; reason: string };

/**
 * Whether the golden image `name` (opened read-only as `img`) may be cloned for an image with
 * `checksum`: its recorded checksum must be that one and its snapshot must exist and be protected
 * (the last build step before the rename: anything less is a half-built image).
 */
export async function goldenState(img: Image, checksum: string): Promise<GoldenState> {
  const recorded = await img.metadataGet(GOLDEN_META.checksum);
  if (recorded === undefined) return { kind: 'unusable', reason: 'half-built (no checksum recorded)' };
  if (recorded !== checksum)
    return { kind: 'unusable', reason: `checksum ${recorded} is not Glance's ${checksum} (the image changed)` };
  const snap = (await img.listSnapshots()).find((s) => s.name === GOLDEN_SNAP && s.namespace === 'user');
  if (!snap) return { kind: 'unusable', reason: `half-built (no snapshot ${GOLDEN_SNAP})` };
  if (!snap.protected) return { kind: 'unusable', reason: `half-built (snapshot ${GOLDEN_SNAP} not protected)` };
  return { kind: 'ready' };
}

/** `goldenState` of `name`, opening it read-only (no watch) with `open`. */
export async function inspectGolden(
  open: (name: string) => Promise<Image>,
  name: string,
  checksum: string,
): Promise<GoldenState> {
  let img: Image;
  try {
    img = await open(name);
  } catch (e) {
    if (e instanceof ImageNotFound) return { kind: 'missing' };
    throw e;
  }
  try {
    return await goldenState(img, checksum);
  } finally {
    await img.close().catch(() => undefined);
  }
}

/** The image id a golden (or building, or stale) image name is for, or `undefined` if none of ours. */
export function parseGoldenName(name: string): { imageId: string; kind: 'golden' | 'building' | 'stale' } | undefined {
  if (!name.startsWith(GOLDEN_PREFIX)) return undefined;
  const rest = name.slice(GOLDEN_PREFIX.length);
  for (const [infix, kind] of [
    [BUILDING_INFIX, 'building'],
    [STALE_INFIX, 'stale'],
  ] as const) {
    const i = rest.indexOf(infix);
    if (i > 0) return IMAGE_ID_RE.test(rest.slice(0, i)) ? { imageId: rest.slice(0, i), kind } : undefined;
  }
  if (rest.includes('.')) return undefined;
  return IMAGE_ID_RE.test(rest) ? { imageId: rest, kind: 'golden' } : undefined;
}

/** Refusal to use golden images for one image, with the reason the result carries. */
export function goldenRefusal(image: SourceImage): string | undefined {
  if (!goldenName(image.id)) return `image id ${JSON.stringify(image.id)} cannot name an RBD image`;
  if (!goldenChecksum(image)) return 'Glance gives no checksum (os_hash_value or checksum) to verify a cached copy';
  return undefined;
}
