/**
 * `@ephemera/backend-qcow2`: the local qcow2 image backend of Ephemera.
 *
 * - Instance disks are qcow2 overlays (`qemu-img create -f qcow2 -b <base> -F <raw|qcow2>`) on a
 *   host-wide image cache, in `<instancesDir>/<uuid>_<name>/disk.qcow2` (`disk.raw` for raw blank
 *   disks): the format is fixed by the file name, never probed from the content.
 * - The cache (`<instancesDir>/_base` by default) holds one base per image, named by the sha1 of
 *   the image id; one fetch per image however many concurrent creates, in one or several
 *   processes (a promise per image plus a lock directory per image); every fetched image is
 *   checksum-verified and passes the format inspector of `@ephemera/qemu-img-wrapper`; non-raw
 *   images are converted to raw once (`forceRaw`, default true).
 * - resize (grow), internal snapshots and rollback, flatten, blank qcow2/raw disks, idempotent
 *   remove, list by instance, capacity from statfs, and cache clean-up of unused bases.
 *
 * @packageDocumentation
 */

// The backend and the types of its methods: the cache's naming and the qcow2 header reader are
// internals (tests import them from their source files).
export { Qcow2Backend, type Qcow2BackendOptions, type Preallocation } from './backend.js';
export type { BaseFormat, CacheCleanupResult, CachedBase } from './base-cache.js';
export type { IncomingDisk, MigrationDiskSpec } from './migration.js';
