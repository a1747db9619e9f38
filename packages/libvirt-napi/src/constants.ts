/**
 * Typed views of libvirt's enums and flag sets (values from libvirt 9.0's headers; they are
 * part of libvirt's stable ABI).
 */

// ---------------------------------------------------------------------------------------------
// Domain state (virDomainState) and its reasons (virDomain<State>Reason)

/** Domain states, indexed by libvirt's `virDomainState` number. */
export const DOMAIN_STATES = [
  'nostate',
  'running',
  'blocked',
  'paused',
  'shutdown',
  'shutoff',
  'crashed',
  'pmsuspended',
] as const;

/** A domain state name. */
export type DomainState = (typeof DOMAIN_STATES)[number];

/** Reasons per state, indexed by libvirt's reason number. */
export const DOMAIN_STATE_REASONS = {
  nostate: ['unknown'],
  running: [
    'unknown',
    'booted',
    'migrated',
    'restored',
    'from_snapshot',
    'unpaused',
    'migration_canceled',
    'save_canceled',
    'wakeup',
    'crashed',
    'postcopy',
    'postcopy_failed',
  ],
  blocked: ['unknown'],
  paused: [
    'unknown',
    'user',
    'migration',
    'save',
    'dump',
    'ioerror',
    'watchdog',
    'from_snapshot',
    'shutting_down',
    'snapshot',
    'crashed',
    'starting_up',
    'postcopy',
    'postcopy_failed',
  ],
  shutdown: ['unknown', 'user'],
  shutoff: ['unknown', 'shutdown', 'destroyed', 'crashed', 'migrated', 'saved', 'failed', 'from_snapshot', 'daemon'],
  crashed: ['unknown', 'panicked'],
  pmsuspended: ['unknown'],
} as const satisfies Record<DomainState, readonly string[]>;

/** The reasons a domain can be in state `S`. */
export type DomainStateReason<S extends DomainState = DomainState> = (typeof DOMAIN_STATE_REASONS)[S][number];

/** A domain's state with its reason, as `Domain.state()` returns it (discriminated on `state`). */
export type DomainStateInfo = {
  [S in DomainState]: {
    state: S;
    reason: DomainStateReason<S>;
    /** libvirt's numeric state (`virDomainState`). */
    stateCode: number;
    /** libvirt's numeric reason (its own enum per state). */
    reasonCode: number;
  };
}[DomainState];

/** Maps libvirt's numeric state and reason to names (unknown numbers map to `'nostate'`/`'unknown'`). */
export function domainStateInfo(stateCode: number, reasonCode: number): DomainStateInfo {
  const state: DomainState = DOMAIN_STATES[stateCode] ?? 'nostate';
  const reasons: readonly string[] = DOMAIN_STATE_REASONS[state];
  const reason = reasons[reasonCode] ?? 'unknown';
  return { state, reason, stateCode, reasonCode } as DomainStateInfo;
}

// ---------------------------------------------------------------------------------------------
// Lifecycle events (virDomainEventType) and their details

/** Lifecycle event types, indexed by libvirt's `virDomainEventType` number. */
export const LIFECYCLE_EVENTS = [
  'defined',
  'undefined',
  'started',
  'suspended',
  'resumed',
  'stopped',
  'shutdown',
  'pmsuspended',
  'crashed',
] as const;

/** A lifecycle event type. */
export type LifecycleEventType = (typeof LIFECYCLE_EVENTS)[number];

/** Details (reasons) per event type, indexed by libvirt's detail number. */
export const LIFECYCLE_EVENT_DETAILS = {
  defined: ['added', 'updated', 'renamed', 'from_snapshot'],
  undefined: ['removed', 'renamed'],
  started: ['booted', 'migrated', 'restored', 'from_snapshot', 'wakeup'],
  suspended: [
    'paused',
    'migrated',
    'ioerror',
    'watchdog',
    'restored',
    'from_snapshot',
    'api_error',
    'postcopy',
    'postcopy_failed',
  ],
  resumed: ['unpaused', 'migrated', 'from_snapshot', 'postcopy', 'postcopy_failed'],
  stopped: ['shutdown', 'destroyed', 'crashed', 'migrated', 'saved', 'failed', 'from_snapshot'],
  shutdown: ['finished', 'guest', 'host'],
  pmsuspended: ['memory', 'disk'],
  crashed: ['panicked', 'crashloaded'],
} as const satisfies Record<LifecycleEventType, readonly string[]>;

