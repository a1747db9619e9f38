/**
 * The handlers shipped with `@ephemera/glance`: RBD clone, RBD copy, HTTP(S) download, file://
 * (inside configured directories only) and the Glance download fallback.
 */
import { constants } from 'node:fs';
import { access, realpath, stat } from 'node:fs/promises';
import { isAbsolute, resolve as resolvePath, sep } from 'node:path';
import type { GlanceImage } from '../types.js';
import type { RbdLocation } from '../url.js';
import type { AssessContext, Assessment, ImageHandler, Location, PlanMethod, ResolveTarget } from './types.js';

/** Cost of each way to get an image (lower is better). Converting adds {@link CONVERSION_COST}. */
export const COSTS = {
  clone: 1,
  rbdCopyLocal: 20,
  rbdCopyRemote: 25,
  file: 15,
  https: 30,
  http: 32,
  glance: 40,
} as const;

/** Added to the cost when the bytes must be converted (e.g. qcow2 -> raw) on import. */
export const CONVERSION_COST = 10;

/**
 * Real check that an RBD snapshot can be opened read-only by this node (librbd in the driver,
 * `rbd info` in tests): `true`, or `false`/a reason string.
 */
export interface RbdProbe {
  snapshotReadable(
    ref: { fsid: string; pool: string; image: string; snapshot: string },
    signal?: AbortSignal,
  ): Promise<boolean | string>;
}

/** Disk formats a backend uses as they are (anything else is converted on import). */
export const NATIVE_FORMATS: Record<ResolveTarget['backend'], readonly string[]> = {
  rbd: ['raw', 'iso'],
  lvm: ['raw', 'iso'],
  qcow2: ['raw', 'qcow2', 'iso'],
};

/** Whether `image` can be used as-is by `target`, must be converted, or cannot be used at all. */
export function formatVerdict(
  image: GlanceImage,
  target: ResolveTarget,
): { ok: true; convert: boolean } | { ok: false; reason: string } {
  const container = image.container_format ?? 'bare';
  if (container !== 'bare') return { ok: false, reason: `container_format ${container} is not bare` };
  const fmt = image.disk_format;
  if (!fmt) return { ok: true, convert: true };
  return { ok: true, convert: !NATIVE_FORMATS[target.backend].includes(fmt) };
}

function priced(
  base: number,
  image: GlanceImage,
  target: ResolveTarget,
  plain: PlanMethod,
  detail?: string,
): Assessment {
  const v = formatVerdict(image, target);
  if (!v.ok) return { accept: false, reason: v.reason };
  const method: PlanMethod = v.convert ? 'convert-import' : plain;
  const d = v.convert
    ? `${image.disk_format ?? 'unknown format'} -> ${target.backend === 'qcow2' ? 'qcow2' : 'raw'}`
    : undefined;
  const text = [detail, d].filter(Boolean).join('; ');
  return { accept: true, cost: base + (v.convert ? CONVERSION_COST : 0), method, ...(text ? { detail: text } : {}) };
}

function snapName(p: RbdLocation): string {
  return `${p.pool}/${p.image}@${p.snapshot}`;
}

async function probe(p: RbdProbe, loc: RbdLocation, signal?: AbortSignal): Promise<string | undefined> {
  try {
    const r = await p.snapshotReadable(loc, signal);
    if (r === true) return undefined;
    return `snapshot ${snapName(loc)} is not readable${typeof r === 'string' && r ? `: ${r}` : ''}`;
  } catch (err) {
    return `snapshot ${snapName(loc)} is not readable: ${(err as Error).message}`;
  }
}

/** Copy-on-write clone of a raw image's snapshot in the local Ceph cluster (cost 1). */
export class RbdCloneHandler implements ImageHandler {
  readonly name = 'rbd-clone';
  readonly schemes = ['rbd'] as const;
  constructor(private readonly probe: RbdProbe) {}

  async assess(location: Location, { image, target, signal }: AssessContext): Promise<Assessment> {
    const p = location.parsed;
    if (p.kind === 'rbd-legacy')
      return { accept: false, reason: 'legacy one-part rbd URL names no cluster, pool or snapshot; not cloneable' };
    if (p.kind !== 'rbd') return { accept: false, reason: `not an rbd location` };
    if (target.backend !== 'rbd')
      return { accept: false, reason: `target backend ${target.backend} cannot use RBD clones` };
    if (!target.ceph) return { accept: false, reason: 'no local Ceph cluster configured' };
    if (p.fsid !== target.ceph.fsid.toLowerCase())
      return { accept: false, reason: `fsid ${p.fsid} is not the local cluster ${target.ceph.fsid.toLowerCase()}` };
    if (!target.ceph.pools.includes(p.pool))
      return {
        accept: false,
        reason: `pool ${p.pool} is not readable from this node (readable: ${target.ceph.pools.join(', ') || 'none'})`,
      };
    if (image.disk_format !== 'raw')
      return { accept: false, reason: `disk_format ${image.disk_format ?? 'unknown'} is not raw; clone needs raw` };
    const bad = await probe(this.probe, p, signal);
    if (bad) return { accept: false, reason: bad };
    return { accept: true, cost: COSTS.clone, method: 'clone', detail: `clone ${snapName(p)}` };
  }
}

