/** The location resolver: every candidate location x every handler -> a ranked plan. */
import { displayUrl, GlanceError, LocationParseError, NoUsablePlanError } from '../errors.js';
import type { CopyImageOptions, ImageLocations } from '../client.js';
import type { GlanceImage, ImageLocationEntry } from '../types.js';
import { glanceLocationUrl, parseLocationUrl } from '../url.js';
import type {
  DeclinedOption,
  ImageHandler,
  Location,
  LocationSource,
  Plan,
  PlanOption,
  ResolveTarget,
} from './types.js';

/** The part of {@link GlanceClient} the resolver uses. */
export interface ResolverGlance {
  getImage(imageId: string, opts?: { signal?: AbortSignal }): Promise<GlanceImage>;
  getLocations(imageId: string, opts?: { signal?: AbortSignal; image?: GlanceImage }): Promise<ImageLocations>;
  copyImage(imageId: string, stores: string[], opts?: CopyImageOptions): Promise<GlanceImage>;
}

/** Options of {@link ImageResolver.resolve}. */
export interface ResolveOptions {
  signal?: AbortSignal;
  /**
   * When no clone is possible (or no location is usable at all) and `target.localStore` is set,
   * ask Glance to copy the image into that store (copy-image import) and resolve again, once.
   */
  copyToLocalStore?: boolean;
  /** Options of the copy-image import (timeout, poll interval). */
  copy?: Omit<CopyImageOptions, 'signal'>;
}

/** Ranks image locations by what the registered handlers say about them. */
export class ImageResolver {
  readonly #glance: ResolverGlance;
  readonly #handlers: ImageHandler[];

  constructor(glance: ResolverGlance, handlers: ImageHandler[]) {
    const names = new Set<string>();
    for (const h of handlers) {
      if (names.has(h.name)) throw new TypeError(`two image handlers are named ${h.name}`);
      names.add(h.name);
    }
    this.#glance = glance;
    this.#handlers = [...handlers];
  }

  /** Names of the registered handlers. */
  get handlers(): string[] {
    return this.#handlers.map((h) => h.name);
  }

  /**
   * Walk the image's locations, `direct_url` and the Glance download; ask every handler that knows
   * the scheme; rank accepted options by cost, then by `target.preferredStores`, then by the order
   * Glance listed them. Throws {@link NoUsablePlanError} when nothing is usable (with
   * `copyToLocalStore`: not even after the copy).
   */
  async resolve(imageId: string, target: ResolveTarget, opts: ResolveOptions = {}): Promise<Plan> {
    const store = opts.copyToLocalStore ? target.localStore : undefined;
    let plan: Plan | undefined;
    let unusable: NoUsablePlanError | undefined;
    try {
      plan = await this.#resolveOnce(imageId, target, opts.signal);
    } catch (err) {
      // Nothing usable yet: a copy into the local store may be, so copy first and plan again
      // (Nova's clone(copy_to_store=True)).
      if (!(err instanceof NoUsablePlanError) || !store) throw err;
      unusable = err;
    }
    if (!store || plan?.options.some((o) => o.method === 'clone')) return plan!;
    try {
      await this.#glance.copyImage(imageId, [store], { ...opts.copy, ...(opts.signal ? { signal: opts.signal } : {}) });
    } catch (err) {
      if (!(err instanceof GlanceError)) throw err;
      const refusal: DeclinedOption = {
        handler: 'copy-image',
        location: `store ${store}`,
        source: 'glance',
        reason: err.message,
      };
      if (!plan) throw new NoUsablePlanError(imageId, [...unusable!.declined, refusal]);
      plan.declined.push(refusal);
      return plan;
    }
    // Once only: still nothing usable after the copy is the same NoUsablePlanError.
    const again = await this.#resolveOnce(imageId, target, opts.signal);
    again.copiedToStore = store;
    return again;
  }

  /** Resolve, then render the plan as text (what `ephemera image explain` prints). */
  async explain(imageId: string, target: ResolveTarget, opts: ResolveOptions = {}): Promise<string> {
    return formatPlan(await this.resolve(imageId, target, opts));
  }

