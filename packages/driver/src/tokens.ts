/** inversify service identifiers of the driver (`Symbol.for`, so separately built copies agree). */
export const DRIVER_TYPES = {
  /** The validated {@link DriverConfig}. */
  Config: Symbol.for('@ephemera/driver:Config'),
  /** The pino logger. */
  Logger: Symbol.for('@ephemera/driver:Logger'),
  /** The {@link Journal}. */
  Journal: Symbol.for('@ephemera/driver:Journal'),
  /** The libvirt `Connection` (`@ephemera/libvirt-napi`). */
  Libvirt: Symbol.for('@ephemera/driver:Libvirt'),
  /** The Ceph `Cluster` (`@ephemera/ceph-rbd-napi`), or null when no backend needs Ceph. */
  Ceph: Symbol.for('@ephemera/driver:Ceph'),
  /** {@link CephContext}: fsid, secret UUID, keyring path. */
  CephContext: Symbol.for('@ephemera/driver:CephContext'),
  /** The embedder's `customizeDomain` hook ({@link DomainHook}), or null. */
  DomainHook: Symbol.for('@ephemera/driver:DomainHook'),
  /** The {@link Driver}. */
  Driver: Symbol.for('@ephemera/driver:Driver'),
} as const;
