/**
 * Live block migration of instances on local disks (qcow2, issue 19.3): the steps the migration
 * workflow adds when the disks are not shared. The source describes its disks (size, format,
 * overlay on the image's cached base or not); the destination fetches the base into its own
 * image cache (once per image) and pre-creates empty copies (libvirt does not create files
 * outside storage pools), journaled as disks so a rollback or reconcile removes them; libvirt
 * then copies only the overlays (`NON_SHARED_INC`, `migrate_disks`). The file mechanics stay in
 * the backend: this file only talks to it through the two methods below.
 */
import type { GlanceClient } from '@ephemera/glance';
import type { JobStats } from '@ephemera/libvirt-napi';
import type {
  BackendRegistry,
  DiskFormat,
  DiskRef,
  ImageBackend,
  OperationOptions,
  ProgressEvent,
  SourceImage,
} from '@ephemera/image-backend';
import { DriverError } from './errors.js';
import type { JournalOp } from './journal.js';
import { xmlAttr } from './migration-xml.js';
import { sourceImageFromGlance } from './source-image.js';
import type { InstanceRecord } from './types.js';
import { errMessage, imageError, requireBackend } from './util.js';

/** One disk of a block migration, as the source describes it to the destination. */
export interface BlockMigrationDisk {
  /** The disk's name (`disk`, `disk.local`, `disk.swap`). */
  name: string;
  /** Guest-visible size in bytes (the destination's copy has the same). */
  sizeBytes: number;
  /** The disk file's format on the source (the copy has the same). */
  format: DiskFormat;
  /** An overlay on the cached base of the instance's image: only the overlay is copied. */
  backed: boolean;
}

/** Where the destination put its copy of a disk. */
export interface IncomingDiskPath {
  /** The disk's name (as in the record). */
  name: string;
  /** Absolute path of the destination's copy (the domain XML's new `<source file>`). */
  path: string;
}

/** What a backend offers for block migration (the qcow2 backend has both). */
interface BlockMigratable {
  migrationDiskSpec(disk: DiskRef, imageId: string): Promise<Omit<BlockMigrationDisk, 'name'>>;
  prepareIncomingDisk(
    disk: DiskRef,
    spec: Omit<BlockMigrationDisk, 'name'>,
    image?: SourceImage,
    options?: OperationOptions & { onProgress?: (event: ProgressEvent) => void },
  ): Promise<{ path: string; fetched: boolean }>;
}

/** The backend when its disks must be copied and it can prepare the copies, else undefined. */
export function blockMigratable(b: ImageBackend): (ImageBackend & BlockMigratable) | undefined {
  const c = b as ImageBackend & Partial<BlockMigratable>;
  return typeof c.migrationDiskSpec === 'function' && typeof c.prepareIncomingDisk === 'function'
    ? (c as ImageBackend & BlockMigratable)
    : undefined;
}

/** Source: the disks of `rec` to copy, and their paths here (for the destination XML). */
export async function describeDisks(
  backend: ImageBackend & BlockMigratable,
  rec: InstanceRecord,
): Promise<{ disks: BlockMigrationDisk[]; paths: Map<string, string> }> {
  const disks: BlockMigrationDisk[] = [];
  const paths = new Map<string, string>();
  for (const d of rec.disks) {
    const ref = { instance: rec.uuid, name: d.name };
    let spec: Omit<BlockMigrationDisk, 'name'>;
    try {
      spec = await backend.migrationDiskSpec(ref, rec.imageId);
    } catch (err) {
      throw new DriverError(
        'UNSUPPORTED',
        `instance ${rec.uuid}: disk ${d.name} cannot be block-migrated: ${errMessage(err)}${(err as { cause?: unknown }).cause ? ` (${errMessage((err as { cause?: unknown }).cause)})` : ''}`,
        { instance: rec.uuid, cause: err },
      );
    }
    const src = await backend.diskSource(ref);
    if (src.type !== 'file')
      throw new DriverError('UNSUPPORTED', `instance ${rec.uuid}: disk ${d.name} is not a file`, {
        instance: rec.uuid,
      });
    disks.push({ name: d.name, sizeBytes: spec.sizeBytes, format: spec.format, backed: spec.backed });
    paths.set(d.name, src.path);
  }
  return { disks, paths };
}

/** Checks the destination's `disks` argument against the record (it comes from another driver). */
function checkDisks(rec: InstanceRecord, disks: unknown): BlockMigrationDisk[] {
  const bad = (why: string): DriverError =>
    new DriverError('INVALID_ARGUMENT', `preLiveMigration of ${rec.uuid}: ${why}`, { instance: rec.uuid });
  if (!Array.isArray(disks)) throw bad(`backend ${rec.backend} needs the disks to copy (block migration)`);
  const names = new Set(rec.disks.map((d) => d.name));
  if (disks.length !== names.size) throw bad('the disks do not match the record');
  for (const d of disks as BlockMigrationDisk[]) {
    if (!d || typeof d !== 'object' || !names.has(d.name)) throw bad(`unknown disk ${JSON.stringify(d?.name)}`);
    if (!Number.isSafeInteger(d.sizeBytes) || d.sizeBytes <= 0) throw bad(`disk ${d.name}: bad size`);
    if (typeof d.backed !== 'boolean') throw bad(`disk ${d.name}: backed must be a boolean`);
    names.delete(d.name);
  }
  return disks as BlockMigrationDisk[];
}

