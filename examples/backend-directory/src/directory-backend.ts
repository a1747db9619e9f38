// #region imports
import { randomUUID } from 'node:crypto';
import { constants } from 'node:fs';
import {
  copyFile,
  link,
  mkdir,
  open,
  readdir,
  readFile,
  rename,
  stat,
  statfs,
  truncate,
  unlink,
  writeFile,
} from 'node:fs/promises';
import { join } from 'node:path';
import {
  AlreadyExistsError,
  IMAGE_BACKEND_API_VERSION,
  InvalidArgumentError,
  NotFoundError,
  ProgressReporter,
  UnsupportedOperationError,
  assertValidDiskRef,
  assertValidOwnerStamp,
  assertValidSize,
  assertValidSnapshotName,
  diskId,
  formatOwner,
  handOver,
  isUuid,
  ownerRecord,
  parseOwner,
  parseDiskId,
  readImage,
  requireCapability,
  throwIfAborted,
  type BackendCapabilities,
  type Capacity,
  type CreateBlankOptions,
  type CreateFromImageOptions,
  type CreateResult,
  type DirectSnapshotOptions,
  type DirectSnapshotResult,
  type DiskFormat,
  type DiskInfo,
  type DiskOwner,
  type DiskRef,
  type DiskSource,
  type ImageBackend,
  type ListFilter,
  type OperationOptions,
  type OwnerStamp,
  type RemoveOptions,
  type SnapshotInfo,
  type SourceImage,
} from '@ephemera/image-backend';
// #endregion imports

/** Options of {@link DirectoryBackend}. */
export interface DirectoryBackendOptions {
  /** Absolute directory holding the disk files (created when missing). */
  directory: string;
  /** Registry name (default `directory`). */
  name?: string;
}

const SUFFIX = '.raw';

/**
 * An image backend that keeps every instance disk as a sparse raw file `<instance>_<name>.raw`
 * in one directory, and snapshots as copies `<instance>_<name>@<snapshot>.raw` beside it.
 *
 * It is an example of a third-party backend written only against the public API of
 * `@ephemera/image-backend`: it claims the capabilities it really has (`snapshot`, `rollback`,
 * `resize`, `discard`, `thin`), gates the others with `requireCapability`, imports images with
 * the verified stream of `readImage`, and makes a new disk appear atomically (written to a
 * temporary file, then hard-linked into place), so a failed, aborted or concurrent create
 * leaves nothing behind.
 */
// #region class
export class DirectoryBackend implements ImageBackend {
  readonly name: string;
  readonly apiVersion = IMAGE_BACKEND_API_VERSION; // the contract version this plugin is built against
  readonly capabilities: Readonly<BackendCapabilities> = Object.freeze({
    clone: false, // no copy-on-write: every image is copied
    snapshot: true, // full copies (reflinks where the file system has them)
    rollback: true,
    flatten: false,
    resize: true, // grow the file
    sharedStorage: false,
    directSnapshot: false,
    encryption: false,
    discard: true, // QEMU punches holes in the file
    thin: true, // sparse files
  });
  readonly diskFormats: readonly DiskFormat[] = Object.freeze(['raw'] as const);
  readonly directory: string;

  constructor(options: DirectoryBackendOptions) {
    if (typeof options?.directory !== 'string' || !options.directory.startsWith('/')) {
      throw new InvalidArgumentError('options.directory', 'an absolute path is required');
    }
    this.directory = options.directory;
    this.name = options.name ?? 'directory';
  }

  /** Creates the directory if needed and returns a ready backend. */
  static async create(options: DirectoryBackendOptions): Promise<DirectoryBackend> {
    const backend = new DirectoryBackend(options);
    await mkdir(backend.directory, { recursive: true, mode: 0o700 });
    return backend;
  }
  // #endregion class

  /** Path of a disk's file (validates the ref). */
  pathOf(disk: DiskRef): string {
    return join(this.directory, diskId(disk) + SUFFIX);
  }

  private snapshotPath(disk: DiskRef, snapshot: string): string {
    assertValidSnapshotName(snapshot);
    return join(this.directory, `${diskId(disk)}@${snapshot}${SUFFIX}`);
  }

  async exists(disk: DiskRef): Promise<boolean> {
    return (await statOrUndefined(this.pathOf(disk))) !== undefined;
  }

  async info(disk: DiskRef): Promise<DiskInfo> {
    const id = diskId(disk);
    const st = await statOrUndefined(this.pathOf(disk));
    if (!st) throw new NotFoundError(`disk ${id} not found`, { backend: this.name, diskId: id });
    const owner = await this.readOwner(disk);
    return { disk: parseDiskId(id)!, id, sizeBytes: st.size, format: 'raw', encrypted: false, owner };
  }