/** Full copy out of an RBD snapshot, from the local or another reachable cluster (cost 20/25). */
export class RbdCopyHandler implements ImageHandler {
  readonly name = 'rbd-copy';
  readonly schemes = ['rbd'] as const;
  constructor(private readonly probe: RbdProbe) {}

  async assess(location: Location, { image, target, signal }: AssessContext): Promise<Assessment> {
    const p = location.parsed;
    if (p.kind === 'rbd-legacy') return { accept: false, reason: 'legacy one-part rbd URL names no cluster or pool' };
    if (p.kind !== 'rbd') return { accept: false, reason: 'not an rbd location' };
    const local = target.ceph && target.ceph.fsid.toLowerCase() === p.fsid;
    const cluster = local ? target.ceph : target.remoteClusters?.find((c) => c.fsid.toLowerCase() === p.fsid);
    if (!cluster) return { accept: false, reason: `no access to Ceph cluster ${p.fsid}` };
    if (!cluster.pools.includes(p.pool))
      return { accept: false, reason: `pool ${p.pool} of cluster ${p.fsid} is not readable from this node` };
    const v = formatVerdict(image, target);
    if (!v.ok) return { accept: false, reason: v.reason };
    const bad = await probe(this.probe, p, signal);
    if (bad) return { accept: false, reason: bad };
    return priced(
      local ? COSTS.rbdCopyLocal : COSTS.rbdCopyRemote,
      image,
      target,
      'copy',
      `read ${snapName(p)}${local ? '' : ` from cluster ${p.fsid}`}`,
    );
  }
}

/** Download from an http(s) location (cost 30 https, 32 http). */
export class HttpDownloadHandler implements ImageHandler {
  readonly name = 'http-download';
  readonly schemes = ['http', 'https'] as const;

  async assess(location: Location, { image, target }: AssessContext): Promise<Assessment> {
    const p = location.parsed;
    if (p.kind !== 'http') return { accept: false, reason: 'not an http(s) location' };
    if (p.scheme === 'http' && target.allowHttp === false)
      return { accept: false, reason: 'plain http is not allowed on this node' };
    return priced(p.scheme === 'https' ? COSTS.https : COSTS.http, image, target, 'download', `GET ${p.href}`);
  }
}

/** Is `child` strictly inside directory `dir` (both absolute, normalised)? */
export function isInside(dir: string, child: string): boolean {
  const d = dir.endsWith(sep) ? dir : dir + sep;
  return child.startsWith(d) && child.length > d.length;
}

/** Copy from a `file://` path, only inside `target.fileDirs` (symlinks resolved) (cost 15). */
export class FileHandler implements ImageHandler {
  readonly name = 'file';
  readonly schemes = ['file'] as const;

  async assess(location: Location, { image, target }: AssessContext): Promise<Assessment> {
    const p = location.parsed;
    if (p.kind !== 'file') return { accept: false, reason: 'not a file location' };
    const dirs = (target.fileDirs ?? []).filter((d) => isAbsolute(d)).map((d) => resolvePath(d));
    if (dirs.length === 0) return { accept: false, reason: 'no file directories are allowed on this node' };
    const path = resolvePath(p.path);
    if (!dirs.some((d) => isInside(d, path)))
      return { accept: false, reason: `${path} is outside the allowed directories (${dirs.join(', ')})` };
    let real: string;
    try {
      real = await realpath(path);
    } catch (err) {
      return {
        accept: false,
        reason: `${path} is not readable: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
      };
    }
    const realDirs = await Promise.all(dirs.map((d) => realpath(d).catch(() => undefined)));
    if (!realDirs.some((d) => d !== undefined && isInside(d, real)))
      return { accept: false, reason: `${path} resolves to ${real}, outside the allowed directories` };
    try {
      const st = await stat(real);
      if (!st.isFile()) return { accept: false, reason: `${path} is not a regular file` };
      await access(real, constants.R_OK);
      if (typeof image.size === 'number' && st.size !== image.size)
        return { accept: false, reason: `${path} has ${st.size} bytes, the image has ${image.size}` };
    } catch (err) {
      return {
        accept: false,
        reason: `${path} is not readable: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
      };
    }
    return priced(COSTS.file, image, target, 'copy', `read ${real}`);
  }
}

/** Download through Glance's own API: always possible for an active image (cost 40). */
export class GlanceDownloadHandler implements ImageHandler {
  readonly name = 'glance-download';
  readonly schemes = ['glance'] as const;

  async assess(location: Location, { image, target }: AssessContext): Promise<Assessment> {
    if (location.parsed.kind !== 'glance') return { accept: false, reason: 'not a glance location' };
    if (image.status !== 'active') return { accept: false, reason: `image is ${image.status}, not active` };
    return priced(COSTS.glance, image, target, 'download', `GET /v2/images/${image.id}/file (verified)`);
  }
}
