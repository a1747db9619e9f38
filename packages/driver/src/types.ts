/** The public types of the driver: requests, records, reports. */
import type { Cluster } from '@ephemera/ceph-rbd-napi';
import type { DeclinedOption } from '@ephemera/glance';
import type { CreateResult } from '@ephemera/image-backend';
import type { DomainState } from '@ephemera/libvirt-napi';
import type { DomainOptions } from './domain-spec.js';
import type { EncryptionRequest, InstanceEncryption } from './encryption.js';
import type { SpawnStep } from './events.js';

/** Ceph facts the driver needs (null members when no backend uses Ceph). */
export interface CephContext {
  cluster: Cluster | null;
  fsid: string | null;
  user: string;
  secretUuid: string | null;
  keyringPath: string | null;
}

/** Flavor of an instance. */
export interface Flavor {
  /** Name (informational, recorded in the domain metadata). */
  name?: string;
  vcpus: number;
  memoryMiB: number;
  /** Root disk size; 0 = the image's virtual size. */
  rootGiB: number;
  /** Blank ephemeral disk (`disk.local`); 0 = none. */
  ephemeralGiB?: number;
  /** Blank swap disk (`disk.swap`); 0 = none. */
  swapMiB?: number;
  /**
   * Nova-style extra specs (`quota:disk_total_iops_sec`, ...), override `qos.*`. Limits QEMU would
   * refuse at start (a `*_max` without its base or below it) are INVALID_ARGUMENT before anything exists.
   */
  extraSpecs?: Record<string, string>;
}

/** What to spawn. */
export interface SpawnRequest {
  /** Instance UUID, or `{ uuid, name }`. */
  instance: string | { uuid: string; name?: string };
  /** Glance image id. */
  image: string;
  flavor: Flavor;
  /** Backend for this instance (default `images.type`); must be loaded. */
  backend?: string;
  /** Always import a full copy (never clone). Default: `!images.useCowImages`. */
  forceImport?: boolean;
  /** Additions to the domain: NICs, CPU, machine type, extra devices (then `customizeDomain`, if any). */
  domain?: DomainOptions;
  /**
   * Encrypt every disk of the instance (LUKS, one key per instance from the key provider).
   * Absent: the flavor's `hw:ephemeral_encryption` extra spec decides.
   */
  encryption?: EncryptionRequest;
  signal?: AbortSignal;
}

/** A disk of an instance. */
export interface InstanceDisk {
  name: string;
  target: string;
  sizeBytes: number;
}

/** How the root disk was made. */
export interface RootDiskReport {
  method: CreateResult['method'];
  reason?: string;
  durationMs: number;
  sizeBytes: number;
  bytesWritten?: number;
  /** The resolver's chosen plan and everything it declined. */
  plan: { method: string; handler: string; location: string; declined: DeclinedOption[] };
}

/** The driver's record of an instance (`<instancesPath>/<uuid>/instance.json`). */
export interface InstanceRecord {
  uuid: string;
  name: string;
  domainName: string;
  imageId: string;
  backend: string;
  flavor: Flavor;
  disks: InstanceDisk[];
  consolePath: string;
  createdAt: string;
  rootDisk: RootDiskReport;
  /** Set when the instance's disks are encrypted. */
  encryption?: InstanceEncryption;
}

/** An instance with its current libvirt state. */
export interface InstanceInfo extends InstanceRecord {
  /** libvirt state, or `missing` when the domain is gone. */
  state: DomainState | 'missing';
  stateReason?: string;
}

/** What spawn returns. */
export interface SpawnResult {
  instance: InstanceInfo;
  rootDisk: RootDiskReport;
  /** Milliseconds per step. */
  timings: Partial<Record<SpawnStep, number>>;
  totalMs: number;
}

/** One operation reconcile finished. */
export interface ReconcileAction {
  /** The journal entry's operation id; `-` for what reconcile found without one. */
  opId: string;
  /** The journal's operation (`spawn`, `destroy`, ...), else `handed-over` or `orphan-domain`. */
  op: string;
  instance: string;
  action: 'rolled-back' | 'completed' | 'skipped' | 'failed';
  removed: string[];
  error?: string;
}

/**
 * An operation the journal holds that has not finished: `in-progress` (its process, maybe this
 * one, is alive), `interrupted` (its process is gone: `reconcile()` finishes it) or
 * `rollback-failed` (its rollback left something: `reconcile()` retries).
 */
export interface PendingOperation {
  opId: string;
  op: string;
  instance: string;
  status: 'in-progress' | 'interrupted' | 'rollback-failed';
  pid: number;
  startedAt: string;
  /** Steps that finished, in order. */
  done: string[];
  /** The instance's name, image and backend, when the operation recorded them (spawn). */
  name?: string;
  imageId?: string;
  backend?: string;
  /** libvirt state of the instance's domain, or `missing`. */
  state: DomainState | 'missing';
}

/** What gc found. */
export interface GcReport {
  /** This host's disks whose instance has no domain, no record and no operation in progress. */
  orphans: GcDisk[];
  /**
   * Disks without an owner record (made before ownership) that are orphans by the same test:
   * removed only with `includeUnowned` (another host may be using one).
   */
  unowned: GcDisk[];
  /** Other hosts' disks (only with `allHosts`; read-only: gc never removes them). */
  otherHosts?: (GcDisk & { hostId: string })[];
  /**
   * Encryption keys (ids = instance UUIDs) of the built-in file provider whose instance has no
   * domain, no record and no operation in progress; removed with their volume secrets by `remove`.
   */
  keys?: string[];
  /** Ids removed (when `remove` was asked); a removed key is `key:<id>`. */
  removed: string[];
}

/** A disk in a {@link GcReport}. */
export interface GcDisk {
  backend: string;
  id: string;
  instance: string;
  name: string;
  sizeBytes: number;
}

/** Options of `Driver.gc`. */
export interface GcOptions {
  /** Remove this host's orphans (default: only report). */
  remove?: boolean;
  /** Only disks of these instance UUIDs. */
  instances?: string[];
  /** With `remove`: also remove `unowned` orphans. */
  includeUnowned?: boolean;
  /** Also report other hosts' disks (`otherHosts`, never removed). */
  allHosts?: boolean;
}

/** Result of a snapshot. */
export interface SnapshotResult {
  imageId: string;
  method: 'direct' | 'upload';
  durationMs: number;
  location?: string;
  /** The Glance image is usable and is being flattened in the background (`images.rbd.snapshotFlatten`). */
  flattenPending?: boolean;
}
