import { binding, closedError } from './binding.js';
import { domainStateInfo, DOMAIN_STATES, type DomainState, type DomainStateInfo } from './constants.js';
import type { Connection } from './connection.js';
import { jobStatsFromRaw, migrateTypedParams, type JobStats, type MigrateParams } from './migration.js';
import type { DomHandle, RawDomain } from './native.js';

/** `Domain.info()`: a snapshot of a domain's resources (`virDomainInfo`). */
export interface DomainInfo {
  state: DomainState;
  /** Maximum memory in KiB. */
  maxMemKiB: number;
  /** Memory in use in KiB. */
  memoryKiB: number;
  /** Number of virtual CPUs. */
  nrVirtCpu: number;
  /** CPU time used, in nanoseconds. */
  cpuTimeNs: bigint;
}

/**
 * A libvirt domain (a VM definition and/or a running instance). Obtained from a Connection.
 * `name()` and `uuid()` are local; every other method runs on the binding's worker threads and
 * returns a promise that rejects with a LibvirtError.
 */
export class Domain {
  /** The connection this domain was obtained from. */
  readonly connection: Connection;
  readonly #handle: DomHandle;
  readonly #name: string;
  readonly #uuid: string;

  /** @internal */
  constructor(connection: Connection, raw: RawDomain) {
    this.connection = connection;
    this.#handle = raw.handle;
    this.#name = raw.name;
    this.#uuid = raw.uuid;
  }

  /** The native handle, or a rejection once the connection was closed. */
  #run<T>(call: (h: DomHandle) => Promise<T>): Promise<T> {
    if (this.connection.closed) return Promise.reject(closedError());
    return call(this.#handle);
  }

  /** The domain's name. */
  name(): string {
    return this.#name;
  }

  /** The domain's UUID (lowercase, dashed). */
  uuid(): string {
    return this.#uuid;
  }

  /**
   * Current state with its reason, e.g. `{ state: 'shutoff', reason: 'destroyed' }`.
   * Implements virDomainGetState().
   */
  async state(): Promise<DomainStateInfo> {
    const [state, reason] = await this.#run((h) => binding().domainState(h));
    return domainStateInfo(state, reason);
  }

  /** Resource snapshot (state, memory, vCPUs, CPU time). Implements virDomainGetInfo(). */
  async info(): Promise<DomainInfo> {
    const raw = await this.#run((h) => binding().domainInfo(h));
    return { ...raw, state: DOMAIN_STATES[raw.state] ?? 'nostate' };
  }

  /**
   * The domain XML (`DomainXMLFlags`, e.g. `INACTIVE` for the persistent definition).
   * Implements virDomainGetXMLDesc().
   */
  xml(flags = 0): Promise<string> {
    return this.#run((h) => binding().domainXML(h, flags));
  }

  /** Domain id while running, -1 when not running. Implements virDomainGetID(). */
  id(): Promise<number> {
    return this.#run((h) => binding().domainID(h));
  }

  /** Whether the domain is running (or paused). Implements virDomainIsActive(). */
  isActive(): Promise<boolean> {
    return this.#run((h) => binding().domainIsActive(h));
  }

  /** Whether the domain has a persistent definition. Implements virDomainIsPersistent(). */
  isPersistent(): Promise<boolean> {
    return this.#run((h) => binding().domainIsPersistent(h));
  }

  /** Starts a defined domain (`StartFlags`). Implements virDomainCreateWithFlags(). */
  create(flags = 0): Promise<void> {
    return this.#run((h) => binding().domainCreate(h, flags));
  }

  /**
   * Asks the guest to shut down (ACPI by default; `ShutdownFlags`). Returns before it has stopped.
   * Implements virDomainShutdownFlags().
   */
  shutdown(flags = 0): Promise<void> {
    return this.#run((h) => binding().domainShutdown(h, flags));
  }

  /** Powers the domain off immediately (`DestroyFlags`). Implements virDomainDestroyFlags(). */
  destroy(flags = 0): Promise<void> {
    return this.#run((h) => binding().domainDestroy(h, flags));
  }

  /** Asks the guest to reboot (`RebootFlags`). Implements virDomainReboot(). */
  reboot(flags = 0): Promise<void> {
    return this.#run((h) => binding().domainReboot(h, flags));
  }

  /** Pauses the domain's vCPUs. Implements virDomainSuspend(). */
  suspend(): Promise<void> {
    return this.#run((h) => binding().domainSuspend(h));
  }

  /** Resumes a paused domain. Implements virDomainResume(). */
  resume(): Promise<void> {
    return this.#run((h) => binding().domainResume(h));
  }

  /**
   * Removes the persistent definition (`UndefineFlags`); a running domain becomes transient.
   * Implements virDomainUndefineFlags().
   */
  undefine(flags = 0): Promise<void> {
    return this.#run((h) => binding().domainUndefine(h, flags));
  }

