// The shared image-backend conformance suite against Qcow2Backend on the local filesystem with
// the real qemu-img (no dev stack needed). `cloneableImage` pre-caches the image, so the create
// that follows is an overlay on an already cached base: method `cloned`.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readdir } from 'node:fs/promises';
import { describeBackendConformance, sourceImageFromBytes } from '@ephemera/image-backend';
import { createFixture, type Fixture } from '../support/fixture.js';

let fx: Fixture | undefined;

describeBackendConformance(
  { describe, it, beforeAll, afterAll },
  'qcow2',
  async () => {
    fx = await createFixture();
    const f = fx;
    return {
      backend: f.backend,
      cloneableImage: async (content) => {
        const img = sourceImageFromBytes(content);
        await f.backend.cacheImage(img);
        return img;
      },
      readDisk: (disk, length) => f.read(disk, length),
      teardown: async () => {
        // Everything the suite made is gone: only the cache remains, and no temporary files.
        const left = (await readdir(f.backend.instancesDir)).filter((n) => n !== '_base');
        expect(left).toEqual([]);
        const base = await readdir(f.backend.baseDir);
        expect(base.filter((n) => n.startsWith('.tmp-') || n.endsWith('.lock'))).toEqual([]);
        const cleaned = await f.backend.cleanupBases({ olderThanMs: 0 });
        expect(cleaned.kept).toEqual([]);
        expect(await readdir(f.backend.baseDir)).toEqual([]);
        await f.destroy();
      },
    };
  },
  { imageBytes: 1024 * 1024, blankBytes: 8 << 20, growBytes: 16 << 20 },
);
