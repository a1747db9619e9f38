/**
 * The types of the image-backend contract. Everything here is data: a backend package depends
 * on these types, never on the Glance client, libvirt or the driver.
 */

/** Well-known disk names of an instance (the names Nova uses); any valid name is allowed. */
export type WellKnownDiskName = 'disk' | 'disk.local' | 'disk.swap' | 'disk.config';

/**
 * One disk of one instance. The backend stores it under the canonical id
 * `<instance>_<name>` (see `diskId`).
 */
export interface DiskRef {
  /** Instance UUID (lower or upper case hex, 8-4-4-4-12). */
  readonly instance: string;
  /** Disk name: `disk` (root), `disk.local` (ephemeral), `disk.swap`, `disk.config`, or another valid name. */
  readonly name: WellKnownDiskName | (string & {});
}

/** Disk formats a backend may store. */
export type DiskFormat = 'raw' | 'qcow2';

/** A location of an image, as Glance reports it (`locations[]`). */
export interface ImageLocation {
  /** e.g. `rbd://<fsid>/<pool>/<image>/<snap>`, `file:///...`, `http://...`. */
  readonly url: string;
  /** Store metadata as Glance returns it. */
  readonly metadata: Readonly<Record<string, unknown>>;
}

/** The bytes of an image: a web `ReadableStream` or any async iterable of chunks (a Node `Readable` is one). */
export type ImageByteStream = ReadableStream<Uint8Array> | AsyncIterable<Uint8Array>;

/**
 * A Glance image as a backend needs it: its record plus a way to read its bytes. The glance
 * package produces these; backends never import it.
 */
export interface SourceImage {
  /** Glance image id. */
  readonly id: string;
  /** Human name (informational). */
  readonly name?: string;
  /** Size in bytes of the stored image data (what `open()` yields). */
  readonly size: number;
  /** Virtual (guest-visible) size in bytes, if known. For raw images it equals `size`. */
  readonly virtualSize?: number | null;
  /** Glance `disk_format`: `raw`, `qcow2`, `vmdk`, `iso`, ... */
  readonly diskFormat: string;
  /** Glance `container_format`, usually `bare`. */
  readonly containerFormat?: string;
  /** Legacy MD5 hex digest of the data (Glance `checksum`). */
  readonly checksum?: string | null;
  /** Multihash algorithm (Glance `os_hash_algo`, e.g. `sha512`). */
  readonly osHashAlgo?: string | null;
  /** Multihash hex digest (Glance `os_hash_value`). */
  readonly osHashValue?: string | null;
  /** Direct locations; a backend may clone from one it understands (e.g. `rbd://` in its cluster). */
  readonly locations: readonly ImageLocation[];
  /** Opens a fresh byte stream of the image data. Called at most once per create attempt. */
  open(options?: { signal?: AbortSignal }): Promise<ImageByteStream>;
  /**
   * Optional, for sources that can fill the caller's memory (a local file): a reader of the same
   * bytes as `open()`. An importer with buffers of its own reads into them instead of taking one
   * new buffer per chunk from a stream (the garbage collection of those cost more CPU than the
   * import's own work: bench/README.md, case 4). Called instead of `open()`, at most once per
   * create attempt.
   */
  openReader?(options?: { signal?: AbortSignal }): Promise<ImageReader>;
}

/** Sequential reads of an image's bytes into the caller's buffers (see `SourceImage.openReader`). */
export interface ImageReader {
  /** Reads the next bytes into `target`; resolves with how many were read, 0 at the end. */
  read(target: Uint8Array): Promise<number>;
  /** Releases what the reader holds (a file descriptor). Called once, also after a failure. */
  close(): Promise<void>;
}

import type { DiskOwner, OwnerStamp } from './owner.js';

/** Phases a long operation reports. */
export type ProgressPhase = 'clone' | 'download' | 'import' | 'convert' | 'resize' | 'flatten' | 'snapshot' | 'done';

/** A progress report. `percent` never decreases within one operation and the last event is 100. */
export interface ProgressEvent {
  readonly phase: ProgressPhase;
  readonly bytesDone: number;
  readonly bytesTotal?: number;
  /** 0..100. */
  readonly percent: number;
}

/** Options of every long operation. */
export interface OperationOptions {
  /** Aborting rejects with `AbortedError` and rolls back what was done. */
  readonly signal?: AbortSignal;
}

