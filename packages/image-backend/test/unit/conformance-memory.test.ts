import { afterAll, beforeAll, describe, it } from 'vitest';
import { MemoryBackend, describeBackendConformance, sourceImageFromBytes } from '@ephemera/image-backend';

// The shared suite, run against the in-memory reference backend in its two extreme shapes, so
// every branch of the suite (capable and not capable) is exercised here before real backends
// inherit it.
const vitest = { describe, it, beforeAll, afterAll };

describeBackendConformance(vitest, 'memory (every capability, thin)', async () => {
  const backend = new MemoryBackend({ name: 'memory-full' });
  return {
    backend,
    cloneableImage: async (content) => {
      const id = globalThis.crypto.randomUUID();
      return sourceImageFromBytes(content, { id, locations: [backend.addBaseImage(id, content)] });
    },
    readDisk: (disk, length) => backend.read(disk, 0, length),
  };
});

describeBackendConformance(vitest, 'memory (no optional capability, thick, raw only)', async () => {
  const backend = new MemoryBackend({
    name: 'memory-minimal',
    diskFormats: ['raw'],
    totalBytes: 4 * 1024 ** 3,
    capabilities: {
      clone: false,
      snapshot: false,
      rollback: false,
      flatten: false,
      resize: false,
      sharedStorage: false,
      directSnapshot: false,
      encryption: false,
      discard: false,
      thin: false,
    },
  });
  return { backend, readDisk: (disk, length) => backend.read(disk, 0, length) };
});

describeBackendConformance(vitest, 'memory (snapshots without rollback, no readDisk)', async () => ({
  backend: new MemoryBackend({
    name: 'memory-partial',
    capabilities: { rollback: false, clone: false, flatten: false },
  }),
}));
