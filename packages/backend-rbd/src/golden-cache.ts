// Golden images as a cache an operator looks at: what a create would do with one image (build,
// wait, reuse, rebuild), and the garbage collection of golden images nobody needs any more.
import type { SourceImage } from '@ephemera/image-backend';
import type { Image } from '@ephemera/ceph-rbd-napi';
import type { GoldenContext } from './golden-build.js';
import {
  GOLDEN_LOCK,
  GOLDEN_META,
  goldenChecksum,
  goldenLockObject,
  goldenName,
  goldenRefusal,
  inspectGolden,
  parseGoldenName,
} from './golden.js';

/** What a create from this image would do about its golden image (`image explain`). */
export interface GoldenImagePlan {
  /** `<pool>/ephemera-golden-<image id>`, when the image can have one. */
  name?: string;
  /**
   * `reuse`: a usable golden image exists (clone it); `build`: none yet (this create builds it);
   * `wait`: another process is building it (wait, then clone); `rebuild`: one exists but is
   * half-built or from another checksum (replaced); `none`: no golden image for this image.
   */
  action: 'reuse' | 'build' | 'wait' | 'rebuild' | 'none';
  reason: string;
}

/** One image the cache gc looked at. */
export interface GoldenGcEntry {
  /** The RBD image (golden, `.building-<cookie>` or `.stale-<ms>`). */
  name: string;
  /** The Glance image it is (or was being built) for. */
  imageId: string;
  /** A golden image, a temporary one of a build, or one retired by a rebuild. */
  kind: 'golden' | 'building' | 'stale';
  /** Clones of its snapshots (a golden image with clones is never removed). */
  children: number;
  /** What gc did, and why. */
  action: 'kept' | 'removed';
  reason: string;
}

/** Options of {@link GoldenImages.gc}. */
export interface GoldenGcOptions {
  /**
   * Glance's record of an image, as `goldenChecksum` needs it, or `null` when Glance has no such
   * image (deleted). A throw keeps the golden image (Glance unreachable is not "gone").
   */
  lookup(imageId: string): Promise<Pick<SourceImage, 'osHashAlgo' | 'osHashValue' | 'checksum'> | null>;
  /** Also remove golden images without clones unused (last clone, else built) for this long (ms). */
  unusedMs?: number;
  /** Report only, remove nothing. Default false. */
  dryRun?: boolean;
}

/**
 * The golden images of one backend (`RbdBackend.golden`): their plan for an image and their gc.
 * Creates use them through `createFromImage`.
 */
export interface GoldenImages {
  /** What `createFromImage` would do about this image's golden image, and why. */
  plan(image: SourceImage): Promise<GoldenImagePlan>;
  /**
   * Removes golden images nobody needs: those whose Glance image is gone or has another checksum
   * now, and (with `unusedMs`) those unused that long; never one with clones. Also removes
   * retired (`.stale-`) images without clones and temporary (`.building-`) images no live
   * builder holds the lock for (a builder that died; its dead clients' watches are evicted).
   * A create that finds a golden image just before gc removes it looks for it once more.
   */
  gc(opts: GoldenGcOptions): Promise<GoldenGcEntry[]>;
}

/** {@link GoldenImages} over the golden pool (opened on first use). */
export class GoldenImageCache implements GoldenImages {
  constructor(private readonly open: () => Promise<GoldenContext>) {}

  async plan(image: SourceImage): Promise<GoldenImagePlan> {
    const refused = goldenRefusal(image);
    if (refused) return { action: 'none', reason: refused };
    const g = await this.open();
    const name = goldenName(image.id)!;
    const label = `${g.pool}/${name}`;
    const { ops } = g.ctx;
    try {
      const state = await inspectGolden((n) => ops.io.open(n, { readOnly: true }), name, goldenChecksum(image)!);
      if (state.kind === 'ready') return { name: label, action: 'reuse', reason: 'complete, same checksum as Glance' };
      const holders = (await ops.io.listLockers(goldenLockObject(name), GOLDEN_LOCK)).lockers;
      if (holders.length)
        return {
          name: label,
          action: 'wait',
          reason: `being built by ${holders[0]!.client} at ${holders[0]!.address}`,
        };
      if (state.kind === 'missing') return { name: label, action: 'build', reason: 'not built yet' };
      return { name: label, action: 'rebuild', reason: state.reason };
    } catch (e) {
      throw ops.translate(e, name);
    }
  }

