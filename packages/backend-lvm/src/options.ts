import type { WipeMethod } from './device.js';

/** Configuration of {@link LvmBackend}. */
export interface LvmBackendOptions {
  /** The volume group that holds the disks (it must exist). */
  volumeGroup: string;
  /** How a disk's data is destroyed on `remove` (default `zero`). */
  wipe?: WipeMethod;
  /**
   * Whether blank disks and the tail of grown disks are zeroed, so a new disk never shows a
   * former disk's data (default true; `blkdiscard --zeroout`, cheap on thin-backed PVs).
   */
  zeroNewSpace?: boolean;
  /** `auto` (default) detects device-mapper; `true`/`false` force a mode. */
  deviceMapper?: 'auto' | boolean;
  /** Restrict LVM's device scan to these devices (`--devices`), e.g. the VG's PVs. */
  devices?: readonly string[];
  /** Per LVM command timeout (default 60 s). */
  commandTimeoutMs?: number;
  /** Directory for spooling non-raw images before `qemu-img convert` (default: the OS temp dir). */
  tempDir?: string;
  /** Default `busyTimeoutMs` of `remove` (default 10 s). */
  busyTimeoutMs?: number;
}