/** Encryption of a new disk (LUKS). QEMU gets the passphrase from a libvirt secret. */
export interface DiskEncryption {
  readonly format: 'luks';
  /** UUID of the libvirt secret (usage type `volume`) holding the passphrase. */
  readonly secretUuid: string;
  /**
   * The passphrase, for a create that formats the disk (qemu-img). A function, so the bytes
   * never land in JSON, logs or records; the backend zeroes them after use. `diskSource` never
   * returns it. Backends with the `encryption` capability refuse a create without it.
   */
  readonly passphrase?: () => Promise<Uint8Array>;
}

/** Options of `createFromImage`. */
export interface CreateFromImageOptions extends OperationOptions {
  /** Progress events (monotonic, last one at 100%). */
  readonly onProgress?: (event: ProgressEvent) => void;
  /**
   * Guest-visible size wanted (bytes). When larger than the image's virtual size the new disk
   * is grown to it (needs the `resize` capability unless the backend can create at that size).
   */
  readonly sizeBytes?: number;
  /** Refuse to clone even when possible (always import). */
  readonly forceImport?: boolean;
  /** Encrypt the new disk (needs the `encryption` capability). */
  readonly encryption?: DiskEncryption;
  /**
   * Record this owner on the new disk (backends with `setOwner`), in the same step that creates
   * it: a create that cannot record it fails and leaves nothing. Absent: the disk has no owner.
   */
  readonly owner?: OwnerStamp;
}

/** Options of `createBlank`. */
export interface CreateBlankOptions extends OperationOptions {
  /** One of the backend's `diskFormats` (default: the first of them). */
  readonly format?: DiskFormat;
  /** Encrypt the new disk (needs the `encryption` capability). */
  readonly encryption?: DiskEncryption;
  /** Record this owner on the new disk, as `CreateFromImageOptions.owner`. */
  readonly owner?: OwnerStamp;
}

/** Options of `remove`. */
export interface RemoveOptions extends OperationOptions {
  /** How long to keep retrying while the disk is busy (default: the backend's, typically 10-30 s). */
  readonly busyTimeoutMs?: number;
}

/** How a disk was made. */
export interface CreateResult {
  /** `cloned`: copy-on-write clone of the image; `imported`: bytes copied; `blank`: empty disk. */
  readonly method: 'cloned' | 'imported' | 'blank';
  /** For `imported`: why a clone was not possible (e.g. `no rbd location in this cluster`). */
  readonly reason?: string;
  /** Bytes written (for imports). */
  readonly bytesWritten?: number;
  /** Guest-visible size of the new disk, in bytes. */
  readonly sizeBytes: number;
  /** Wall time of the operation. */
  readonly durationMs: number;
}

/** A disk as the backend sees it. */
export interface DiskInfo {
  readonly disk: DiskRef;
  /** Canonical id, `<instance>_<name>`. */
  readonly id: string;
  /** Guest-visible size in bytes. */
  readonly sizeBytes: number;
  readonly format: DiskFormat;
  /** What it is a copy-on-write child of (e.g. `images/abc@snap`), when it is one. */
  readonly parent?: string;
  readonly encrypted?: boolean;
  /**
   * Who owns the disk (backends with `getOwner`): `null` when the disk carries no owner record
   * (made before ownership, or created without `owner`); absent when the backend records none.
   */
  readonly owner?: DiskOwner | null;
}

/** A snapshot of a disk. */
export interface SnapshotInfo {
  readonly name: string;
  /** Size of the disk when the snapshot was taken. */
  readonly sizeBytes: number;
}

/** Where a direct snapshot landed: a location Glance can register for a new image. */
export interface DirectSnapshotResult {
  /** e.g. `rbd://<fsid>/<pool>/<image>/<snap>`. */
  readonly url: string;
  readonly metadata?: Readonly<Record<string, unknown>>;
  /**
   * The new image is usable but still depends on the disk (asked with `deferFlatten`): the caller
   * finishes it with `finishDirectSnapshot` (or, after a crash, finds it with `pendingDirectSnapshots`).
   */
  readonly flattenPending?: boolean;
}

/** Options of `directSnapshot`. */
export interface DirectSnapshotOptions extends OperationOptions {
  /** The Glance image id the snapshot will become; backends use it to name the snapshot. */
  readonly imageId: string;
  /**
   * Return as soon as the new image is usable, leaving the copy of the disk's data into it to a
   * later `finishDirectSnapshot` (result `flattenPending`). Backends that cannot defer ignore it.
   */
  readonly deferFlatten?: boolean;
}

