/**
 * `@ephemera/backend-lvm`: the LVM image backend. One linear LV per instance disk, named
 * `<instance-uuid>_<disk>`, in a configured volume group; images are written onto the LV's
 * block device (raw streamed, qcow2 through `qemu-img convert`).
 *
 * On a kernel without device-mapper, LVM runs metadata-only (`--driverloaded n`): LVs are
 * allocated contiguously and exposed through a loop device over the PV at the LV's extents
 * (`pe_start + first_extent * extent_size`), exactly the linear mapping dm would make.
 *
 * @packageDocumentation
 */

// The backend, its options and the device-mapper probe: the lvm2 wrapper and the loop extent
// mapping are internals (tests import them from their source files).
export { LvmBackend, type LvmBackendOptions } from './backend.js';
export type { WipeMethod } from './device.js';
export { detectDeviceMapper } from './lvm.js';