/** What {@link prepareIncomingDisks} needs of the destination driver. */
export interface IncomingDeps {
  backends: BackendRegistry;
  glance: GlanceClient;
  /** Progress of a base fetch (`progress` events of the destination's bus). */
  onProgress: (e: ProgressEvent) => void;
}

/**
 * Destination: refuses disks of the instance that exist here already (they are not ours to
 * remove on rollback), then per disk journals its intent and pre-creates the copy; a backed disk
 * first brings the image's base into this host's cache (fetched from Glance once: later
 * migrations of instances of that image reuse it). Returns where each copy is, and whether a
 * base was fetched.
 */
export async function prepareIncomingDisks(
  deps: IncomingDeps,
  op: JournalOp,
  rec: InstanceRecord,
  disks: unknown,
): Promise<{ disks: IncomingDiskPath[]; fetched: boolean }> {
  const backend = requireBackend(deps.backends, rec.backend);
  const b = blockMigratable(backend);
  if (!b)
    throw new DriverError(
      'UNSUPPORTED',
      `backend ${rec.backend} cannot prepare the disks of a block migration on this host`,
      { instance: rec.uuid },
    );
  const wanted = checkDisks(rec, disks);
  if ((await backend.list({ instance: rec.uuid })).length > 0)
    throw new DriverError('INSTANCE_EXISTS', `backend ${rec.backend} already holds disks of ${rec.uuid} here`, {
      instance: rec.uuid,
    });
  let image: SourceImage | undefined;
  if (wanted.some((d) => d.backed)) {
    try {
      image = sourceImageFromGlance(deps.glance, await deps.glance.getImage(rec.imageId));
    } catch (err) {
      throw imageError(rec.imageId, err);
    }
  }
  const out: IncomingDiskPath[] = [];
  let fetched = false;
  for (const d of wanted) {
    await op.intent(`incoming-disk:${d.name}`, { kind: 'disk', backend: backend.name, name: d.name });
    const r = await b.prepareIncomingDisk(
      { instance: rec.uuid, name: d.name },
      { sizeBytes: d.sizeBytes, format: d.format, backed: d.backed },
      d.backed ? image : undefined,
      { onProgress: deps.onProgress },
    );
    fetched ||= r.fetched;
    await op.done(`incoming-disk:${d.name}`, { path: r.path, fetched: r.fetched });
    out.push({ name: d.name, path: r.path });
  }
  return { disks: out, fetched };
}

/**
 * The domain XML with each disk's `<source file=...>` at the destination's path. Only `file`
 * attributes of `<source>` elements are rewritten (the serial log is another element's `path`).
 */
export function withDiskPaths(xml: string, sourcePaths: Map<string, string>, dest: IncomingDiskPath[]): string {
  let out = xml;
  for (const d of dest) {
    const from = sourcePaths.get(d.name);
    if (from === undefined)
      throw new DriverError('MIGRATION_FAILED', `the destination named an unknown disk ${d.name}`);
    let hit = false;
    for (const q of [`'`, `"`]) {
      const old = `<source file=${q}${xmlAttr(from)}${q}`;
      if (out.includes(old)) hit = true;
      out = out.split(old).join(`<source file=${q}${xmlAttr(d.path)}${q}`);
    }
    if (!hit) throw new DriverError('MIGRATION_FAILED', `disk ${d.name} (${from}) is not in the domain XML`);
  }
  return out;
}

/**
 * Source, after the guest left: removes this host's copies of the instance's disks (its own, or
 * unowned ones; never the shared image cache, which other instances use). Returns what went.
 */
export async function removeSourceDisks(
  backends: BackendRegistry,
  instance: string,
  backendName: string,
  hostId: string,
  busyTimeoutMs: number,
): Promise<string[]> {
  const backend = requireBackend(backends, backendName);
  const removed: string[] = [];
  for (const d of await backend.list({ instance })) {
    if (d.owner && d.owner.hostId !== hostId) continue;
    if (await backend.remove(d.disk, { busyTimeoutMs })) removed.push(`disk ${backend.name}:${d.disk.name}`);
  }
  return removed;
}

/**
 * A migration's progress (0..99) from the source's job statistics: memory and, in a block
 * migration, disk bytes together. While libvirt copies disks it reports no memory yet, so the
 * guest's memory size (`memFallback`) stands for it: the percentage never jumps back.
 */
export function migrationPercent(
  s: Pick<JobStats, 'memTotal' | 'memRemaining' | 'diskTotal' | 'diskRemaining'>,
  memFallback: number,
): number | undefined {
  const disk = s.diskTotal ?? 0;
  if (disk === 0) {
    const total = s.memTotal ?? 0;
    if (total <= 0 || s.memRemaining === undefined) return undefined;
    return Math.min(99, Math.floor((100 * (total - s.memRemaining)) / total));
  }
  const mem = s.memTotal || memFallback;
  const left = (s.memTotal ? (s.memRemaining ?? mem) : mem) + (s.diskRemaining ?? disk);
  return Math.max(0, Math.min(99, Math.floor((100 * (mem + disk - left)) / (mem + disk))));
}
