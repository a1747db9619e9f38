// What the disk operations (create, snapshots, resize, remove) share with the backend that runs them.
import type { DiskFormat } from '@ephemera/image-backend';
import type { QemuImg } from '@ephemera/qemu-img-wrapper';
import type { Preallocation } from './backend.js';
import type { BaseCache } from './base-cache.js';
import type { DiskStore } from './layout.js';

/** @internal a Qcow2Backend's settings and collaborators, resolved from its options. */
export interface Qcow2Context {
  readonly store: DiskStore;
  readonly qemu: QemuImg;
  readonly cache: BaseCache;
  readonly diskFormats: readonly DiskFormat[];
  readonly preallocation: Preallocation;
  readonly clusterSize: number | undefined;
  readonly convertTimeoutMs: number;
  readonly busyTimeoutMs: number;
  /** False when preallocation makes disks thick: then free space is checked before writing. */
  readonly thin: boolean;
}
