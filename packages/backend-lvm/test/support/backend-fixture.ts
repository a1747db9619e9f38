import { open } from 'node:fs/promises';
import type { DiskRef } from '@ephemera/image-backend';
import { LvmBackend, type LvmBackendOptions } from '../../src/index.js';
import { createTestVg, type TestVg } from './vg-fixture.js';

/** A real VG on a loop device plus an `LvmBackend` over it. */
export interface BackendFixture {
  tvg: TestVg;
  backend: LvmBackend;
  /** Reads `length` bytes at `offset` of a disk through its block device. */
  read(disk: DiskRef, length: number, offset?: number): Promise<Uint8Array>;
  /** Unmaps all, destroys the VG and its loop devices. */
  destroy(): Promise<void>;
}

export async function createBackendFixture(
  options: { sizeMiB?: number; extentMiB?: number } & Partial<LvmBackendOptions> = {},
): Promise<BackendFixture> {
  const tvg = await createTestVg({ sizeMiB: options.sizeMiB ?? 512, extentMiB: options.extentMiB ?? 4 });
  let backend: LvmBackend;
  try {
    backend = await LvmBackend.create({ ...options, volumeGroup: tvg.vg, devices: [tvg.pv] });
  } catch (e) {
    await tvg.destroy();
    throw e;
  }
  return {
    tvg,
    backend,
    async read(disk, length, offset = 0) {
      const src = await backend.diskSource(disk);
      const fh = await open(src.path, 'r');
      try {
        const buf = Buffer.alloc(length);
        const { bytesRead } = await fh.read(buf, 0, length, offset);
        return buf.subarray(0, bytesRead);
      } finally {
        await fh.close();
      }
    },
    async destroy() {
      await tvg.destroy();
    },
  };
}