  // #region createFromImage
  async createFromImage(
    disk: DiskRef,
    image: SourceImage,
    options: CreateFromImageOptions = {},
  ): Promise<CreateResult> {
    const started = Date.now();
    const id = diskId(disk); // validates the ref first
    if (options.encryption) requireCapability(this, 'encryption', 'createFromImage');
    if (options.sizeBytes !== undefined) assertValidSize(options.sizeBytes, 'options.sizeBytes');
    if (options.owner !== undefined) assertValidOwnerStamp(options.owner, 'options.owner');
    if (image.diskFormat !== 'raw') {
      throw new InvalidArgumentError(
        'image.diskFormat',
        `the ${this.name} backend stores raw images only, not '${image.diskFormat}'`,
        { backend: this.name },
      );
    }
    const virtualSize = image.virtualSize ?? image.size;
    if (options.sizeBytes !== undefined && options.sizeBytes < virtualSize) {
      throw new InvalidArgumentError('options.sizeBytes', `smaller than the image's virtual size ${virtualSize}`, {
        backend: this.name,
      });
    }
    throwIfAborted(options.signal, 'createFromImage');
    await this.refuseExisting(disk);

    const sizeBytes = Math.max(options.sizeBytes ?? 0, virtualSize, image.size);
    const progress = new ProgressReporter(options.onProgress);
    let written = 0;
    await this.publish(disk, options.owner, async (file) => {
      // readImage: abortable, size-checked, and verified against os_hash_value/checksum at the end.
      for await (const chunk of readImage(image, { signal: options.signal, progress, backend: this.name })) {
        await writeAll(file, chunk, written);
        written += chunk.byteLength;
      }
      await file.truncate(sizeBytes); // the guest-visible size; the tail stays sparse
    });
    progress.finish(written, image.size);
    return {
      method: 'imported',
      reason: `the ${this.name} backend cannot clone: it copies every image into ${id}${SUFFIX}`,
      bytesWritten: written,
      sizeBytes,
      durationMs: Date.now() - started,
    };
  }
  // #endregion createFromImage

  async createBlank(disk: DiskRef, sizeBytes: number, options: CreateBlankOptions = {}): Promise<CreateResult> {
    const started = Date.now();
    diskId(disk);
    assertValidSize(sizeBytes);
    const format = options.format ?? this.diskFormats[0]!;
    if (!this.diskFormats.includes(format)) {
      throw new InvalidArgumentError(
        'options.format',
        `'${String(format)}' is not one of ${this.diskFormats.join(', ')}`,
        { backend: this.name },
      );
    }
    if (options.encryption) requireCapability(this, 'encryption', 'createBlank');
    if (options.owner !== undefined) assertValidOwnerStamp(options.owner, 'options.owner');
    throwIfAborted(options.signal, 'createBlank');
    await this.refuseExisting(disk);
    await this.publish(disk, options.owner, (file) => file.truncate(sizeBytes)); // sparse: thin
    return { method: 'blank', sizeBytes, durationMs: Date.now() - started };
  }

  async resize(disk: DiskRef, sizeBytes: number, options: OperationOptions = {}): Promise<void> {
    assertValidDiskRef(disk);
    requireCapability(this, 'resize', 'resize');
    assertValidSize(sizeBytes);
    throwIfAborted(options.signal, 'resize');
    const { sizeBytes: current } = await this.info(disk);
    if (sizeBytes < current) {
      throw new InvalidArgumentError('sizeBytes', `cannot shrink ${diskId(disk)} from ${current} to ${sizeBytes}`, {
        backend: this.name,
      });
    }
    await truncate(this.pathOf(disk), sizeBytes);
  }

  // #region snapshots
  async createSnapshot(disk: DiskRef, snapshot: string): Promise<SnapshotInfo> {
    assertValidDiskRef(disk);
    requireCapability(this, 'snapshot', 'createSnapshot');
    const target = this.snapshotPath(disk, snapshot);
    const { sizeBytes } = await this.info(disk); // NotFound first
    const temp = this.tempPath(disk);
    try {
      // A reflink where the file system supports it, else a full (sparse-unaware) copy.
      await copyFile(this.pathOf(disk), temp, constants.COPYFILE_FICLONE);
      await linkExclusive(
        temp,
        target,
        () =>
          new AlreadyExistsError(`snapshot ${diskId(disk)}@${snapshot} exists`, {
            backend: this.name,
            diskId: diskId(disk),
          }),
      );
    } finally {
      await unlinkQuietly(temp);
    }
    return { name: snapshot, sizeBytes };
  }