  /**
   * Hot-plugs and/or persists a device (`DeviceModifyFlags`: `LIVE`, `CONFIG`; 0 = current state).
   * Implements virDomainAttachDeviceFlags().
   */
  attachDevice(xml: string, flags = 0): Promise<void> {
    return this.#run((h) => binding().domainAttachDevice(h, xml, flags));
  }

  /** Detaches a device (`DeviceModifyFlags`). Implements virDomainDetachDeviceFlags(). */
  detachDevice(xml: string, flags = 0): Promise<void> {
    return this.#run((h) => binding().domainDetachDevice(h, xml, flags));
  }

  /**
   * Resizes a running domain's disk to `bytes` (the size is always in bytes;
   * `disk` is the target dev, e.g. `'vda'`, or the source path).
   * Implements virDomainBlockResize().
   */
  blockResize(disk: string, bytes: number | bigint, flags = 0): Promise<void> {
    if (typeof bytes === 'number' && (!Number.isSafeInteger(bytes) || bytes < 0)) {
      return Promise.reject(new RangeError('bytes must be a non-negative safe integer'));
    }
    const size = BigInt(bytes);
    if (size < 0n) return Promise.reject(new RangeError('bytes must be non-negative'));
    return this.#run((h) => binding().domainBlockResize(h, disk, size, flags));
  }

  /**
   * Migrates the domain to the host at `dconnuri` (`MigrateFlags`; for a peer-to-peer live move:
   * `LIVE | PEER2PEER | PERSIST_DEST | UNDEFINE_SOURCE`, plus `TUNNELLED` to carry the data over
   * the libvirtd connection). Resolves when the migration has finished. It runs on a native
   * thread of its own, so `getJobStats()`/`abortJob()` can run while it is in flight; an aborted
   * migration rejects (`VIR_ERR_OPERATION_ABORTED`) and leaves the domain running here.
   * Bad `params` reject with a TypeError/RangeError before anything is sent.
   * Implements virDomainMigrateToURI3().
   */
  migrateToUri(dconnuri: string, params: MigrateParams = {}, flags = 0): Promise<void> {
    let typed;
    try {
      if (typeof dconnuri !== 'string' || dconnuri === '') throw new TypeError('dconnuri must be a non-empty string');
      typed = migrateTypedParams(params);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.#run((h) => binding().domainMigrateToURI(h, dconnuri, typed, flags));
  }

  /**
   * Statistics of the domain's running job (type `'none'` when there is none), or with
   * `JobStatsFlags.COMPLETED` of the last completed one. Implements virDomainGetJobStats().
   */
  async getJobStats(flags = 0): Promise<JobStats> {
    return jobStatsFromRaw(await this.#run((h) => binding().domainGetJobStats(h, flags)));
  }

  /**
   * Aborts the domain's running job (e.g. a migration, whose `migrateToUri()` then rejects).
   * Rejects with `VIR_ERR_OPERATION_INVALID` when no job runs. Implements virDomainAbortJob().
   */
  abortJob(): Promise<void> {
    return this.#run((h) => binding().domainAbortJob(h));
  }

  /** `abortJob()` with `AbortJobFlags` (e.g. `POSTCOPY`). Implements virDomainAbortJobFlags(). */
  abortJobFlags(flags = 0): Promise<void> {
    return this.#run((h) => binding().domainAbortJobFlags(h, flags));
  }

  /**
   * Sets the downtime (ms) a live migration may pause the guest for at its end.
   * Implements virDomainMigrateSetMaxDowntime().
   */
  migrateSetMaxDowntime(ms: number, flags = 0): Promise<void> {
    if (!Number.isSafeInteger(ms) || ms < 0)
      return Promise.reject(new RangeError('ms must be a non-negative safe integer'));
    return this.#run((h) => binding().domainMigrateSetMaxDowntime(h, ms, flags));
  }

  /** The maximum migration downtime in ms. Implements virDomainMigrateGetMaxDowntime(). */
  migrateGetMaxDowntime(flags = 0): Promise<number> {
    return this.#run((h) => binding().domainMigrateGetMaxDowntime(h, flags));
  }

  /**
   * Sets the migration bandwidth in MiB/s, also while a migration runs (`MigrateMaxSpeedFlags`).
   * Implements virDomainMigrateSetMaxSpeed().
   */
  migrateSetMaxSpeed(mibPerSecond: number, flags = 0): Promise<void> {
    if (!Number.isSafeInteger(mibPerSecond) || mibPerSecond < 0) {
      return Promise.reject(new RangeError('mibPerSecond must be a non-negative safe integer'));
    }
    return this.#run((h) => binding().domainMigrateSetMaxSpeed(h, mibPerSecond, flags));
  }

  /** The migration bandwidth in MiB/s. Implements virDomainMigrateGetMaxSpeed(). */
  migrateGetMaxSpeed(flags = 0): Promise<number> {
    return this.#run((h) => binding().domainMigrateGetMaxSpeed(h, flags));
  }

  /** @internal */
  toJSON(): { name: string; uuid: string } {
    return { name: this.#name, uuid: this.#uuid };
  }
}
