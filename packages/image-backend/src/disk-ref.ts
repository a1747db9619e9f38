import { InvalidArgumentError } from './errors.js';
import type { DiskRef, ListFilter } from './types.js';

const UUID_RE = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;
/** Letters, digits, `.`, `_`, `-`; starts with a letter or digit; at most 64 characters. */
const DISK_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
/** Same alphabet for snapshot names, at most 128 characters. */
const SNAPSHOT_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

function describe(value: unknown): string {
  return JSON.stringify(typeof value === 'string' ? value.slice(0, 80) : value) ?? String(value);
}

/** True when `value` is a UUID in 8-4-4-4-12 hex form. */
export function isUuid(value: unknown): value is string {
  return typeof value === 'string' && UUID_RE.test(value);
}

/**
 * Throws `InvalidArgumentError` unless `disk` is a valid `DiskRef`: `instance` a UUID, `name`
 * made of letters, digits, `.`, `_`, `-` (no `/`, `@`, `..`, spaces or control characters).
 */
export function assertValidDiskRef(disk: unknown): asserts disk is DiskRef {
  if (typeof disk !== 'object' || disk === null) {
    throw new InvalidArgumentError('disk', 'expected { instance, name }');
  }
  const { instance, name } = disk as { instance?: unknown; name?: unknown };
  if (!isUuid(instance)) {
    throw new InvalidArgumentError('disk.instance', `not a UUID: ${describe(instance)}`);
  }
  if (typeof name !== 'string' || !DISK_NAME_RE.test(name) || name.includes('..')) {
    throw new InvalidArgumentError(
      'disk.name',
      `invalid disk name ${describe(name)} (letters, digits, '.', '_', '-'; no '..'; 1-64 chars)`,
    );
  }
}

/** Throws `InvalidArgumentError` unless `snapshot` is a valid snapshot name. */
export function assertValidSnapshotName(snapshot: unknown): asserts snapshot is string {
  if (typeof snapshot !== 'string' || !SNAPSHOT_NAME_RE.test(snapshot) || snapshot.includes('..')) {
    throw new InvalidArgumentError(
      'snapshot',
      `invalid snapshot name ${describe(snapshot)} (letters, digits, '.', '_', '-'; 1-128 chars)`,
    );
  }
}

/** Throws `InvalidArgumentError` unless `bytes` is a positive safe integer. */
export function assertValidSize(bytes: unknown, argument = 'sizeBytes'): asserts bytes is number {
  if (typeof bytes !== 'number' || !Number.isSafeInteger(bytes) || bytes <= 0) {
    throw new InvalidArgumentError(argument, `expected a positive integer number of bytes, got ${describe(bytes)}`);
  }
}

/**
 * The canonical backend id of a disk: `<instance-uuid>_<name>`, instance lower-cased (what Nova
 * names RBD images and LVs). Validates the ref first.
 */
export function diskId(disk: DiskRef): string {
  assertValidDiskRef(disk);
  return `${disk.instance.toLowerCase()}_${disk.name}`;
}

/** Parses a canonical id back into a `DiskRef`; `undefined` when `id` is not one (foreign objects). */
export function parseDiskId(id: string): DiskRef | undefined {
  if (typeof id !== 'string' || id.length < 38 || id[36] !== '_') return undefined;
  const ref = { instance: id.slice(0, 36), name: id.slice(37) };
  try {
    assertValidDiskRef(ref);
  } catch {
    return undefined;
  }
  if (ref.instance !== ref.instance.toLowerCase()) return undefined;
  return ref;
}

/**
 * The id prefix (`<instance>_`, lower-cased) of the disks `list(filter)` returns, or `undefined`
 * for every disk. Throws `InvalidArgumentError` (with `backend` in its details) when
 * `filter.instance` is given and is not a UUID. For backends whose `list` filters by id.
 */
export function listFilterPrefix(filter: ListFilter, backend?: string): string | undefined {
  if (filter.instance === undefined) return undefined;
  if (!isUuid(filter.instance))
    throw new InvalidArgumentError(
      'filter.instance',
      `not a UUID: ${describe(filter.instance)}`,
      backend ? { backend } : undefined,
    );
  return `${filter.instance.toLowerCase()}_`;
}
