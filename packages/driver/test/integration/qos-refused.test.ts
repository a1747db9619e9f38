// Flavor QoS extra specs that libvirt defines but QEMU refuses at domain start (a `*_max` without
// its base, or below it) are refused by spawn before anything exists: no journal entry, no disk,
// no instance directory, no domain, not even a `spawning` event. Real Glance, Ceph and libvirtd.
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type Connection } from '@ephemera/libvirt-napi';
import { GlanceClient } from '@ephemera/glance';
import { loadStack } from '@ephemera/testkit';
import { DriverError, createDriver, loadConfig, type Driver } from '@ephemera/driver';

let dir: string;
let driver: Driver;
let conn: Connection;
let glance: GlanceClient;
let imageId: string | undefined;
const events: { instance: string; what: string }[] = [];

beforeAll(async () => {
  const stack = loadStack();
  dir = await mkdtemp(join(tmpdir(), 'eph-qos-refused-'));
  const { config } = loadConfig({
    env: {},
    stack,
    overrides: { stateDir: join(dir, 'state'), instancesPath: join(dir, 'instances'), log: { level: 'warn' } },
  });
  driver = await createDriver({ config, reconcile: false });
  driver.on('lifecycle', (e) => events.push({ instance: e.instance, what: `lifecycle:${e.state}` }));
  driver.on('step', (e) => events.push({ instance: e.instance, what: `step:${e.step}:${e.status}` }));
  conn = await connect(stack.libvirt.uri);
  // A real, usable image: without the refusal, spawn would clone it and get as far as QEMU.
  glance = new GlanceClient({ url: stack.glance.url });
  const img = await glance.createImage({ name: 'qos-refused', disk_format: 'raw', container_format: 'bare' });
  imageId = img.id;
  await glance.upload(img.id, Buffer.alloc(1 << 20));
});

afterAll(async () => {
  await driver?.close();
  await conn?.close();
  if (imageId) await glance.deleteImage(imageId).catch(() => undefined);
  if (dir) await rm(dir, { recursive: true, force: true });
});

const FLAVOR = { name: 'qos', vcpus: 1, memoryMiB: 64, rootGiB: 0 };

describe('spawn refuses QoS extra specs QEMU would refuse at start', () => {
  const cases: [string, Record<string, string>, string, RegExp][] = [
    [
      'a *_max without its base',
      { 'quota:disk_read_bytes_sec_max': '20971520' },
      'quota:disk_read_bytes_sec_max',
      /needs quota:disk_read_bytes_sec\b/,
    ],
    [
      'a *_max below its base',
      { 'quota:disk_total_iops_sec': '500', 'quota:disk_total_iops_sec_max': '100' },
      'quota:disk_total_iops_sec_max',
      /100 is below quota:disk_total_iops_sec \(500\)/,
    ],
  ];
  it.each(cases)('%s: INVALID_ARGUMENT naming the key, nothing created', async (_what, extraSpecs, key, re) => {
    const uuid = randomUUID();
    const err = await driver
      .spawn({ instance: uuid, image: imageId!, flavor: { ...FLAVOR, extraSpecs } })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DriverError);
    expect(err).toMatchObject({ code: 'INVALID_ARGUMENT', instance: uuid });
    expect((err as Error).message).toContain(`${key}: `);
    expect((err as Error).message).toMatch(re);

    expect(events.filter((e) => e.instance === uuid)).toEqual([]);
    expect(await driver.journal.entries()).toEqual([]);
    for (const b of driver.backends.all()) expect(await b.list({ instance: uuid })).toEqual([]);
    expect(
      await stat(join(driver.config.instancesPath, uuid)).then(
        () => true,
        () => false,
      ),
    ).toBe(false);
    expect(
      await conn.lookupByUUID(uuid).then(
        () => true,
        () => false,
      ),
    ).toBe(false);
  });
});