  async listSnapshots(disk: DiskRef): Promise<SnapshotInfo[]> {
    assertValidDiskRef(disk);
    requireCapability(this, 'snapshot', 'listSnapshots');
    await this.info(disk);
    const prefix = `${diskId(disk)}@`;
    const out: SnapshotInfo[] = [];
    for (const entry of await readdir(this.directory)) {
      if (!entry.startsWith(prefix) || !entry.endsWith(SUFFIX)) continue;
      const st = await statOrUndefined(join(this.directory, entry));
      if (st) out.push({ name: entry.slice(prefix.length, -SUFFIX.length), sizeBytes: st.size });
    }
    return out.sort((a, b) => (a.name < b.name ? -1 : 1));
  }

  async removeSnapshot(disk: DiskRef, snapshot: string): Promise<boolean> {
    assertValidDiskRef(disk);
    requireCapability(this, 'snapshot', 'removeSnapshot');
    return unlinkIfExists(this.snapshotPath(disk, snapshot));
  }

  async rollbackToSnapshot(disk: DiskRef, snapshot: string): Promise<void> {
    assertValidDiskRef(disk);
    requireCapability(this, 'rollback', 'rollbackToSnapshot');
    const source = this.snapshotPath(disk, snapshot);
    await this.info(disk);
    if (!(await statOrUndefined(source))) {
      throw new NotFoundError(`snapshot ${diskId(disk)}@${snapshot} not found`, {
        backend: this.name,
        diskId: diskId(disk),
      });
    }
    const temp = this.tempPath(disk);
    try {
      await copyFile(source, temp, constants.COPYFILE_FICLONE);
      await rename(temp, this.pathOf(disk)); // atomic: the disk is either old or restored
    } finally {
      await unlinkQuietly(temp);
    }
  }
  // #endregion snapshots

  // #region unsupported
  // Every method exists; the ones needing a capability this backend lacks say so with a typed
  // error naming the capability, so the driver can check `capabilities` up front next time.
  async flatten(disk: DiskRef, _options?: OperationOptions): Promise<void> {
    assertValidDiskRef(disk);
    throw new UnsupportedOperationError('flatten', 'flatten', { backend: this.name });
  }

  async directSnapshot(disk: DiskRef, _options: DirectSnapshotOptions): Promise<DirectSnapshotResult> {
    assertValidDiskRef(disk);
    throw new UnsupportedOperationError('directSnapshot', 'directSnapshot', { backend: this.name });
  }
  // #endregion unsupported

  // #region remove
  async remove(disk: DiskRef, _options: RemoveOptions = {}): Promise<boolean> {
    const id = diskId(disk);
    // Snapshots first, so a crash in between never leaves snapshots of a disk that is gone.
    for (const entry of await readdir(this.directory)) {
      if (entry.startsWith(`${id}@`) && entry.endsWith(SUFFIX)) await unlinkIfExists(join(this.directory, entry));
    }
    // A file can always be unlinked: a QEMU that still has it open keeps its data until it
    // closes it, so this backend never reports BusyError.
    const removed = await unlinkIfExists(this.pathOf(disk));
    await unlinkIfExists(this.ownerPath(disk));
    return removed;
  }
  // #endregion remove

  async list(filter: ListFilter = {}): Promise<DiskInfo[]> {
    if (filter.instance !== undefined && !isUuid(filter.instance)) {
      throw new InvalidArgumentError('filter.instance', 'not a UUID', { backend: this.name });
    }
    const want = filter.instance?.toLowerCase();
    const out: DiskInfo[] = [];
    for (const entry of (await readdir(this.directory)).sort()) {
      if (!entry.endsWith(SUFFIX)) continue;
      const ref = parseDiskId(entry.slice(0, -SUFFIX.length)); // ignores snapshots, temp and foreign files
      if (!ref || (want !== undefined && ref.instance !== want)) continue;
      const st = await statOrUndefined(join(this.directory, entry));
      if (!st) continue;
      const owner = await this.readOwner(ref);
      out.push({ disk: ref, id: diskId(ref), sizeBytes: st.size, format: 'raw', encrypted: false, owner });
    }
    return out;
  }

  /** Who owns the disk (`<id>.owner.json` beside it), or `null` when it has no record. */
  async getOwner(disk: DiskRef): Promise<DiskOwner | null> {
    await this.info(disk); // NotFound when missing
    return this.readOwner(disk);
  }