/** The details an event of type `E` can carry (`'unknown'` for numbers newer than this binding). */
export type LifecycleEventDetail<E extends LifecycleEventType = LifecycleEventType> =
  | (typeof LIFECYCLE_EVENT_DETAILS)[E][number]
  | 'unknown';

/** A domain lifecycle event (discriminated on `event`). */
export type LifecycleEvent = {
  [E in LifecycleEventType]: {
    domain: { name: string; uuid: string };
    event: E;
    detail: LifecycleEventDetail<E>;
    /** libvirt's numeric event type. */
    eventCode: number;
    /** libvirt's numeric detail. */
    detailCode: number;
  };
}[LifecycleEventType];

/** Builds a typed lifecycle event from libvirt's numbers. */
export function lifecycleEvent(
  domain: { name: string; uuid: string },
  eventCode: number,
  detailCode: number,
): LifecycleEvent | undefined {
  const event = LIFECYCLE_EVENTS[eventCode];
  if (event === undefined) return undefined;
  const details: readonly string[] = LIFECYCLE_EVENT_DETAILS[event];
  const detail = details[detailCode] ?? 'unknown';
  return { domain, event, detail, eventCode, detailCode } as LifecycleEvent;
}

// ---------------------------------------------------------------------------------------------
// Connection close reasons (virConnectCloseReason)

/** Why a connection closed, indexed by `virConnectCloseReason`. */
export const CLOSE_REASONS = ['error', 'eof', 'keepalive', 'client'] as const;
/** Why a connection closed: `'eof'` when libvirtd went away (e.g. restarted), `'keepalive'` on timeout. */
export type CloseReason = (typeof CLOSE_REASONS)[number];

// ---------------------------------------------------------------------------------------------
// Secrets

/** Secret usage types, indexed by `virSecretUsageType`. */
export const SECRET_USAGE_TYPES = ['none', 'volume', 'ceph', 'iscsi', 'tls', 'vtpm'] as const;
/** A secret usage type name. */
export type SecretUsageType = (typeof SECRET_USAGE_TYPES)[number];

// ---------------------------------------------------------------------------------------------
// Flags

/** `virConnectListAllDomainsFlags` for `Connection.listAllDomains()` (0 = all domains). */
export const ListDomainsFlags = {
  ACTIVE: 1 << 0,
  INACTIVE: 1 << 1,
  PERSISTENT: 1 << 2,
  TRANSIENT: 1 << 3,
  RUNNING: 1 << 4,
  PAUSED: 1 << 5,
  SHUTOFF: 1 << 6,
  OTHER: 1 << 7,
  MANAGEDSAVE: 1 << 8,
  NO_MANAGEDSAVE: 1 << 9,
  AUTOSTART: 1 << 10,
  NO_AUTOSTART: 1 << 11,
  HAS_SNAPSHOT: 1 << 12,
  NO_SNAPSHOT: 1 << 13,
  HAS_CHECKPOINT: 1 << 14,
  NO_CHECKPOINT: 1 << 15,
} as const;

/** `virDomainDefineFlags` for `Connection.defineXML()`. */
export const DefineFlags = { VALIDATE: 1 << 0 } as const;

/** `virDomainCreateFlags` for `Connection.createXML()` and `Domain.create()`. */
export const StartFlags = {
  NONE: 0,
  PAUSED: 1 << 0,
  AUTODESTROY: 1 << 1,
  BYPASS_CACHE: 1 << 2,
  FORCE_BOOT: 1 << 3,
  VALIDATE: 1 << 4,
  RESET_NVRAM: 1 << 5,
} as const;

/** `virDomainXMLFlags` for `Domain.xml()`. */
export const DomainXMLFlags = {
  SECURE: 1 << 0,
  INACTIVE: 1 << 1,
  UPDATE_CPU: 1 << 2,
  MIGRATABLE: 1 << 3,
} as const;

/** `virDomainUndefineFlagsValues` for `Domain.undefine()`. */
export const UndefineFlags = {
  MANAGED_SAVE: 1 << 0,
  SNAPSHOTS_METADATA: 1 << 1,
  NVRAM: 1 << 2,
  KEEP_NVRAM: 1 << 3,
  CHECKPOINTS_METADATA: 1 << 4,
  TPM: 1 << 5,
  KEEP_TPM: 1 << 6,
} as const;

