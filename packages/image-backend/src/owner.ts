/**
 * Disk ownership: which compute host owns a disk, recorded on the disk itself (RBD image metadata,
 * LVM tags, a qcow2 sidecar file) so that hosts sharing one storage pool never touch each other's
 * disks. The record, its validation and its one text form (JSON) live here; each backend stores it.
 */
import { InvalidArgumentError } from './errors.js';
import { isUuid } from './disk-ref.js';
import type { DiskRef } from './types.js';

/** Who owns a disk, as recorded on the disk. */
export interface DiskOwner {
  /** The owning host's id (the driver's `host.id`): see {@link isHostId}. */
  readonly hostId: string;
  /** Instance UUID of the disk (lower case). */
  readonly instance: string;
  /** Disk name (`disk`, `disk.swap`, ...). */
  readonly disk: string;
  /** When the disk was created, ISO 8601 UTC (`2026-12-02T07:30:00.000Z`). */
  readonly createdAt: string;
  /** Version of the Ephemera that wrote the record (at create, or at the last `setOwner`). */
  readonly version: string;
}

/**
 * What a caller gives to record (`owner` of a create) or hand over (`setOwner`) ownership; the
 * backend adds the instance, the disk name and the creation time.
 */
export interface OwnerStamp {
  /** The owning host's id: see {@link isHostId}. */
  readonly hostId: string;
  /** The caller's Ephemera version, e.g. `0.4.1`. */
  readonly version: string;
}

const HOST_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const VERSION_RE = /^[A-Za-z0-9][A-Za-z0-9.+_-]{0,63}$/;
const ISO_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?Z$/;

/**
 * Whether `id` can be a host id: 1..64 of `A-Za-z0-9._-`, starting with a letter or digit. Ids go
 * into RBD metadata, LVM tags (whose charset is narrow) and file names, so nothing else.
 */
export function isHostId(id: unknown): id is string {
  return typeof id === 'string' && HOST_ID_RE.test(id);
}

/** Throws `InvalidArgumentError` unless `stamp` is a valid {@link OwnerStamp}. */
export function assertValidOwnerStamp(stamp: unknown, argument = 'owner'): asserts stamp is OwnerStamp {
  if (typeof stamp !== 'object' || stamp === null)
    throw new InvalidArgumentError(argument, 'expected { hostId, version }');
  const { hostId, version } = stamp as { hostId?: unknown; version?: unknown };
  if (!isHostId(hostId))
    throw new InvalidArgumentError(
      `${argument}.hostId`,
      `${JSON.stringify(hostId)} is not a host id (1..64 of A-Za-z0-9._-, starting with a letter or digit)`,
    );
  if (typeof version !== 'string' || !VERSION_RE.test(version))
    throw new InvalidArgumentError(`${argument}.version`, `${JSON.stringify(version)} is not a version`);
}

/** The owner record of a new disk (or of a disk without one that is handed over). */
export function ownerRecord(disk: DiskRef, stamp: OwnerStamp, createdAt: Date = new Date()): DiskOwner {
  return {
    hostId: stamp.hostId,
    instance: disk.instance.toLowerCase(),
    disk: disk.name,
    createdAt: createdAt.toISOString(),
    version: stamp.version,
  };
}

/** `current` handed over to `stamp.hostId` (creation time, instance and disk kept). */
export function handOver(current: DiskOwner, stamp: OwnerStamp): DiskOwner {
  return { ...current, hostId: stamp.hostId, version: stamp.version };
}

/** The record's one text form (RBD metadata value, sidecar file content): compact JSON. */
export function formatOwner(owner: DiskOwner): string {
  const { hostId, instance, disk, createdAt, version } = owner;
  return JSON.stringify({ hostId, instance, disk, createdAt, version });
}

/**
 * Parses a record written by {@link formatOwner}; `null` for text that is not one (a damaged or
 * foreign record counts as no owner: such a disk is reported `unowned`, never someone else's).
 */
export function parseOwner(text: string | undefined | null): DiskOwner | null {
  if (!text) return null;
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return null;
  }
  return isDiskOwner(v) ? { ...v } : null;
}

/** Whether `v` is a well-formed {@link DiskOwner}. */
export function isDiskOwner(v: unknown): v is DiskOwner {
  if (typeof v !== 'object' || v === null) return false;
  const o = v as Record<string, unknown>;
  return (
    isHostId(o.hostId) &&
    isUuid(o.instance) &&
    typeof o.disk === 'string' &&
    o.disk.length > 0 &&
    typeof o.createdAt === 'string' &&
    ISO_RE.test(o.createdAt) &&
    typeof o.version === 'string' &&
    VERSION_RE.test(o.version)
  );
}