/** Options of `finishDirectSnapshot`. */
export interface FinishDirectSnapshotOptions extends DirectSnapshotOptions {
  /** Progress of the copy (phase `flatten`, monotonic, last event at 100%). */
  readonly onProgress?: (event: ProgressEvent) => void;
  /**
   * A process that was finishing it died (crash recovery): what that process still holds on the
   * image (RBD: the exclusive lock of its dead client) is broken instead of waited out.
   */
  readonly orphaned?: boolean;
}

/** Options of `flatten`. */
export interface FlattenOptions extends OperationOptions {
  /** Progress of the copy (phase `flatten`, monotonic, last event at 100%). */
  readonly onProgress?: (event: ProgressEvent) => void;
}

/** Options of `removeDirectSnapshot`. */
export interface RemoveDirectSnapshotOptions extends DirectSnapshotOptions, RemoveOptions {
  /**
   * The process that ran `directSnapshot` died (crash recovery), as opposed to a rollback by a
   * live caller whose calls have returned. Work that process handed to another party (e.g. a
   * snapshot request forwarded to the storage client that holds the disk's lock) may still
   * complete after this call looked: the backend then also waits, for a bounded time it
   * documents, for such work to land, and removes what it creates.
   */
  readonly orphaned?: boolean;
}

/** A client that has a disk open now (`diskClients`). */
export interface DiskClient {
  /** `watcher`: an RBD watch (the disk is open); `lock-owner`: holds the disk's exclusive lock. */
  readonly kind: 'watcher' | 'lock-owner';
  /** The client's address, e.g. `127.0.0.1:0/3271039427`. */
  readonly address: string;
  /** The client's name, e.g. `client.4235`. */
  readonly client: string;
  /** The client is on the cluster's blocklist (it can no longer write): it does not count as live. */
  readonly blocklisted: boolean;
}

/** Filter of `list`. */
export interface ListFilter {
  /** Only the disks of this instance. */
  readonly instance?: string;
}

/** Storage capacity. */
export interface Capacity {
  readonly totalBytes: number;
  readonly freeBytes: number;
}

/** Ceph authentication for a network disk: both fields always go together. */
export interface RbdAuth {
  /** cephx user id without `client.` (e.g. `nova`). */
  readonly username: string;
  /** UUID of the libvirt secret (usage type `ceph`) holding that user's key. */
  readonly secretUuid: string;
}

/** A monitor address; IPv6 literals are given without brackets. */
export interface NetworkHost {
  readonly host: string;
  readonly port: number;
}

/** A disk that is a file on the hypervisor. */
export interface FileDiskSource {
  readonly type: 'file';
  /** Absolute path. */
  readonly path: string;
  readonly format: DiskFormat;
  readonly encryption?: DiskEncryption;
}

/** A disk that is a block device on the hypervisor. */
export interface BlockDiskSource {
  readonly type: 'block';
  /** Absolute path of the device. */
  readonly path: string;
  readonly format: 'raw';
  readonly encryption?: DiskEncryption;
}

/** A disk that QEMU reaches over the network (librbd). */
export interface NetworkDiskSource {
  readonly type: 'network';
  readonly protocol: 'rbd';
  /** `pool/image` (optionally `pool/namespace/image`). */
  readonly name: string;
  /** One per monitor (msgr v1 addresses). */
  readonly hosts: readonly NetworkHost[];
  readonly auth?: RbdAuth;
  readonly format: 'raw';
  readonly encryption?: DiskEncryption;
}

/** How the XML generator should describe a disk to libvirt. */
export type DiskSource = FileDiskSource | BlockDiskSource | NetworkDiskSource;

/** What a backend can do. Operations needing a capability it lacks throw `UnsupportedOperationError`. */
export interface BackendCapabilities {
  /** `createFromImage` can make copy-on-write clones of suitable images. */
  readonly clone: boolean;
  /** `createSnapshot`/`listSnapshots`/`removeSnapshot`. */
  readonly snapshot: boolean;
  /** `rollbackToSnapshot` (implies `snapshot`). */
  readonly rollback: boolean;
  /** `flatten`: detach a clone from its parent. */
  readonly flatten: boolean;
  /** `resize` (grow). */
  readonly resize: boolean;
  /** Disks are reachable from every hypervisor (live migration needs no block copy). */
  readonly sharedStorage: boolean;
  /** `directSnapshot`: snapshot a disk in place into a Glance location. */
  readonly directSnapshot: boolean;
  /** LUKS encryption of new disks. */
  readonly encryption: boolean;
  /** The guest's discard/TRIM frees space (libvirt `discard='unmap'` is useful). */
  readonly discard: boolean;
  /** Thin provisioning: space is allocated on write. */
  readonly thin: boolean;
}