  /** Hands the disk to `owner` (its creation time kept), or records one for a disk without. */
  async setOwner(disk: DiskRef, owner: OwnerStamp): Promise<DiskOwner> {
    assertValidOwnerStamp(owner);
    await this.info(disk);
    const current = await this.readOwner(disk);
    const next = current ? handOver(current, owner) : ownerRecord(disk, owner);
    await this.writeOwner(disk, next);
    return next;
  }

  private ownerPath(disk: DiskRef): string {
    return join(this.directory, `${diskId(disk)}.owner.json`);
  }

  private async readOwner(disk: DiskRef): Promise<DiskOwner | null> {
    try {
      return parseOwner(await readFile(this.ownerPath(disk), 'utf8'));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
  }

  /** Written to a temporary file and renamed into place: a reader sees the old record or the new one. */
  private async writeOwner(disk: DiskRef, owner: DiskOwner): Promise<void> {
    const temp = `${this.tempPath(disk)}.owner`;
    try {
      await writeFile(temp, formatOwner(owner), { mode: 0o600, flag: 'wx' });
      await rename(temp, this.ownerPath(disk));
    } finally {
      await unlinkQuietly(temp);
    }
  }

  async capacity(): Promise<Capacity> {
    const fs = await statfs(this.directory);
    return { totalBytes: fs.blocks * fs.bsize, freeBytes: fs.bavail * fs.bsize };
  }

  // #region diskSource
  async diskSource(disk: DiskRef): Promise<DiskSource> {
    await this.info(disk); // NotFound when missing
    return { type: 'file', path: this.pathOf(disk), format: 'raw' };
  }
  // #endregion diskSource

  /** Removes temporary files a crashed create left behind; returns how many. */
  async cleanupTemporaryFiles(): Promise<number> {
    let removed = 0;
    for (const entry of await readdir(this.directory)) {
      if (entry.startsWith('.') && entry.endsWith('.part') && (await unlinkIfExists(join(this.directory, entry))))
        removed++;
    }
    return removed;
  }

  private tempPath(disk: DiskRef): string {
    return join(this.directory, `.${diskId(disk)}.${randomUUID()}.part`);
  }

  private async refuseExisting(disk: DiskRef): Promise<void> {
    if (await this.exists(disk)) {
      throw new AlreadyExistsError(`disk ${diskId(disk)} exists`, { backend: this.name, diskId: diskId(disk) });
    }
  }

  // #region publish
  /**
   * Writes a new disk into a temporary file with `fill`, then links it into place: the disk
   * appears complete or not at all. `link` fails with EEXIST when another create won the race.
   * On any failure (including an abort inside `fill`) the temporary file is removed.
   */
  private async publish(
    disk: DiskRef,
    owner: OwnerStamp | undefined,
    fill: (file: import('node:fs/promises').FileHandle) => Promise<void>,
  ): Promise<void> {
    const temp = this.tempPath(disk);
    const file = await open(temp, 'wx', 0o600);
    try {
      try {
        await fill(file);
        await file.sync();
      } finally {
        await file.close();
      }
      await linkExclusive(
        temp,
        this.pathOf(disk),
        () => new AlreadyExistsError(`disk ${diskId(disk)} exists`, { backend: this.name, diskId: diskId(disk) }),
      );
      // Right after the disk appears (as RBD sets its metadata after the clone): a disk whose owner
      // cannot be written goes again; one a crash left without owner is an unfinished spawn's.
      if (owner) {
        try {
          await this.writeOwner(disk, ownerRecord(disk, owner));
        } catch (err) {
          await unlinkQuietly(this.pathOf(disk));
          throw err;
        }
      }
    } finally {
      await unlinkQuietly(temp);
    }
  }
  // #endregion publish
}

async function writeAll(
  file: import('node:fs/promises').FileHandle,
  chunk: Uint8Array,
  position: number,
): Promise<void> {
  let done = 0;
  while (done < chunk.byteLength) {
    const { bytesWritten } = await file.write(chunk, done, chunk.byteLength - done, position + done);
    done += bytesWritten;
  }
}

async function linkExclusive(from: string, to: string, exists: () => Error): Promise<void> {
  try {
    await link(from, to);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw exists();
    throw err;
  }
}

async function statOrUndefined(path: string): Promise<import('node:fs').Stats | undefined> {
  try {
    return await stat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

async function unlinkIfExists(path: string): Promise<boolean> {
  try {
    await unlink(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

async function unlinkQuietly(path: string): Promise<void> {
  await unlink(path).catch(() => undefined);
}
