// The shared image-backend conformance suite against RbdBackend on the dev stack's Ceph, as the
// restricted client.ephemera; cloneable images are real Glance uploads (rbd store), and direct
// snapshots go to the images pool with the Glance user's credentials.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeBackendConformance } from '@ephemera/image-backend';
import { RbdBackend } from '../../src/index.js';
import { parseRbdUrl } from '../../src/locations.js';
import {
  GlanceImages,
  adminCluster,
  closeAdmin,
  glanceDirectSnapshot,
  newBackend,
  readDisk,
  stack,
} from '../support/stack.js';

const glance = new GlanceImages();
const directSnapshots: string[] = [];

describeBackendConformance(
  { describe, it, beforeAll, afterAll },
  'rbd',
  async () => {
    const backend = await newBackend({ directSnapshot: glanceDirectSnapshot() });
    // Record where direct snapshots land so the teardown removes them.
    const orig = backend.directSnapshot.bind(backend);
    backend.directSnapshot = async (disk, opts) => {
      const res = await orig(disk, opts);
      directSnapshots.push(res.url);
      return res;
    };
    return {
      backend,
      cloneableImage: async (content) => glance.source(await glance.upload(content)),
      readDisk: (disk, length) => readDisk(disk, length),
      teardown: async () => {
        await backend.close();
        const images = await (await adminCluster()).openIoCtx(stack().ceph.pools.images);
        try {
          for (const url of directSnapshots) {
            const u = parseRbdUrl(url)!;
            // The suite undoes its direct snapshot with removeDirectSnapshot: usually gone already.
            const img = await images.open(u.image).catch((e: unknown) => {
              if ((e as Error).name === 'ImageNotFound' || /ENOENT/.test(String(e))) return undefined;
              throw e;
            });
            if (!img) continue;
            await img.unprotectSnapshot(u.snapshot);
            await img.removeSnapshot(u.snapshot);
            await img.close();
            await images.remove(u.image);
          }
        } finally {
          await images.close();
          await closeAdmin();
        }
        await glance.deleteAll();
        expect(backend).toBeInstanceOf(RbdBackend);
      },
    };
  },
  { blankBytes: 8 << 20, growBytes: 16 << 20 },
);