/** `virDomainDeviceModifyFlags` for `Domain.attachDevice()`/`detachDevice()` (0 = current state). */
export const DeviceModifyFlags = {
  CURRENT: 0,
  LIVE: 1 << 0,
  CONFIG: 1 << 1,
  FORCE: 1 << 2,
} as const;

/** `virDomainShutdownFlagValues` for `Domain.shutdown()`. */
export const ShutdownFlags = {
  DEFAULT: 0,
  ACPI_POWER_BTN: 1 << 0,
  GUEST_AGENT: 1 << 1,
  INITCTL: 1 << 2,
  SIGNAL: 1 << 3,
  PARAVIRT: 1 << 4,
} as const;

/** `virDomainRebootFlagValues` for `Domain.reboot()`. */
export const RebootFlags = ShutdownFlags;

/** `virDomainDestroyFlagsValues` for `Domain.destroy()`. */
export const DestroyFlags = {
  DEFAULT: 0,
  GRACEFUL: 1 << 0,
  REMOVE_LOGS: 1 << 1,
} as const;

/** `virConnectListAllSecretsFlags` for `Connection.listAllSecrets()`. */
export const ListSecretsFlags = {
  EPHEMERAL: 1 << 0,
  NO_EPHEMERAL: 1 << 1,
  PRIVATE: 1 << 2,
  NO_PRIVATE: 1 << 3,
} as const;

// ---------------------------------------------------------------------------------------------
// Migration and domain jobs

/** `virDomainMigrateFlags` for `Domain.migrateToUri()`. */
export const MigrateFlags = {
  LIVE: 1 << 0,
  PEER2PEER: 1 << 1,
  TUNNELLED: 1 << 2,
  PERSIST_DEST: 1 << 3,
  UNDEFINE_SOURCE: 1 << 4,
  PAUSED: 1 << 5,
  NON_SHARED_DISK: 1 << 6,
  NON_SHARED_INC: 1 << 7,
  CHANGE_PROTECTION: 1 << 8,
  UNSAFE: 1 << 9,
  OFFLINE: 1 << 10,
  COMPRESSED: 1 << 11,
  ABORT_ON_ERROR: 1 << 12,
  AUTO_CONVERGE: 1 << 13,
  RDMA_PIN_ALL: 1 << 14,
  POSTCOPY: 1 << 15,
  TLS: 1 << 16,
  PARALLEL: 1 << 17,
  NON_SHARED_SYNCHRONOUS_WRITES: 1 << 18,
  POSTCOPY_RESUME: 1 << 19,
  ZEROCOPY: 1 << 20,
} as const;

/** `virDomainGetJobStatsFlags` for `Domain.getJobStats()`. */
export const JobStatsFlags = {
  /** Statistics of the most recently completed job instead of the running one. */
  COMPLETED: 1 << 0,
  /** With `COMPLETED`: keep the completed statistics (libvirt drops them once read). */
  KEEP_COMPLETED: 1 << 1,
} as const;

/** `virDomainAbortJobFlagsValues` for `Domain.abortJobFlags()`. */
export const AbortJobFlags = {
  /** Interrupt a post-copy migration (it can be resumed with `MigrateFlags.POSTCOPY_RESUME`). */
  POSTCOPY: 1 << 0,
} as const;

/** `virDomainMigrateMaxSpeedFlags` for `Domain.migrateSetMaxSpeed()`/`migrateGetMaxSpeed()`. */
export const MigrateMaxSpeedFlags = {
  /** The post-copy phase's bandwidth instead of pre-copy's. */
  POSTCOPY: 1 << 0,
} as const;

/** Job types, indexed by libvirt's `virDomainJobType` number. */
export const JOB_TYPES = ['none', 'bounded', 'unbounded', 'completed', 'failed', 'cancelled'] as const;
/** A job type: `'unbounded'` while a migration runs, `'completed'`/`'failed'` for completed stats. */
export type JobType = (typeof JOB_TYPES)[number];

/** Job operations, indexed by libvirt's `virDomainJobOperation` number. */
export const JOB_OPERATIONS = [
  'unknown',
  'start',
  'save',
  'restore',
  'migration_in',
  'migration_out',
  'snapshot',
  'snapshot_revert',
  'dump',
  'backup',
  'snapshot_delete',
] as const;
/** The operation a job belongs to. */
export type JobOperation = (typeof JOB_OPERATIONS)[number];
