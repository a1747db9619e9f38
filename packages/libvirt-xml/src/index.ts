/**
 * `@ephemera/libvirt-xml`: typed, injection-safe builders for libvirt `<disk>` and `<domain>`
 * XML. Pure TypeScript, no dependencies. Every value is validated (a `LibvirtXmlError` names
 * the field) and every attribute and text is escaped; control characters are refused.
 *
 * @packageDocumentation
 */

export type { LibvirtXmlErrorCode } from './errors.js';
export { LIBVIRT_XML_ERROR_CODES, LibvirtXmlError, isLibvirtXmlError } from './errors.js';

export type {
  BlockSourceSpec,
  CacheMode,
  DiskBus,
  DiskDriverSpec,
  DiskSourceSpec,
  DiskSpec,
  FileSourceSpec,
  LuksEncryption,
  NetworkHostSpec,
  RbdAuthSpec,
  RbdSourceSpec,
} from './disk.js';
export { checkHost, diskXml } from './disk.js';

export type { IoTune } from './iotune.js';
export { IOTUNE_VALUE_MAX, checkIoTune, iotuneFromFlavor } from './iotune.js';

export type {
  CpuSpec,
  DeviceNode,
  DeviceSpec,
  ExtraDeviceElement,
  InterfaceModel,
  NetworkSpec,
} from './devices.js';
export { EXTRA_DEVICE_ELEMENTS } from './devices.js';
export type { DomainSpec, InstanceMetadata, LifecycleAction } from './domain.js';
export { EPHEMERA_METADATA_NS, checkDomainName, domainXml } from './domain.js';
// The XML tree (diskElement, domainElement, serialize, escaping) stays internal: callers get
// validated, escaped strings only.
