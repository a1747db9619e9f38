// Golden images through the driver (images.rbd.goldenImages): `image explain` says whether a
// spawn builds or reuses the golden image, and `gc --cache` (Driver.gcCache) keeps a golden image
// with clones and removes one whose Glance image is gone. Real Glance and Ceph.
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadStack } from '@ephemera/testkit';
import { patternBytes } from '@ephemera/image-backend';
import { sourceImageFromGlance, type Driver } from '@ephemera/driver';
import { stackDriver, stateUnder } from './support.js';

const run = promisify(execFile);
const MiB = 1024 * 1024;
let dir: string;
let driver: Driver;
let imageId: string | undefined;
const disk = { instance: randomUUID(), name: 'disk' };

async function glanceFetch(method: string, path: string, body?: string | Uint8Array, type?: string): Promise<Response> {
  return fetch(`${loadStack().glance.url}${path}`, {
    method,
    ...(body ? { body, headers: { 'content-type': type ?? 'application/json' } } : {}),
  });
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'eph-golden-cache-'));
  driver = await stackDriver({ ...stateUnder(dir), images: { rbd: { goldenImages: true } } });
  // A qcow2 in Glance's rbd store: not cloneable, so spawns use a golden image.
  const raw = new Uint8Array(4 * MiB);
  raw.set(patternBytes(MiB, 7), MiB);
  await writeFile(join(dir, 'i.raw'), raw);
  await run('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', join(dir, 'i.raw'), join(dir, 'i.qcow2')], {
    timeout: 60_000,
  });
  const created = await glanceFetch(
    'POST',
    '/v2/images',
    JSON.stringify({ name: 'ephemera-golden-cache-test', disk_format: 'qcow2', container_format: 'bare' }),
  );
  imageId = ((await created.json()) as { id: string }).id;
  const put = await glanceFetch(
    'PUT',
    `/v2/images/${imageId}/file`,
    await readFile(join(dir, 'i.qcow2')),
    'application/octet-stream',
  );
  expect(put.status).toBe(204);
});

afterAll(async () => {
  await driver?.backends
    .get('rbd')
    .remove(disk)
    .catch(() => undefined);
  if (imageId) await glanceFetch('DELETE', `/v2/images/${imageId}`);
  // Whatever the test left of the golden image (a failure before gc removed it).
  await driver?.gcCache({ unusedSeconds: 0 }).catch(() => undefined);
  await driver?.close();
  await rm(dir, { recursive: true, force: true });
});

describe('golden images through the driver', () => {
  it('explain says build then reuse; gc --cache keeps it while a disk clones it and removes it once the Glance image is gone', async () => {
    const id = imageId!;
    const name = `vms/ephemera-golden-${id}`;
    expect(await driver.explain(id, 'rbd')).toContain(`golden image ${name}: built by this spawn, then cloned`);
    const rbd = driver.backends.get('rbd');
    const r = await rbd.createFromImage(disk, sourceImageFromGlance(driver.glance, await driver.glance.getImage(id)));
    expect(r.method).toBe('cloned');
    expect(await driver.explain(id, 'rbd')).toContain(`golden image ${name}: reused (cloned)`);
    const mine = async (opts: Parameters<Driver['gcCache']>[0]) =>
      (await driver.gcCache(opts)).filter((e) => e.imageId === id);
    expect(await mine({ unusedSeconds: 0 })).toEqual([
      expect.objectContaining({ backend: 'rbd', kind: 'golden', action: 'kept', children: 1 }),
    ]);
    await rbd.remove(disk);
    // Still in Glance and just used: kept with the default unused time (a day).
    expect(await mine({})).toEqual([expect.objectContaining({ action: 'kept', children: 0 })]);
    expect((await glanceFetch('DELETE', `/v2/images/${id}`)).status).toBe(204);
    imageId = undefined;
    expect(await mine({ dryRun: true })).toEqual([
      expect.objectContaining({
        action: 'kept',
        reason: expect.stringMatching(/would be removed: its Glance image is gone/),
      }),
    ]);
    expect(await mine({})).toEqual([
      expect.objectContaining({ action: 'removed', reason: 'its Glance image is gone' }),
    ]);
    expect(await mine({})).toEqual([]);
  });
});
