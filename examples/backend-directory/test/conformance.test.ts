// #region conformance
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { describeBackendConformance } from '@ephemera/image-backend';
import { DirectoryBackend } from '../src/index.js';

// The contract's shared suite, against the real file system: every capability in its claimed
// or unclaimed form, typed errors, concurrent creates, and nothing left behind after a failing,
// short, corrupt or aborted import.
describeBackendConformance(
  { describe, it, beforeAll, afterAll },
  'directory',
  async () => {
    const directory = await mkdtemp(join(tmpdir(), 'ephemera-dir-backend-'));
    const backend = await DirectoryBackend.create({ directory });
    return {
      backend,
      // Lets the suite check that the bytes arrived intact.
      readDisk: async (disk, length) => {
        const file = await open(backend.pathOf(disk), 'r');
        try {
          const buf = Buffer.alloc(length);
          const { bytesRead } = await file.read(buf, 0, length, 0);
          return buf.subarray(0, bytesRead);
        } finally {
          await file.close();
        }
      },
      teardown: () => rm(directory, { recursive: true, force: true }),
    };
  },
  { thinProbeBytes: 4 * 1024 ** 3 },
);
// #endregion conformance