  async gc(opts: GoldenGcOptions): Promise<GoldenGcEntry[]> {
    const g = await this.open();
    const { ops } = g.ctx;
    const out: GoldenGcEntry[] = [];
    let names: string[];
    try {
      names = await ops.io.list();
    } catch (e) {
      throw ops.translate(e);
    }
    for (const name of names.sort()) {
      const parsed = parseGoldenName(name);
      if (!parsed) continue;
      let facts: { children: number; meta: Map<string, string> };
      try {
        facts = await withReadOnly(g, name, async (img) => ({
          children: await countChildren(img),
          meta: new Map(await img.metadataList()),
        }));
      } catch {
        continue; // removed meanwhile, or unreadable: nothing to decide
      }
      const entry = { name, imageId: parsed.imageId, kind: parsed.kind, children: facts.children };
      const keep = (reason: string) => out.push({ ...entry, action: 'kept', reason });
      if (facts.children > 0) {
        keep(`${facts.children} clone(s) use it`);
        continue;
      }
      let why: string | undefined;
      if (parsed.kind === 'building') {
        const base = name.slice(0, name.indexOf('.building-'));
        const held = (await ops.io.listLockers(goldenLockObject(base), GOLDEN_LOCK)).lockers.length > 0;
        if (held) {
          keep('a build may be running (its lock is held)');
          continue;
        }
        why = 'left by a builder that died (no one holds the build lock)';
      } else if (parsed.kind === 'stale') why = 'retired (replaced by a rebuild) and no clone uses it';
      else {
        let rec: Awaited<ReturnType<GoldenGcOptions['lookup']>>;
        try {
          rec = await opts.lookup(parsed.imageId);
        } catch (e) {
          keep(`Glance could not be asked: ${(e as Error).message}`);
          continue;
        }
        const used = facts.meta.get(GOLDEN_META.lastUsed) ?? facts.meta.get(GOLDEN_META.builtAt);
        const idleMs = used ? Date.now() - Date.parse(used) : Number.POSITIVE_INFINITY;
        if (rec === null) why = 'its Glance image is gone';
        else if (goldenChecksum(rec) !== facts.meta.get(GOLDEN_META.checksum))
          why = "Glance's checksum is not the one it was built from";
        else if (opts.unusedMs !== undefined && idleMs >= opts.unusedMs)
          why = `unused for ${Math.floor(idleMs / 1000)} s (last used ${used ?? 'never'})`;
        else {
          keep(`in use or recently used (last used ${used ?? 'unknown'})`);
          continue;
        }
      }
      if (opts.dryRun) {
        keep(`would be removed: ${why}`);
        continue;
      }
      try {
        // A builder's killed qemu-img (or process) leaves a watch for ~30 s: evict it (dead client).
        if (parsed.kind === 'building') await ops.evictWatchers(name);
        await ops.removeDisk(name, { busyTimeoutMs: 5_000 });
        out.push({ ...entry, action: 'removed', reason: why });
      } catch (e) {
        keep(`could not be removed (${(e as Error).message}); ${why}`);
      }
    }
    return out;
  }
}

async function withReadOnly<T>(g: GoldenContext, name: string, fn: (img: Image) => Promise<T>): Promise<T> {
  const img = await g.ctx.ops.io.open(name, { readOnly: true });
  try {
    return await fn(img);
  } finally {
    await img.close().catch(() => undefined);
  }
}

/** Clones of any snapshot of the image (user or trash namespace). */
async function countChildren(img: Image): Promise<number> {
  let n = 0;
  for (const s of await img.listSnapshots()) n += (await img.snapshotChildren(s.id)).length;
  return n;
}
