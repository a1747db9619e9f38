/**
 * `@ephemera/libvirt-napi`: a Node-API binding to libvirt (the system library, via
 * node-addon-api). Typed, promise-based, with domain lifecycle and connection-close events
 * delivered from libvirt's event loop running on its own native thread.
 *
 * ```ts
 * import { connect, ErrorCode, isLibvirtError } from '@ephemera/libvirt-napi';
 * const conn = await connect('qemu:///system');
 * conn.on('lifecycle', (ev) => console.log(ev.domain.name, ev.event, ev.detail));
 * const dom = await conn.defineXML(xml);
 * await dom.create();
 * ```
 */
export { connect, libvirtVersion, parseVersion, Connection } from './connection.js';
export type {
  ConnectOptions,
  ConnectionEvents,
  DomainCapabilitiesOptions,
  LibvirtVersion,
  WaitForLifecycleOptions,
} from './connection.js';
export { Domain } from './domain.js';
export type { DomainInfo } from './domain.js';
export { migrateTypedParams, jobStatsFromRaw } from './migration.js';
export type { MigrateParams, JobStats } from './migration.js';
export { Secret } from './secret.js';
export { LibvirtError, isLibvirtError, ErrorLevel } from './errors.js';
export { ErrorCode, ErrorDomain } from './codes.js';
export type { ErrorCodeName, ErrorDomainName } from './codes.js';
export { LibvirtLoadError } from './native.js';
export {
  DOMAIN_STATES,
  DOMAIN_STATE_REASONS,
  LIFECYCLE_EVENTS,
  LIFECYCLE_EVENT_DETAILS,
  CLOSE_REASONS,
  SECRET_USAGE_TYPES,
  domainStateInfo,
  lifecycleEvent,
  ListDomainsFlags,
  DefineFlags,
  StartFlags,
  DomainXMLFlags,
  UndefineFlags,
  DeviceModifyFlags,
  ShutdownFlags,
  RebootFlags,
  DestroyFlags,
  ListSecretsFlags,
  MigrateFlags,
  JobStatsFlags,
  AbortJobFlags,
  MigrateMaxSpeedFlags,
  JOB_TYPES,
  JOB_OPERATIONS,
} from './constants.js';
export type {
  DomainState,
  DomainStateReason,
  DomainStateInfo,
  LifecycleEventType,
  LifecycleEventDetail,
  LifecycleEvent,
  CloseReason,
  SecretUsageType,
  JobType,
  JobOperation,
} from './constants.js';