/** A capability name. */
export type Capability = keyof BackendCapabilities;

/** Every capability name, in a stable order. */
export const CAPABILITIES: readonly Capability[] = Object.freeze([
  'clone',
  'snapshot',
  'rollback',
  'flatten',
  'resize',
  'sharedStorage',
  'directSnapshot',
  'encryption',
  'discard',
  'thin',
] as const);

/**
 * The contract. Every method validates its `DiskRef` (throwing `InvalidArgumentError`), and a
 * failing or aborted create leaves nothing behind.
 */
export interface ImageBackend {
  /** Unique registry name, e.g. `rbd`, `qcow2`, `lvm`. */
  readonly name: string;
  /** The contract version this backend was built for (`IMAGE_BACKEND_API_VERSION` at build time). */
  readonly apiVersion: number;
  readonly capabilities: Readonly<BackendCapabilities>;
  /** Formats `createBlank` accepts; the first is the default. */
  readonly diskFormats: readonly DiskFormat[];

  /** Whether the disk exists. */
  exists(disk: DiskRef): Promise<boolean>;
  /** The disk's info; `NotFoundError` if missing. */
  info(disk: DiskRef): Promise<DiskInfo>;
  /**
   * Creates the disk from an image: a copy-on-write clone when the backend can (capability
   * `clone` and a usable location), else a verified streamed import. `AlreadyExistsError` if the
   * disk exists. On any failure nothing is left: a failing or short stream is `ImageSourceError`,
   * a hash mismatch `UnsafeImageError`, an abort `AbortedError`.
   */
  createFromImage(disk: DiskRef, image: SourceImage, options?: CreateFromImageOptions): Promise<CreateResult>;
  /** Creates an empty disk of `sizeBytes` (ephemeral, swap). */
  createBlank(disk: DiskRef, sizeBytes: number, options?: CreateBlankOptions): Promise<CreateResult>;
  /** Grows the disk to `sizeBytes` (capability `resize`); shrinking is an `InvalidArgumentError`. */
  resize(disk: DiskRef, sizeBytes: number, options?: OperationOptions): Promise<void>;
  /** Capability `snapshot`. `AlreadyExistsError` on a duplicate name. */
  createSnapshot(disk: DiskRef, snapshot: string): Promise<SnapshotInfo>;
  /** Capability `snapshot`. */
  listSnapshots(disk: DiskRef): Promise<SnapshotInfo[]>;
  /** Capability `snapshot`. Idempotent: `false` when it did not exist. */
  removeSnapshot(disk: DiskRef, snapshot: string): Promise<boolean>;
  /** Capability `rollback`: restores the snapshot's content and size. The disk must not be in use. */
  rollbackToSnapshot(disk: DiskRef, snapshot: string): Promise<void>;
  /**
   * Capability `flatten`: copies the parent's data so the disk no longer depends on it. A no-op
   * for a disk without a parent.
   */
  flatten(disk: DiskRef, options?: FlattenOptions): Promise<void>;
  /**
   * Optional (backends with clones): how many ancestors the disk has (0: no parent; a clone of a
   * flat image: 1; a clone of a clone: 2). Callers bound the chains (the driver's clone-depth policy).
   */
  cloneDepth?(disk: DiskRef): Promise<number>;
  /** Capability `directSnapshot`: snapshots the disk in place and returns a Glance location for it. */
  directSnapshot(disk: DiskRef, options: DirectSnapshotOptions): Promise<DirectSnapshotResult>;
  /**
   * Optional (backends that honour `deferFlatten`): finishes a direct snapshot that returned with
   * `flattenPending`: copies the disk's data into the image made for `imageId` and then drops
   * what tied that image to the disk (RBD: the temporary snapshot). Resumable and idempotent: after
   * a crash it is simply run again; `false` when nothing was pending.
   */
  finishDirectSnapshot?(disk: DiskRef, options: FinishDirectSnapshotOptions): Promise<boolean>;
  /**
   * Optional (with `finishDirectSnapshot`): the image ids of the disk's direct snapshots whose
   * image is usable but not yet finished, read from the storage itself (so any host can resume).
   */
  pendingDirectSnapshots?(disk: DiskRef): Promise<string[]>;
  /**
   * Optional (backends with `directSnapshot`): undoes a direct snapshot that was interrupted (the
   * process died inside `directSnapshot(disk, { imageId })`, or its Glance image was never
   * completed): removes every resource that call may have made for `imageId` (temporary snapshots
   * on the disk, the image it wrote for Glance and that image's snapshots). Callers journal the
   * intent before `directSnapshot` and call this when recovering. Idempotent: `false` when
   * nothing was there; the disk itself may be gone.
   */
  removeDirectSnapshot?(disk: DiskRef, options: RemoveDirectSnapshotOptions): Promise<boolean>;
  /**
   * Removes the disk and its snapshots. Idempotent (`false` when it did not exist). Retries
   * while the disk is busy, up to `busyTimeoutMs`, then throws `BusyError`.
   */
  remove(disk: DiskRef, options?: RemoveOptions): Promise<boolean>;
  /**
   * Optional (every built-in backend has it): the owner recorded on the disk, `null` when it has
   * none; `NotFoundError` if the disk is missing.
   */
  getOwner?(disk: DiskRef): Promise<DiskOwner | null>;
  /**
   * Optional (with `getOwner`): hands the disk over to `owner.hostId` in one atomic write (live
   * migration, adopting a dead host's disks) and returns the new record. Instance, disk name and
   * creation time are kept (a disk without a record gets one created now). Does not check who
   * uses the disk: callers that take a disk from a live host check that first. `NotFoundError`
   * if the disk is missing, `InvalidArgumentError` for a bad stamp (nothing changed).
   */
  setOwner?(disk: DiskRef, owner: OwnerStamp): Promise<DiskOwner>;
  /**
   * Optional (shared storage): the clients that have the disk open now (RBD: its watchers and
   * exclusive-lock owners), each marked `blocklisted` when the cluster has fenced it. Callers that
   * take a disk from another host refuse while a client that is not blocklisted remains.
   * `NotFoundError` if the disk is missing.
   */
  diskClients?(disk: DiskRef): Promise<DiskClient[]>;
  /**
   * Optional (shared storage, with `diskClients`): fences the clients that have the disk open, so
   * that they can never write to it again (RBD: `ceph osd blocklist add` of each watcher's and
   * lock owner's address that is not blocklisted yet; never this backend's own client). For a
   * caller that has made sure their host is dead (evacuation): fencing a live host's QEMU breaks
   * its guest. Resolves to the clients it fenced (each `blocklisted: true`), `[]` when none held
   * the disk. `NotFoundError` if the disk is missing.
   */
  fenceClients?(disk: DiskRef): Promise<DiskClient[]>;
  /**
   * Optional: the annotation `key` recorded on the disk (see `setAnnotation`), `null` when none.
   * `NotFoundError` if the disk is missing, `InvalidArgumentError` for a bad key.
   */
  getAnnotation?(disk: DiskRef, key: string): Promise<string | null>;
  /**
   * Optional (with `getAnnotation`): records `value` as the annotation `key` of the disk, on the
   * storage itself (RBD image metadata), replacing an earlier one; it goes with the disk. Keys:
   * `isAnnotationKey`; values up to `MAX_ANNOTATION_BYTES`. `NotFoundError` if the disk is missing,
   * `InvalidArgumentError` for a bad key or value (nothing changed).
   */
  setAnnotation?(disk: DiskRef, key: string, value: string): Promise<void>;
  /** Disks this backend holds (only ones with canonical ids, each with its `owner`), optionally of one instance. */
  list(filter?: ListFilter): Promise<DiskInfo[]>;
  /** Capacity of the storage behind the backend. */
  capacity(): Promise<Capacity>;
  /** Describes the disk for the XML generator; `NotFoundError` if missing. */
  diskSource(disk: DiskRef): Promise<DiskSource>;
  /**
   * Optional fast health check before an operation creates anything: resolves when the storage
   * can serve new disks now, else rejects with `BackendUnavailableError` within the backend's
   * connect timeout (e.g. RBD: no Ceph monitor answers, so QEMU could not open a disk). The
   * driver calls it at the start of a spawn.
   */
  checkAvailable?(): Promise<void>;
  /** Releases connections. Optional. */
  close?(): Promise<void>;
}
