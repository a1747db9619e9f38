// Setup shared by the driver's integration tests: drivers on the dev stack and instance records
// written the way spawn writes them, so each test file keeps only what it tests.
import { randomUUID } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { loadStack } from '@ephemera/testkit';
import {
  createDriver,
  loadConfig,
  type ConfigInput,
  type Driver,
  type DriverConfig,
  type InstanceRecord,
} from '@ephemera/driver';
import type { DiskRef } from '@ephemera/image-backend';
import type { Connection } from '@ephemera/libvirt-napi';

/** The dev stack's configuration with `overrides` on top (environment ignored; log level warn unless overridden). */
export function stackConfig(overrides: ConfigInput): DriverConfig {
  return loadConfig({ env: {}, stack: loadStack(), overrides: { log: { level: 'warn' }, ...overrides } }).config;
}

/** A driver on the dev stack ({@link stackConfig}) that does not reconcile when it starts. */
export function stackDriver(overrides: ConfigInput): Promise<Driver> {
  return createDriver({ config: stackConfig(overrides), reconcile: false });
}

/** Overrides that keep a driver's state and instance files under `dir`. */
export const stateUnder = (dir: string): ConfigInput => ({
  stateDir: join(dir, 'state'),
  instancesPath: join(dir, 'instances'),
});

/** Undefines the domain `uuid` if libvirt has it (a test's clean-up). */
export async function undefineQuietly(conn: Connection | undefined, uuid: string): Promise<void> {
  const dom = await conn?.lookupByUUID(uuid).catch(() => undefined);
  if (dom) await dom.undefine().catch(() => undefined);
}

/** Whether libvirt has a domain of this UUID. */
export const domainExists = (conn: Connection, uuid: string): Promise<boolean> =>
  conn.lookupByUUID(uuid).then(
    () => true,
    () => false,
  );

/** Removes the rbd disks a test created, ignoring those already gone. */
export async function removeDisks(driver: Driver | undefined, disks: readonly DiskRef[]): Promise<void> {
  for (const d of disks)
    await driver?.backends
      .get('rbd')
      .remove(d)
      .catch(() => undefined);
}

/** The record of an instance with a 1 GiB cloned root disk on `d`, `fields` on top. */
export function instanceRecord(d: Driver, uuid: string, fields: Partial<InstanceRecord>): InstanceRecord {
  return {
    uuid,
    name: 'test',
    domainName: d.domainName(uuid),
    imageId: randomUUID(),
    backend: 'rbd',
    flavor: { vcpus: 1, memoryMiB: 32, rootGiB: 1 },
    disks: [{ name: 'disk', target: 'vda', sizeBytes: 1 << 30 }],
    consolePath: d.consolePath(uuid),
    createdAt: new Date().toISOString(),
    rootDisk: {
      method: 'cloned',
      durationMs: 1,
      sizeBytes: 1 << 30,
      plan: { method: 'clone', handler: 'x', location: 'x', declined: [] },
    },
    ...fields,
  };
}

/** Writes `rec` where `d` keeps its instance records (`<instancesPath>/<uuid>/instance.json`). */
export async function writeRecord(d: Driver, rec: InstanceRecord): Promise<void> {
  await mkdir(join(d.config.instancesPath, rec.uuid), { recursive: true });
  await writeFile(join(d.config.instancesPath, rec.uuid, 'instance.json'), JSON.stringify(rec));
}
