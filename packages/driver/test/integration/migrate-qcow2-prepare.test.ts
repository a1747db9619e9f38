// The destination side of a qcow2 block migration without a guest: preLiveMigration fetches the
// image into this host's cache and pre-creates the overlays (journaled), a rollback removes the
// overlays and keeps the cache; bad input is refused with a typed error and leaves nothing, and a
// disk of the instance that is already here is refused and left alone. The real stack's Glance
// and the real qcow2 backend.
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createDriver,
  isDriverError,
  loadConfig,
  type BlockMigrationDisk,
  type Driver,
  type InstanceRecord,
} from '@ephemera/driver';
import { GlanceClient } from '@ephemera/glance';
import { guestImage, loadStack } from '@ephemera/testkit';

const MiB = 1024 * 1024;
let dir: string;
let b: Driver;
let glance: GlanceClient;
let imageId: string;
const A_URI = 'qemu+unix:///system?socket=/nonexistent/source-host';

type Cache = { cachedBase(imageId: string): Promise<{ path: string } | undefined> };

function recordOf(uuid: string, image = imageId): InstanceRecord {
  return {
    uuid,
    name: 'qcow2-incoming',
    domainName: b.domainName(uuid),
    imageId: image,
    backend: 'qcow2',
    flavor: { vcpus: 1, memoryMiB: 64, rootGiB: 0, swapMiB: 4 },
    disks: [
      { name: 'disk', target: 'vda', sizeBytes: 2 * MiB },
      { name: 'disk.swap', target: 'vdb', sizeBytes: 4 * MiB },
    ],
    consolePath: '/nonexistent/console.log',
    createdAt: new Date().toISOString(),
    rootDisk: {
      method: 'cloned',
      durationMs: 1,
      sizeBytes: 2 * MiB,
      plan: { method: 'clone', handler: 'x', location: 'x', declined: [] },
    },
  };
}

const DISKS: BlockMigrationDisk[] = [
  { name: 'disk', sizeBytes: 2 * MiB, format: 'qcow2', backed: true },
  { name: 'disk.swap', sizeBytes: 4 * MiB, format: 'raw', backed: false },
];

/** What B has of instance `uuid`: journal entries, disks, and entries in its instances directory. */
async function leftovers(uuid: string): Promise<unknown[]> {
  return [
    ...(await b.journal.entries()).filter((e) => e.instance === uuid),
    ...(await b.backends.get('qcow2').list({ instance: uuid })),
    ...(await readdir(b.config.instancesPath)).filter((n) => n.includes(uuid) || n.startsWith('.')),
  ];
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'eph-migrate-qcow2-'));
  const stack = loadStack();
  const { config } = loadConfig({
    env: {},
    stack,
    overrides: {
      stateDir: join(dir, 'b'),
      host: { id: 'qcow2-incoming-b' },
      images: { type: 'qcow2' },
      log: { level: 'warn' },
    },
  });
  b = await createDriver({ config, reconcile: false });
  glance = new GlanceClient({ url: stack.glance.url });
  const img = await glance.createImage({ name: 'e2e-qcow2-incoming', disk_format: 'raw', container_format: 'bare' });
  imageId = img.id;
  await glance.upload(img.id, await readFile(await guestImage({ marker: 'qcow2-incoming' })));
  await glance.waitForStatus(img.id, ['active'], { timeoutMs: 120_000 });
}, 300_000);

afterAll(async () => {
  if (imageId) await glance.deleteImage(imageId).catch(() => undefined);
  await b?.close();
  await rm(dir, { recursive: true, force: true });
});

describe('preLiveMigration of a qcow2 instance (destination side)', () => {
  it('fetches the base into this cache, pre-creates same-size copies; a rollback removes them and keeps the cache', async () => {
    const uuid = randomUUID();
    expect(await (b.backends.get('qcow2') as unknown as Cache).cachedBase(imageId)).toBeUndefined();
    const target = await b.preLiveMigration(recordOf(uuid), A_URI, DISKS);
    const base = await (b.backends.get('qcow2') as unknown as Cache).cachedBase(imageId);
    expect(base).toBeDefined();
    expect(target.disks?.map((d) => d.name)).toEqual(['disk', 'disk.swap']);
    const disks = await b.backends.get('qcow2').list({ instance: uuid });
    expect(disks.map((d) => [d.disk.name, d.sizeBytes, d.format, d.parent ?? null, d.owner])).toEqual([
      ['disk', 2 * MiB, 'qcow2', base!.path, null],
      ['disk.swap', 4 * MiB, 'raw', null, null],
    ]);
    for (const d of target.disks!) expect(existsSync(d.path)).toBe(true);
    expect(await b.journal.entries()).toMatchObject([{ op: 'migrate-in', instance: uuid }]);

    await b.rollbackLiveMigrationAtDestination(uuid);
    expect(await leftovers(uuid)).toEqual([]);
    expect(existsSync(base!.path)).toBe(true);
  });

  it('refuses bad disk lists and a missing image with typed errors, leaving nothing', async () => {
    const uuid = randomUUID();
    for (const [disks, code] of [
      [undefined, 'INVALID_ARGUMENT'],
      [[DISKS[0]!], 'INVALID_ARGUMENT'],
      [[DISKS[0]!, { ...DISKS[1]!, name: 'disk.local' }], 'INVALID_ARGUMENT'],
      [[{ ...DISKS[0]!, sizeBytes: 0 }, DISKS[1]!], 'INVALID_ARGUMENT'],
    ] as const) {
      const err = await b
        .preLiveMigration(recordOf(uuid), A_URI, disks as unknown as BlockMigrationDisk[])
        .catch((e: unknown) => e);
      expect(isDriverError(err, code)).toBe(true);
      expect(await leftovers(uuid)).toEqual([]);
    }
    const err = await b.preLiveMigration(recordOf(uuid, randomUUID()), A_URI, DISKS).catch((e: unknown) => e);
    expect(isDriverError(err, 'IMAGE_NOT_FOUND')).toBe(true);
    expect(await leftovers(uuid)).toEqual([]);
  });

  it('refuses an instance whose disk is already here (INSTANCE_EXISTS) and leaves that disk alone', async () => {
    const uuid = randomUUID();
    await b.backends.get('qcow2').createBlank({ instance: uuid, name: 'disk' }, MiB);
    const err = await b.preLiveMigration(recordOf(uuid), A_URI, DISKS).catch((e: unknown) => e);
    expect(isDriverError(err, 'INSTANCE_EXISTS')).toBe(true);
    expect((await b.backends.get('qcow2').list({ instance: uuid })).map((d) => d.disk.name)).toEqual(['disk']);
    expect(await b.journal.entries()).toEqual([]);
    await b.backends.get('qcow2').remove({ instance: uuid, name: 'disk' });
  });
});