  async #resolveOnce(imageId: string, target: ResolveTarget, signal?: AbortSignal): Promise<Plan> {
    const so = signal ? { signal } : {};
    const image = await this.#glance.getImage(imageId, so);
    const locs = await this.#glance.getLocations(imageId, { ...so, image });
    const raw: { entry: ImageLocationEntry; source: LocationSource }[] = locs.locations.map((entry) => ({
      entry,
      source: locs.source === 'locations-api' ? 'locations-api' : 'locations',
    }));
    if (locs.directUrl && !raw.some((r) => r.entry.url === locs.directUrl))
      raw.push({ entry: { url: locs.directUrl, metadata: {} }, source: 'direct_url' });
    raw.push({ entry: { url: glanceLocationUrl(image.id), metadata: {} }, source: 'glance' });

    const accepted: (PlanOption & { order: number })[] = [];
    const declined: DeclinedOption[] = [];
    let order = 0;
    for (const { entry, source } of raw) {
      order++;
      const shown = displayUrl(entry.url);
      let location: Location;
      try {
        const parsed = parseLocationUrl(entry.url);
        const metadata = entry.metadata ?? {};
        const store = typeof metadata.store === 'string' ? metadata.store : undefined;
        location = { url: entry.url, parsed, metadata, source, ...(store ? { store } : {}) };
      } catch (err) {
        if (!(err instanceof LocationParseError)) throw err;
        declined.push({ handler: 'url-parser', location: shown, source, reason: err.message });
        continue;
      }
      const handlers = this.#handlers.filter((h) => h.schemes.includes(location.parsed.scheme));
      if (handlers.length === 0) {
        declined.push({
          handler: 'none',
          location: shown,
          source,
          reason: `no handler for scheme ${location.parsed.scheme}`,
        });
        continue;
      }
      for (const h of handlers) {
        let verdict;
        try {
          verdict = await h.assess(location, { image, target, ...so });
        } catch (err) {
          declined.push({
            handler: h.name,
            location: shown,
            source,
            reason: `handler failed: ${(err as Error).message}`,
          });
          continue;
        }
        if (verdict.accept) {
          accepted.push({
            handler: h.name,
            location: shown,
            source,
            ...(location.store ? { store: location.store } : {}),
            method: verdict.method,
            cost: verdict.cost,
            ...(verdict.detail ? { detail: verdict.detail } : {}),
            parsed: location.parsed,
            order,
          });
        } else {
          declined.push({ handler: h.name, location: shown, source, reason: verdict.reason });
        }
      }
    }
    const pref = target.preferredStores ?? [];
    const rank = (s?: string): number => {
      const i = s === undefined ? -1 : pref.indexOf(s);
      return i === -1 ? pref.length : i;
    };
    accepted.sort((a, b) => a.cost - b.cost || rank(a.store) - rank(b.store) || a.order - b.order);
    const options: PlanOption[] = accepted.map(({ order: _o, ...o }) => o);
    if (options.length === 0) throw new NoUsablePlanError(imageId, declined);
    return { imageId, image, target, chosen: options[0]!, options, declined };
  }
}

/** Render a plan for humans: the chosen option, the alternatives, and every refusal with its reason. */
export function formatPlan(plan: Plan): string {
  const lines: string[] = [];
  const img = plan.image;
  lines.push(
    `image ${plan.imageId} (${img.name ?? 'unnamed'}, ${img.disk_format ?? '?'}, ${img.size ?? '?'} bytes) for backend ${plan.target.backend}`,
  );
  if (plan.copiedToStore) lines.push(`copied into store ${plan.copiedToStore} first`);
  const c = plan.chosen;
  lines.push(
    `plan: ${c.method} by ${c.handler} from ${c.location} (cost ${c.cost}${c.store ? `, store ${c.store}` : ''})${c.detail ? ` - ${c.detail}` : ''}`,
  );
  for (const o of plan.options.slice(1))
    lines.push(
      `  also possible: ${o.method} by ${o.handler} from ${o.location} (cost ${o.cost}${o.store ? `, store ${o.store}` : ''})`,
    );
  for (const d of plan.declined) lines.push(`  declined: ${d.handler} ${d.location}: ${d.reason}`);
  return lines.join('\n');
}
