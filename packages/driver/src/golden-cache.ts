// Golden images (the RBD backend's cached conversions) as the driver shows and collects them:
// `image explain` says whether a spawn would build, wait for, reuse or rebuild one; `gc --cache`
// asks Glance which of them are still wanted.
import { isGlanceError, type GlanceClient } from '@ephemera/glance';
import type { ImageBackend, SourceImage } from '@ephemera/image-backend';
import { sourceImageFromGlance } from './source-image.js';

/** One golden image `gc --cache` looked at. */
export interface CacheGcEntry {
  backend: string;
  /** The RBD image (`ephemera-golden-<image id>`, or a `.building-`/`.stale-` one). */
  name: string;
  imageId: string;
  kind: 'golden' | 'building' | 'stale';
  /** Clones of it (never removed while it has any). */
  children: number;
  action: 'kept' | 'removed';
  reason: string;
}

/** Options of `Driver.gcCache`. */
export interface CacheGcOptions {
  /** Remove golden images without clones unused this long (s). Default `images.rbd.goldenUnusedSeconds`. */
  unusedSeconds?: number;
  /** Report only. */
  dryRun?: boolean;
}

/** The golden image API of a backend that has one (`RbdBackend.golden`), seen without importing its package. */
interface GoldenApi {
  plan(image: SourceImage): Promise<{ name?: string; action: string; reason: string }>;
  gc(opts: {
    lookup(imageId: string): Promise<SourceImage | null>;
    unusedMs?: number;
    dryRun?: boolean;
  }): Promise<Omit<CacheGcEntry, 'backend'>[]>;
}

function goldenOf(backend: ImageBackend): GoldenApi | undefined {
  const g = (backend as { golden?: unknown }).golden;
  return g && typeof (g as GoldenApi).gc === 'function' ? (g as GoldenApi) : undefined;
}

/** Glance's record of an image as a SourceImage, or null when Glance has no such image (any other failure throws). */
async function lookup(glance: GlanceClient, imageId: string): Promise<SourceImage | null> {
  try {
    return sourceImageFromGlance(glance, await glance.getImage(imageId));
  } catch (e) {
    if (isGlanceError(e, 'GLANCE_NOT_FOUND')) return null;
    throw e;
  }
}

/** `gc --cache` over every backend with golden images. */
export async function gcGoldenCache(
  backends: readonly ImageBackend[],
  glance: GlanceClient,
  opts: { unusedSeconds: number; dryRun?: boolean },
): Promise<CacheGcEntry[]> {
  const out: CacheGcEntry[] = [];
  for (const b of backends) {
    const g = goldenOf(b);
    if (!g) continue;
    const entries = await g.gc({
      lookup: (id) => lookup(glance, id),
      unusedMs: opts.unusedSeconds * 1000,
      ...(opts.dryRun ? { dryRun: true } : {}),
    });
    for (const e of entries) out.push({ backend: b.name, ...e });
  }
  return out;
}

/** The `image explain` line about the image's golden image on `backend`, if it has golden images. */
export async function explainGolden(
  backend: ImageBackend | undefined,
  glance: GlanceClient,
  imageId: string,
): Promise<string | undefined> {
  const g = backend && goldenOf(backend);
  if (!g) return undefined;
  const image = await lookup(glance, imageId);
  if (!image) return undefined;
  const p = await g.plan(image);
  const what: Record<string, string> = {
    reuse: 'reused (cloned)',
    build: 'built by this spawn, then cloned',
    wait: 'being built elsewhere: this spawn waits, then clones',
    rebuild: 'rebuilt by this spawn, then cloned',
    none: 'not used',
  };
  return `golden image${p.name ? ` ${p.name}` : ''}: ${what[p.action] ?? p.action} (${p.reason}); used only when the image cannot be cloned directly`;
}
