/**
 * `@ephemera/backend-rbd`: the Ceph RBD image backend. Instance disks are RBD images named
 * `<instance-uuid>_<disk>` in one pool. Raw Glance images stored in this cluster's rbd store are
 * cloned copy-on-write (clone format 2 when the cluster allows, else format 1 of the protected
 * snapshot); anything else is streamed into RBD with parallel aio writes, zero blocks skipped
 * and the declared hash verified on the way, never staged on local disk (non-raw images are
 * converted by `qemu-img` reading the stream through a loopback NBD server). With `goldenImages`,
 * such an image is imported or converted once per cluster into a cached raw golden image that
 * every disk clones (one builder elected by a RADOS lock with a lease). Built on
 * `@ephemera/ceph-rbd-napi` (librbd) and `@ephemera/qemu-img-wrapper` (format inspector).
 *
 * @packageDocumentation
 */

// The backend and its options only: location and mon_host parsing, the clone-format rule and the
// loopback NBD server are internals (tests import them from their source files).
export { RbdBackend } from './backend.js';
export type { DirectSnapshotTarget, RbdBackendOptions } from './options.js';
export type { GoldenImageOptions } from './golden.js';
export type { GoldenGcEntry, GoldenGcOptions, GoldenImagePlan, GoldenImages } from './golden-cache.js';
