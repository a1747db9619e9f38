import { createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import {
  AlreadyExistsError,
  BackendUnavailableError,
  BusyError,
  IMAGE_BACKEND_API_VERSION,
  InsufficientCapacityError,
  InvalidArgumentError,
  NotFoundError,
  ProgressReporter,
  UnsupportedOperationError,
  assertValidOwnerStamp,
  assertValidSize,
  diskId,
  listFilterPrefix,
  ownerRecord,
  readImage,
  retryWhileBusy,
  throwIfAborted,
  type BackendCapabilities,
  type BlockDiskSource,
  type Capacity,
  type CreateBlankOptions,
  type CreateFromImageOptions,
  type CreateResult,
  type DirectSnapshotResult,
  type DiskFormat,
  type DiskInfo,
  type DiskOwner,
  type DiskRef,
  type ImageBackend,
  type ListFilter,
  type OperationOptions,
  type OwnerStamp,
  type RemoveOptions,
  type SnapshotInfo,
  type SourceImage,
} from '@ephemera/image-backend';
import { syncDevice, writeStreamToDevice, zeroDevice, type WipeMethod } from './device.js';
import { detectDeviceMapper, Lvm, LvmError, type LvInfo } from './lvm.js';
import { processesHoldingOpen as openers } from '@ephemera/image-backend';
import { translateError } from './errors-map.js';
import { LvMapper } from './mapping.js';
import type { LvmBackendOptions } from './options.js';
import { capabilitiesFor, isOwnerTag, ownerFromTags, ownerTags, setLvOwner, toInfo } from './owner-tags.js';
import {
  checkEncryption,
  createEncryptedBlank,
  createEncryptedFromImage,
  secretOf,
  type EncryptedLvOps,
} from './encrypted.js';
import { RawStreamCheck, convertImageToDevice, inspectImageFile } from './qemu.js';

export type { LvmBackendOptions } from './options.js';

/** Name of the LV tag every disk made by this backend carries. */
export const LVM_DISK_TAG = 'ephemera';

/** Suffix of the temporary LV a relocating resize copies into (not a valid disk name). */
const RELOCATE_SUFFIX = '+resize';

const NAME = 'lvm';

/**
 * The LVM image backend: one linear LV per instance disk, named `<instance-uuid>_<disk>`, in a
 * configured volume group. Images are written with `qemu-img convert` (raw images are streamed)
 * onto the LV's block device. With device-mapper the LV is activated as usual; without it
 * (`--driverloaded n`, metadata only) LVs are allocated contiguously and exposed through a loop
 * device over the PV at the LV's extents, exactly the linear mapping dm would make.
 */
export class LvmBackend implements ImageBackend {
  readonly name = NAME;
  readonly apiVersion = IMAGE_BACKEND_API_VERSION;
  readonly diskFormats: readonly DiskFormat[] = Object.freeze(['raw'] as const);
  /** Filled by `open()`/`create()`; snapshot and thin stay false (not implemented here). */
  capabilities: Readonly<BackendCapabilities>;

  private readonly wipe: WipeMethod;
  private readonly zeroNewSpace: boolean;
  private readonly tempDir: string;
  private readonly busyTimeoutMs: number;
  private readonly pending = new Set<string>();
  private lvm!: Lvm;
  private mapper!: LvMapper;

  private constructor(options: LvmBackendOptions) {
    this.wipe = options.wipe ?? 'zero';
    if (this.wipe !== 'zero' && this.wipe !== 'none')
      throw new InvalidArgumentError('wipe', `expected 'zero' or 'none', got ${String(this.wipe)}`);
    this.zeroNewSpace = options.zeroNewSpace ?? true;
    this.tempDir = options.tempDir ?? tmpdir();
    this.busyTimeoutMs = options.busyTimeoutMs ?? 10_000;
    this.capabilities = capabilitiesFor(false);
  }

  /**
   * Detects device-mapper (unless forced), checks that the volume group exists, detaches loop
   * mappings a crash left over the VG's PVs, and returns a ready backend.
   */
  static async create(options: LvmBackendOptions): Promise<LvmBackend> {
    const b = new LvmBackend(options);
    const dm =
      options.deviceMapper === undefined || options.deviceMapper === 'auto'
        ? await detectDeviceMapper()
        : options.deviceMapper;
    try {
      b.lvm = new Lvm({
        volumeGroup: options.volumeGroup,
        deviceMapper: dm,
        ...(options.devices ? { devices: options.devices } : {}),
        ...(options.commandTimeoutMs ? { timeoutMs: options.commandTimeoutMs } : {}),
      });
    } catch (e) {
      throw new InvalidArgumentError('volumeGroup', (e as Error).message);
    }
    b.mapper = new LvMapper(b.lvm);
    b.capabilities = capabilitiesFor(dm);
    await b.call(() => b.lvm.vgInfo());
    await b.call(() => b.mapper.detachOrphans());
    return b;
  }

  /** Whether this instance runs with device-mapper (else: loop mappings, `--driverloaded n`). */
  get deviceMapper(): boolean {
    return this.lvm.deviceMapper;
  }

  /** The volume group in use. */
  get volumeGroup(): string {
    return this.lvm.vg;
  }

  async exists(disk: DiskRef): Promise<boolean> {
    const id = diskId(disk);
    return (await this.call(() => this.lvm.lv(id), id)) !== undefined;
  }

  async info(disk: DiskRef): Promise<DiskInfo> {
    return toInfo(await this.lvOf(diskId(disk)))!;
  }

  async createFromImage(
    disk: DiskRef,
    image: SourceImage,
    options: CreateFromImageOptions = {},
  ): Promise<CreateResult> {
    const started = Date.now();
    const id = diskId(disk);
    if (options.encryption) checkEncryption(options.encryption, { backend: NAME, diskId: id });
    if (options.sizeBytes !== undefined) assertValidSize(options.sizeBytes, 'options.sizeBytes');
    if (options.owner !== undefined) assertValidOwnerStamp(options.owner, 'options.owner');
    const format = String(image.diskFormat ?? '').toLowerCase();
    if (format !== 'raw' && format !== 'qcow2')
      throw new InvalidArgumentError(
        'image.diskFormat',
        `the lvm backend imports raw and qcow2 images, not '${image.diskFormat}'`,
        { backend: NAME, diskId: id },
      );
    await this.reserve(id, options.signal);
    const progress = new ProgressReporter(options.onProgress);
    let spoolDir: string | undefined;
    let created = false;
    try {
      if (options.encryption) {
        const enc = { ...options, encryption: options.encryption };
        const ops = this.encryptedOps(id, disk, options, () => (created = true));
        const r = await createEncryptedFromImage(ops, image, format, enc, { backend: NAME, diskId: id });
        return { ...r, durationMs: Date.now() - started };
      }
      let virtualSize: number;
      let spoolFile: string | undefined;
      if (format === 'raw') {
        virtualSize = image.size;
      } else {
        // qemu-img cannot read qcow2 from a pipe: spool (verified) to a file, inspect it, convert.
        spoolDir = await mkdtemp(join(this.tempDir, 'ephemera-lvm-'));
        spoolFile = join(spoolDir, 'image.qcow2');
        await this.checkCapacity(Math.max(options.sizeBytes ?? 0, image.virtualSize ?? 0, 1), id);
        await pipeline(
          readImage(image, { signal: options.signal, progress, backend: NAME }),
          createWriteStream(spoolFile),
        );
        const inspected = await inspectImageFile(spoolFile, 'qcow2', options.signal);
        virtualSize = inspected.virtualSize;
      }
      if (options.sizeBytes !== undefined && options.sizeBytes < virtualSize)
        throw new InvalidArgumentError('options.sizeBytes', `smaller than the image's virtual size ${virtualSize}`, {
          backend: NAME,
          diskId: id,
        });
      const wanted = Math.max(options.sizeBytes ?? 0, virtualSize, 1);
      const lv = await this.createLv(id, wanted, options.signal, options.owner && ownerRecord(disk, options.owner));
      created = true;
      const dev = await this.call(() => this.mapper.map(id, options.signal), id);
      let written: number;
      if (spoolFile) {
        throwIfAborted(options.signal, 'createFromImage');
        await convertImageToDevice(spoolFile, 'qcow2', dev, {
          signal: options.signal,
          onProgress: (pct) => progress.report('convert', Math.floor((pct / 100) * virtualSize), virtualSize),
        });
        written = virtualSize;
      } else {
        // Raw data is streamed straight onto the device, through the format inspector: data that
        // is really qcow2 (or anything qemu would not read as raw bytes) is refused at the end.
        const inspector = new RawStreamCheck();
        written = await writeStreamToDevice(
          dev,
          inspector.tap(readImage(image, { signal: options.signal, progress, backend: NAME })),
          lv.sizeBytes,
          {
            signal: options.signal,
          },
        );
        inspector.assertRaw();
      }
      if (this.zeroNewSpace && lv.sizeBytes > written)
        await zeroDevice(dev, lv.sizeBytes - written, { offset: written, signal: options.signal });
      await syncDevice(dev);
      throwIfAborted(options.signal, 'createFromImage');
      progress.finish(written, written);
      return {
        method: 'imported',
        reason: 'the lvm backend cannot clone',
        bytesWritten: written,
        sizeBytes: lv.sizeBytes,
        durationMs: Date.now() - started,
      };
    } catch (e) {
      if (created) await this.destroy(id, this.wipe).catch(() => undefined);
      throw this.translate(e, id, options.signal);
    } finally {
      this.pending.delete(id);
      if (spoolDir) await rm(spoolDir, { recursive: true, force: true }).catch(() => undefined);
    }
  }

  async createBlank(disk: DiskRef, sizeBytes: number, options: CreateBlankOptions = {}): Promise<CreateResult> {
    const started = Date.now();
    const id = diskId(disk);
    assertValidSize(sizeBytes);
    const format = options.format ?? 'raw';
    if (format !== 'raw')
      throw new InvalidArgumentError(
        'options.format',
        `the lvm backend stores raw disks only, not '${String(format)}'`,
        { backend: NAME, diskId: id },
      );
    if (options.encryption) checkEncryption(options.encryption, { backend: NAME, diskId: id });
    if (options.owner !== undefined) assertValidOwnerStamp(options.owner, 'options.owner');
    await this.reserve(id, options.signal);
    let created = false;
    try {
      if (options.encryption) {
        const ops = this.encryptedOps(id, disk, options, () => (created = true));
        const size = await createEncryptedBlank(ops, options.encryption, sizeBytes, options.signal);
        return { method: 'blank', sizeBytes: size, durationMs: Date.now() - started };
      }
      const lv = await this.createLv(id, sizeBytes, options.signal, options.owner && ownerRecord(disk, options.owner));
      created = true;
      if (this.zeroNewSpace) {
        const dev = await this.call(() => this.mapper.map(id, options.signal), id);
        await zeroDevice(dev, lv.sizeBytes, { signal: options.signal });
      }
      throwIfAborted(options.signal, 'createBlank');
      return { method: 'blank', sizeBytes: lv.sizeBytes, durationMs: Date.now() - started };
    } catch (e) {
      if (created) await this.destroy(id, 'none').catch(() => undefined);
      throw this.translate(e, id, options.signal);
    } finally {
      this.pending.delete(id);
    }
  }

  async resize(disk: DiskRef, sizeBytes: number, options: OperationOptions = {}): Promise<void> {
    const id = diskId(disk);
    assertValidSize(sizeBytes);
    throwIfAborted(options.signal, 'resize');
    await this.mapper.withLock(`resize:${id}`, async () => {
      const lv = await this.call(() => this.lvm.lv(id), id);
      if (!lv) throw this.notFound(id);
      if (secretOf(lv.tags)) throw new UnsupportedOperationError('encryption', 'resize', { backend: NAME, diskId: id });
      if (sizeBytes < lv.sizeBytes)
        throw new InvalidArgumentError('sizeBytes', `cannot shrink ${id} from ${lv.sizeBytes} to ${sizeBytes}`, {
          backend: NAME,
          diskId: id,
        });
      const vg = await this.call(() => this.lvm.vgInfo(), id);
      const extents = Math.ceil(sizeBytes / vg.extentSize);
      const current = lv.sizeBytes / vg.extentSize;
      if (extents <= current) return;
      const more = (extents - current) * vg.extentSize;
      if (extents - current > vg.freeExtents)
        throw new InsufficientCapacityError(
          `resize ${id}: need ${more} more bytes, ${vg.freeBytes} free in ${vg.name}`,
          {
            backend: NAME,
            diskId: id,
            requestedBytes: more,
            availableBytes: vg.freeBytes,
          },
        );
      if (this.lvm.deviceMapper) {
        await this.call(() => this.lvm.extend(id, extents, options.signal), id);
        if (this.zeroNewSpace) await zeroDevice(lv.path, more, { offset: lv.sizeBytes, signal: options.signal });
        return;
      }
      // Without dm a loop device has a fixed range: the disk must not be in use while it moves.
      const mapped = await this.mapper.devicePath(id);
      if (mapped) await this.assertNotOpen(id, mapped);
      await this.call(() => this.mapper.unmap(id), id);
      try {
        await this.lvm.extend(id, extents, options.signal);
      } catch (e) {
        if (!(e instanceof LvmError && e.kind === 'insufficient-contiguous-space'))
          throw this.translate(e, id, options.signal);
        await this.relocate(id, lv.sizeBytes, extents, options.signal);
      }
      if (this.zeroNewSpace) {
        const dev = await this.call(() => this.mapper.map(id, options.signal), id);
        await zeroDevice(dev, more, { offset: lv.sizeBytes, signal: options.signal });
      }
      if (mapped) await this.call(() => this.mapper.map(id, options.signal), id);
      else await this.call(() => this.mapper.unmap(id), id);
    });
  }

  async createSnapshot(disk: DiskRef, _snapshot: string): Promise<SnapshotInfo> {
    throw new UnsupportedOperationError('snapshot', 'createSnapshot', { backend: NAME, diskId: diskId(disk) });
  }

  async listSnapshots(disk: DiskRef): Promise<SnapshotInfo[]> {
    throw new UnsupportedOperationError('snapshot', 'listSnapshots', { backend: NAME, diskId: diskId(disk) });
  }

  async removeSnapshot(disk: DiskRef, _snapshot: string): Promise<boolean> {
    throw new UnsupportedOperationError('snapshot', 'removeSnapshot', { backend: NAME, diskId: diskId(disk) });
  }

  async rollbackToSnapshot(disk: DiskRef, _snapshot: string): Promise<void> {
    throw new UnsupportedOperationError('rollback', 'rollbackToSnapshot', { backend: NAME, diskId: diskId(disk) });
  }

  async flatten(disk: DiskRef, _options?: OperationOptions): Promise<void> {
    throw new UnsupportedOperationError('flatten', 'flatten', { backend: NAME, diskId: diskId(disk) });
  }

  async directSnapshot(disk: DiskRef): Promise<DirectSnapshotResult> {
    throw new UnsupportedOperationError('directSnapshot', 'directSnapshot', { backend: NAME, diskId: diskId(disk) });
  }

  async remove(disk: DiskRef, options: RemoveOptions = {}): Promise<boolean> {
    const id = diskId(disk);
    return retryWhileBusy(
      async () => {
        if (this.pending.has(id)) throw new BusyError(`${id} is being created`, { backend: NAME, diskId: id });
        return this.mapper.withLock(`resize:${id}`, async () => {
          // A resize that crashed midway may have left its copy: remove it too.
          const leftovers = (await this.call(() => this.lvm.lvs(id), id)).filter(
            (l) => l.name === id + RELOCATE_SUFFIX,
          );
          for (const l of leftovers) await this.destroy(l.name, 'none');
          const lv = await this.call(() => this.lvm.lv(id), id);
          if (!lv) return false;
          const dev = this.lvm.deviceMapper ? (lv.active ? lv.path : undefined) : await this.mapper.devicePath(id);
          if (dev) await this.assertNotOpen(id, dev);
          if (this.lvm.deviceMapper && lv.attr[5] === 'o')
            throw new BusyError(`${id} is open`, { backend: NAME, diskId: id });
          await this.destroy(id, this.wipe, options.signal);
          return true;
        });
      },
      { timeoutMs: options.busyTimeoutMs ?? this.busyTimeoutMs, ...(options.signal ? { signal: options.signal } : {}) },
    );
  }

  async list(filter: ListFilter = {}): Promise<DiskInfo[]> {
    const prefix = listFilterPrefix(filter, NAME);
    const lvs = await this.call(() => this.lvm.lvs(prefix));
    return lvs
      .map(toInfo)
      .filter((d): d is DiskInfo => d !== undefined)
      .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  /** The owner in the LV's tags, `null` when none. */
  async getOwner(disk: DiskRef): Promise<DiskOwner | null> {
    return ownerFromTags((await this.lvOf(diskId(disk))).tags);
  }

  /** Hands the disk over: the owner tags replaced by one `lvchange`. */
  async setOwner(disk: DiskRef, owner: OwnerStamp): Promise<DiskOwner> {
    const id = diskId(disk);
    assertValidOwnerStamp(owner);
    const lv = await this.lvOf(id);
    return this.call(() => setLvOwner(this.lvm, lv, owner), id);
  }

  async capacity(): Promise<Capacity> {
    const vg = await this.call(() => this.lvm.vgInfo());
    return { totalBytes: vg.sizeBytes, freeBytes: vg.freeBytes };
  }

  /**
   * The disk's block device. Without device-mapper this attaches (or reuses) the loop mapping,
   * which stays until `remove` (or `unmap`).
   */
  async diskSource(disk: DiskRef): Promise<BlockDiskSource> {
    const id = diskId(disk);
    const lv = await this.call(() => this.lvm.lv(id), id);
    if (!lv) throw this.notFound(id);
    const path = await this.call(() => this.mapper.map(id), id);
    const secretUuid = secretOf(lv.tags);
    return {
      type: 'block',
      path,
      format: 'raw',
      ...(secretUuid ? { encryption: { format: 'luks', secretUuid } } : {}),
    };
  }

  /** Detaches the disk's loop mapping (no-dm mode) without removing it; idempotent. */
  async unmap(disk: DiskRef): Promise<void> {
    const id = diskId(disk);
    await this.call(() => this.mapper.unmap(id), id);
  }

  /** The block device of the disk if it is mapped now (no side effects). */
  async mappedDevice(disk: DiskRef): Promise<string | undefined> {
    const id = diskId(disk);
    return this.call(() => this.mapper.devicePath(id), id);
  }

  /** Detaches loop devices over the VG's PVs that map no LV (left by a crash). */
  async cleanupOrphans(): Promise<string[]> {
    return this.call(() => this.mapper.detachOrphans());
  }

  async close(): Promise<void> {}

  // --- internals ---

  private async reserve(id: string, signal: AbortSignal | undefined): Promise<void> {
    throwIfAborted(signal, 'create');
    // Claim the name synchronously so two concurrent creates cannot both pass the check.
    if (this.pending.has(id))
      throw new AlreadyExistsError(`disk ${id} is being created in ${this.lvm.vg}`, { backend: NAME, diskId: id });
    this.pending.add(id);
    try {
      if (await this.call(() => this.lvm.lv(id), id))
        throw new AlreadyExistsError(`disk ${id} exists in ${this.lvm.vg}`, { backend: NAME, diskId: id });
    } catch (e) {
      this.pending.delete(id);
      throw e;
    }
  }

  private async checkCapacity(bytes: number, id: string): Promise<number> {
    const vg = await this.call(() => this.lvm.vgInfo(), id);
    const extents = Math.ceil(bytes / vg.extentSize);
    if (extents > vg.freeExtents)
      throw new InsufficientCapacityError(
        `${id}: need ${extents * vg.extentSize} bytes, ${vg.freeBytes} free in ${vg.name}`,
        {
          backend: NAME,
          diskId: id,
          requestedBytes: extents * vg.extentSize,
          availableBytes: vg.freeBytes,
        },
      );
    return extents;
  }

  /** Size check against free extents, then `lvcreate` (with the owner's tags: one step); returns the new LV. */
  /** The backend's steps the encrypted create paths use (`onCreated` once the LV exists, for rollback). */
  private encryptedOps(id: string, disk: DiskRef, o: CreateBlankOptions, onCreated: () => void): EncryptedLvOps {
    const owner = o.owner && ownerRecord(disk, o.owner);
    return {
      tempDir: this.tempDir,
      createLv: async (bytes, tags) => (await this.createLv(id, bytes, o.signal, owner, tags, onCreated)).sizeBytes,
      map: () => this.call(() => this.mapper.map(id, o.signal), id),
    };
  }

  private async createLv(
    id: string,
    bytes: number,
    signal?: AbortSignal,
    owner?: DiskOwner,
    extra: string[] = [],
    onCreated?: () => void,
  ): Promise<LvInfo> {
    const extents = await this.checkCapacity(bytes, id);
    throwIfAborted(signal, 'create');
    const tags = [LVM_DISK_TAG, ...(owner ? ownerTags(owner) : []), ...extra];
    try {
      await this.lvm.create(id, extents, { tags, ...(signal ? { signal } : {}) });
    } catch (e) {
      throw this.translate(e, id, signal);
    }
    onCreated?.();
    const lv = await this.call(() => this.lvm.lv(id), id);
    if (!lv)
      throw new BackendUnavailableError(`${id}: lvcreate succeeded but the LV is not listed`, {
        backend: NAME,
        diskId: id,
      });
    return lv;
  }

  /**
   * Grows a contiguous LV that cannot be extended in place: copy into a new contiguous LV of the
   * new size (`<id>+resize`), then remove the old one and rename.
   */
  private async relocate(
    id: string,
    oldBytes: number,
    extents: number,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    const tmp = id + RELOCATE_SUFFIX;
    // The copy keeps the owner: it becomes the disk.
    const owner = ((await this.lvm.lv(id))?.tags ?? []).filter(isOwnerTag);
    try {
      await this.lvm.create(tmp, extents, { tags: [LVM_DISK_TAG, ...owner], ...(signal ? { signal } : {}) });
    } catch (e) {
      throw this.translate(e, id, signal);
    }
    try {
      const from = await this.mapper.map(id, signal);
      const to = await this.mapper.map(tmp, signal);
      await convertImageToDevice(from, 'raw', to, { signal, trusted: true });
      await syncDevice(to);
      await this.mapper.unmap(tmp);
    } catch (e) {
      await this.destroy(tmp, 'none').catch(() => undefined);
      throw this.translate(e, id, signal);
    }
    await this.destroy(id, this.wipe);
    await this.lvm.rename(tmp, id);
    void oldBytes;
  }

  /** Wipes (per `wipe`), unmaps and removes an LV. Missing LV: nothing to do. */
  private async destroy(name: string, wipe: WipeMethod, signal?: AbortSignal): Promise<void> {
    const lv = await this.lvm.lv(name);
    if (!lv) return;
    if (wipe === 'zero') {
      const dev = await this.mapper.map(name);
      await zeroDevice(dev, lv.sizeBytes, signal ? { signal } : {});
    }
    await this.mapper.unmap(name);
    try {
      await this.lvm.remove(name);
    } catch (e) {
      if (!(e instanceof LvmError && e.kind === 'lv-not-found')) throw e;
    }
  }

  private async assertNotOpen(id: string, device: string): Promise<void> {
    const pids = await openers(device);
    if (pids.length > 0)
      throw new BusyError(`${id} is open (${device}) by pid ${pids.join(', ')}`, { backend: NAME, diskId: id });
  }

  /** The LV of disk `id`; `NotFoundError` when missing. */
  private async lvOf(id: string): Promise<LvInfo> {
    const lv = await this.call(() => this.lvm.lv(id), id);
    if (!lv) throw this.notFound(id);
    return lv;
  }

  private notFound(id: string): NotFoundError {
    return new NotFoundError(`disk ${id} not found in volume group ${this.lvm.vg}`, { backend: NAME, diskId: id });
  }

  /** Runs an LVM-layer call, turning its failures into contract errors. */
  private async call<T>(fn: () => Promise<T>, id?: string): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      throw this.translate(e, id, undefined);
    }
  }

  private translate(e: unknown, id: string | undefined, signal: AbortSignal | undefined): Error {
    return translateError(e, id, signal, this.lvm.vg, NAME);
  }
}
