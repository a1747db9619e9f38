/**
 * `@ephemera/driver`: the Ephemera hypervisor driver. It composes the Glance client and location
 * resolver, the image backends (RBD, qcow2, LVM), the libvirt XML builders and the libvirt
 * binding with inversify, and boots instances from copy-on-write clones of Glance images.
 *
 * ```ts
 * import 'reflect-metadata';
 * import { createDriver, loadConfig } from '@ephemera/driver';
 * const driver = await createDriver({ configOptions: { file: '/etc/ephemera/driver.json' } });
 * const r = await driver.spawn({ instance: crypto.randomUUID(), image: imageId,
 *   flavor: { vcpus: 1, memoryMiB: 64, rootGiB: 1 } });
 * console.log(r.rootDisk.method, r.timings);
 * await driver.destroy(r.instance.uuid);
 * await driver.close();
 * ```
 * @packageDocumentation
 */
import 'reflect-metadata';

export type {
  CephUserLike,
  ConfigInput,
  ConfigSource,
  DriverConfig,
  LoadConfigOptions,
  LoadedConfig,
  OptionSpec,
  OptionType,
  StackInfoLike,
} from './config.js';
// The host id check lives with the owner record it is written into.
export { isHostId } from '@ephemera/image-backend';
export type { AdoptResult } from './adopt.js';
export {
  CONFIG_SCHEMA,
  configReference,
  configValue,
  driverConfigSchema,
  defaultHostId,
  fromStack,
  loadConfig,
  redactConfig,
} from './config.js';
// Which keyring a ceph.conf leads to and the secret UUID the driver derives: for operators checking a non-admin user's setup (docs/operations.md).
export { defaultSecretUuid, keyringPath, readCephKey } from './ceph.js';

export type { EncryptionRequest, InstanceEncryption } from './encryption.js';
export { FileKeyProvider, encryptionRequest, volumeSecretUuid } from './encryption.js';
// The key-provider contract lives with the backend contract (an embedder implements it).
export type { KeyProvider } from '@ephemera/image-backend';
export { KEY_PROVIDER } from '@ephemera/image-backend';

export type { DriverErrorCode } from './errors.js';
export { ConfigError, DRIVER_ERROR_CODES, DriverError, isDriverError } from './errors.js';

export type { DriverEvents, DriverProgressEvent, InstanceLifecycleEvent, SpawnStep, StepEvent } from './events.js';

// `Driver.journal` is a Journal; its parser and the per-key mutex are internals.
export type { JournalEntry, JournalRecord, JournalResource, JournaledOp } from './journal.js';
export { Journal, JournalOp } from './journal.js';

export type { BackendName, BootableBackendName } from './backend-names.js';
export { BACKEND_NAMES, BOOTABLE_BACKENDS, isBootableBackend } from './backend-names.js';
export type { BackendContext, BackendPlugin } from './backends.js';
export { BUILTIN_BACKENDS, lvmPlugin, memoryPlugin, qcow2Plugin, rbdPlugin } from './backends.js';

export type {
  CephContext,
  Flavor,
  GcDisk,
  GcOptions,
  GcReport,
  PendingOperation,
  InstanceDisk,
  InstanceInfo,
  InstanceRecord,
  ReconcileAction,
  RootDiskReport,
  SnapshotResult,
  SpawnRequest,
  SpawnResult,
} from './types.js';
export { Driver } from './driver.js';
export type { CacheGcEntry, CacheGcOptions } from './golden-cache.js';
export type { DomainHook, DomainHookContext, DomainOptions } from './domain-spec.js';
// The spec a DomainHook receives and returns: an embedder needs no direct dependency on libvirt-xml.
export type { CpuSpec, DeviceNode, DeviceSpec, DomainSpec, NetworkSpec } from '@ephemera/libvirt-xml';
export type {
  MigrateOptions,
  MigrateResult,
  MigrationDestination,
  MigrationProgress,
  MigrationTarget,
} from './migration.js';
export { DEFAULT_MIGRATE_TIMEOUT_MS } from './migration.js';
export type { BlockMigrationDisk, IncomingDiskPath } from './migration-qcow2.js';
export type { EvacuateOptions, EvacuateResult, EvacuationSource } from './evacuation.js';
export { DEFAULT_EVACUATE_PROBE_MS } from './evacuation.js';

export type { CreateDriverOptions, DriverHandle } from './container.js';
export { DriverBackendRegistry, createDriver, createDriverContainer } from './container.js';

export { sourceImageFromGlance } from './source-image.js';
export type { Logger } from './logger.js';
export { createLogger } from './logger.js';
export { DRIVER_TYPES } from './tokens.js';

export type { UploadImageOptions } from './images.js';
export { glanceAuth, glanceClient, glanceClientOptions, uploadImage } from './images.js';
