// Evacuation's failure paths (issue 19.5) on the real stack, without a second host: a dead host's
// disks made here (owner `evac-dead-host`), a source libvirtd URI that does not answer. A failed or
// interrupted evacuation gives the disks back and leaves nothing on this host; a host that comes
// back drops its record of an instance whose disks another host took, and only that.
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Journal, isDriverError, type Driver } from '@ephemera/driver';
import { INSTANCE_SPEC_KEY, formatInstanceSpec } from '../../src/instance-spec.js';
import { instanceRecord, removeDisks, stackDriver, stateUnder, writeRecord } from './support.js';

const MiB = 1024 * 1024;
const DEAD = 'evac-dead-host';
let dir: string;
let driver: Driver;
const left: { instance: string; name: string }[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'eph-evacuate-'));
  driver = await stackDriver({ ...stateUnder(dir), host: { id: 'evac-this-host' } });
});

afterAll(async () => {
  await removeDisks(driver, left);
  await driver?.close();
  await rm(dir, { recursive: true, force: true });
});

/** The disks of an instance of the dead host, with (or without) its recorded definition. */
async function deadHostInstance(domain?: Record<string, unknown>, record = true): Promise<string> {
  const uuid = randomUUID();
  const rbd = driver.backends.get('rbd');
  left.push({ instance: uuid, name: 'disk' }, { instance: uuid, name: 'disk.swap' });
  await rbd.createBlank({ instance: uuid, name: 'disk' }, 8 * MiB, { owner: { hostId: DEAD, version: '1.0.0' } });
  await rbd.createBlank({ instance: uuid, name: 'disk.swap' }, 8 * MiB, { owner: { hostId: DEAD, version: '1.0.0' } });
  if (record) {
    const spec = formatInstanceSpec(
      {
        uuid,
        name: 'evac-rollback',
        imageId: randomUUID(),
        backend: 'rbd',
        flavor: { vcpus: 1, memoryMiB: 32, rootGiB: 0, swapMiB: 8 },
        disks: [
          { name: 'disk', target: 'vda', sizeBytes: 8 * MiB },
          { name: 'disk.swap', target: 'vdb', sizeBytes: 8 * MiB },
        ],
        createdAt: new Date().toISOString(),
        rootDisk: {
          method: 'blank',
          durationMs: 1,
          sizeBytes: 8 * MiB,
          plan: { method: 'x', handler: 'x', location: 'x', declined: [] },
        },
      },
      domain,
    );
    await rbd.setAnnotation!({ instance: uuid, name: 'disk' }, INSTANCE_SPEC_KEY, spec);
  }
  return uuid;
}

const deadUri = () => `qemu+unix:///system?socket=${join(dir, 'no-libvirtd', 'libvirt-sock')}`;
const ownersOf = async (uuid: string) =>
  (await driver.backends.get('rbd').list({ instance: uuid })).map((d) => `${d.disk.name}:${d.owner?.hostId}`).sort();

async function nothingHere(uuid: string): Promise<void> {
  expect(await driver.libvirt.lookupByUUID(uuid).catch(() => undefined)).toBeUndefined();
  await expect(driver.get(uuid)).rejects.toSatisfy((e) => isDriverError(e, 'INSTANCE_NOT_FOUND'));
  expect(existsSync(driver.consolePath(uuid))).toBe(false);
  expect(await driver.operations()).toEqual([]);
  expect(await new Journal(driver.config.stateDir).entries()).toEqual([]);
}

