// Disk ownership as LV tags: one tag per field (`ephemera.host=<id>`, ...), written by the
// `lvcreate` that makes the LV and replaced by one `lvchange` (one metadata commit) on handover.
import {
  assertValidOwnerStamp,
  handOver,
  isDiskOwner,
  ownerRecord,
  parseDiskId,
  type BackendCapabilities,
  type DiskInfo,
  type DiskOwner,
  type OwnerStamp,
} from '@ephemera/image-backend';
import { SECRET_TAG } from './encrypted.js';
import type { Lvm, LvInfo } from './lvm.js';

const PREFIX = 'ephemera.';
const FIELDS = [
  ['host', 'hostId'],
  ['instance', 'instance'],
  ['disk', 'disk'],
  ['created', 'createdAt'],
  ['version', 'version'],
] as const;

/** The LV tags of an owner record (LVM allows `A-Za-z0-9_+.-/=!:&#` in tags; every field fits). */
export function ownerTags(owner: DiskOwner): string[] {
  return FIELDS.map(([tag, field]) => `${PREFIX}${tag}=${owner[field]}`);
}

/** Whether a tag is one of the owner record's. */
export function isOwnerTag(tag: string): boolean {
  return FIELDS.some(([t]) => tag.startsWith(`${PREFIX}${t}=`));
}

/** The owner record in an LV's tags; `null` when they hold none (or a damaged one). */
export function ownerFromTags(tags: readonly string[]): DiskOwner | null {
  const rec: Record<string, string> = {};
  for (const [tag, field] of FIELDS) {
    const found = tags.filter((t) => t.startsWith(`${PREFIX}${tag}=`));
    if (found.length !== 1) return null;
    rec[field] = found[0]!.slice(PREFIX.length + tag.length + 1);
  }
  return isDiskOwner(rec) ? rec : null;
}

/**
 * Hands `lv` over to `stamp.hostId` with one `lvchange --addtag ... --deltag ...` (LVM commits
 * the metadata once, so the LV never carries two owners or none). Returns the new record.
 */
export async function setLvOwner(lvm: Lvm, lv: LvInfo, stamp: OwnerStamp): Promise<DiskOwner> {
  assertValidOwnerStamp(stamp);
  const cur = ownerFromTags(lv.tags);
  const next = cur ? handOver(cur, stamp) : ownerRecord(parseDiskId(lv.name)!, stamp);
  const want = ownerTags(next);
  const old = lv.tags.filter(isOwnerTag);
  await lvm.changeTags(
    lv.name,
    want.filter((t) => !old.includes(t)),
    old.filter((t) => !want.includes(t)),
  );
  return next;
}

/** The contract's view of an LV (`undefined` for LVs without a canonical disk id). */
export function toInfo(lv: LvInfo): DiskInfo | undefined {
  const ref = parseDiskId(lv.name);
  if (!ref) return undefined;
  return {
    disk: ref,
    id: lv.name,
    sizeBytes: lv.sizeBytes,
    format: 'raw',
    encrypted: lv.tags.some((t) => t.startsWith(SECRET_TAG)),
    owner: ownerFromTags(lv.tags),
  };
}

/** The backend's capabilities (the same with and without device-mapper, for now). */
export function capabilitiesFor(dm: boolean): Readonly<BackendCapabilities> {
  void dm; // snapshots/thin would need device-mapper; not implemented yet, so false in both modes
  return Object.freeze({
    clone: false,
    snapshot: false,
    rollback: false,
    flatten: false,
    resize: true,
    sharedStorage: false,
    directSnapshot: false,
    encryption: true,
    discard: false,
    thin: false,
  });
}
