// `ephemera gc --cache`: golden images (the RBD backend's cluster-wide conversions) nobody needs.
import type { CacheGcEntry, Driver } from '@ephemera/driver';
import { CliError } from './context.js';

/** The flags of `ephemera gc`. */
export interface GcFlags {
  delete?: boolean;
  includeUnowned?: boolean;
  allHosts?: boolean;
  cache?: boolean;
  unused?: string;
  dryRun?: boolean;
}

/** Runs the cache gc with the command's options (`--unused <seconds>`, `--dry-run`) and prints it. */
export async function cacheGc(
  d: Driver,
  o: GcFlags,
  print: (json: unknown, text: () => string) => void,
): Promise<void> {
  let unusedSeconds: number | undefined;
  if (o.unused !== undefined) {
    unusedSeconds = Number(o.unused);
    if (!/^\d+$/.test(o.unused) || !Number.isSafeInteger(unusedSeconds))
      throw new CliError('INVALID_ARGUMENT', `--unused expects whole seconds, got ${JSON.stringify(o.unused)}`);
  }
  const r = await d.gcCache({
    ...(unusedSeconds !== undefined ? { unusedSeconds } : {}),
    ...(o.dryRun ? { dryRun: true } : {}),
  });
  print(r, () => formatCacheGc(r));
}

/** One line per golden image: removed or kept, and why. */
export function formatCacheGc(entries: CacheGcEntry[]): string {
  if (entries.length === 0) return 'no golden images';
  return entries.map((e) => `${e.action.padEnd(8)}${e.backend}:${e.name} (${e.kind}): ${e.reason}`).join('\n');
}
