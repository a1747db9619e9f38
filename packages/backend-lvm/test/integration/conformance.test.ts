// The shared image-backend conformance suite against LvmBackend on a real VG (a loop device over
// a sparse file; without device-mapper, LVs are exposed through loop extent mappings).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeBackendConformance } from '@ephemera/image-backend';
import { listLoops } from '../../src/loop.js';
import { createBackendFixture, type BackendFixture } from '../support/backend-fixture.js';

let fx: BackendFixture | undefined;

describeBackendConformance({ describe, it, beforeAll, afterAll }, 'lvm', async () => {
  fx = await createBackendFixture({ sizeMiB: 512, extentMiB: 4 });
  const f = fx;
  return {
    backend: f.backend,
    readDisk: (disk, length) => f.read(disk, length),
    teardown: async () => {
      const pv = f.tvg.pv;
      const file = f.tvg.file;
      await f.destroy();
      const left = (await listLoops()).filter((l) => l.backFile === pv || l.backFile === file);
      expect(left, 'no loop device left over the test VG').toEqual([]);
    },
  };
});