describe('evacuation failures', () => {
  it('a define that fails rolls back: the disks go back to the dead host, nothing is left here', async () => {
    // A machine type libvirt does not know: define fails after the disks were taken.
    const uuid = await deadHostInstance({ machine: 'no-such-machine-9.9' });
    const err = await driver.evacuate(uuid, { from: { hostId: DEAD, libvirtUri: deadUri() } }).catch((e: unknown) => e);
    expect(isDriverError(err, 'SPAWN_FAILED'), String(err)).toBe(true);
    // libvirt refused the definition (no PCI bus on that machine): at define, after the take.
    expect((err as Error).message).toMatch(/evacuation of .* failed: XML error/);
    expect(await ownersOf(uuid)).toEqual([`disk.swap:${DEAD}`, `disk:${DEAD}`]);
    await nothingHere(uuid);
  });

  it('refuses an instance without a recorded definition, and one not owned by the named host, changing nothing', async () => {
    const bare = await deadHostInstance(undefined, false);
    const e1 = await driver.evacuate(bare, { from: { hostId: DEAD, libvirtUri: deadUri() } }).catch((e: unknown) => e);
    expect(isDriverError(e1, 'INSTANCE_STATE'), String(e1)).toBe(true);
    expect((e1 as Error).message).toContain('carries no recorded definition');
    expect(await ownersOf(bare)).toEqual([`disk.swap:${DEAD}`, `disk:${DEAD}`]);
    const e2 = await driver
      .evacuate(bare, { from: { hostId: 'some-other-host', libvirtUri: deadUri() } })
      .catch((e: unknown) => e);
    expect(isDriverError(e2, 'INSTANCE_STATE'), String(e2)).toBe(true);
    expect((e2 as Error).message).toContain(`owned by ${DEAD}`);
    const e3 = await driver
      .evacuate(randomUUID(), { from: { hostId: DEAD, libvirtUri: deadUri() } })
      .catch((e: unknown) => e);
    expect(isDriverError(e3, 'INSTANCE_NOT_FOUND'), String(e3)).toBe(true);
    await nothingHere(bare);
  });

  it('an evacuation killed after taking the disks is rolled back by reconcile: the disks go back', async () => {
    const uuid = await deadHostInstance();
    const op = await new Journal(driver.config.stateDir).begin('evacuate', uuid, {
      domainName: driver.domainName(uuid),
      backend: 'rbd',
      fromHost: DEAD,
    });
    await op.done('fence', { addresses: [] });
    await op.intent('take', { kind: 'owner', backend: 'rbd', hostId: DEAD });
    for (const name of ['disk', 'disk.swap'])
      await driver.backends.get('rbd').setOwner!(
        { instance: uuid, name },
        { hostId: 'evac-this-host', version: '1.0.0' },
      );
    await op.intent('files', { kind: 'file', path: join(driver.config.instancesPath, uuid) });
    await op.abandon();
    const [action] = (await driver.reconcile()).filter((a) => a.instance === uuid);
    expect(action).toMatchObject({ op: 'evacuate', action: 'rolled-back' });
    expect(action!.removed).toContain(`ownership of disk, disk.swap (back to ${DEAD})`);
    expect(await ownersOf(uuid)).toEqual([`disk.swap:${DEAD}`, `disk:${DEAD}`]);
    await nothingHere(uuid);
  });
});

describe('the dead host coming back (reconcile)', () => {
  /** This host's record of `uuid` (as spawn writes it), its disks owned by `owner`. */
  async function recordWithDisks(owner: string): Promise<string> {
    const uuid = randomUUID();
    const rbd = driver.backends.get('rbd');
    left.push({ instance: uuid, name: 'disk' });
    await rbd.createBlank({ instance: uuid, name: 'disk' }, 8 * MiB, { owner: { hostId: owner, version: '1.0.0' } });
    await writeRecord(
      driver,
      instanceRecord(driver, uuid, {
        name: 'stale',
        flavor: { vcpus: 1, memoryMiB: 32, rootGiB: 0 },
        disks: [{ name: 'disk', target: 'vda', sizeBytes: 8 * MiB }],
        rootDisk: {
          method: 'blank',
          durationMs: 1,
          sizeBytes: 8 * MiB,
          plan: { method: 'x', handler: 'x', location: 'x', declined: [] },
        },
      }),
    );
    await writeFile(driver.consolePath(uuid), 'old log\n');
    return uuid;
  }

  it('drops the record of an instance whose disks another host owns now, without touching the disks; keeps its own', async () => {
    const gone = await recordWithDisks('evac-new-owner');
    const mine = await recordWithDisks('evac-this-host');
    try {
      const actions = await driver.reconcile();
      expect(actions.filter((a) => a.instance === gone)).toEqual([
        expect.objectContaining({
          op: 'handed-over',
          action: 'completed',
          removed: [`files ${join(driver.config.instancesPath, gone)}`],
        }),
      ]);
      expect(actions.filter((a) => a.instance === mine)).toEqual([]);
      await expect(driver.get(gone)).rejects.toSatisfy((e) => isDriverError(e, 'INSTANCE_NOT_FOUND'));
      expect(existsSync(join(driver.config.instancesPath, gone))).toBe(false);
      expect(await ownersOf(gone)).toEqual(['disk:evac-new-owner']);
      expect((await driver.get(mine)).name).toBe('stale');
      expect(await ownersOf(mine)).toEqual(['disk:evac-this-host']);
      expect((await driver.reconcile()).filter((a) => a.instance === gone || a.instance === mine)).toEqual([]);
    } finally {
      await rm(join(driver.config.instancesPath, mine), { recursive: true, force: true });
    }
  });
});
