// Ownership and reconcile (issue 18): a spawn killed between creating a disk and recording its
// owner leaves an unowned disk that reconcile removes; a disk another host owns is never removed,
// even when this host's journal names it. Real libvirtd and Ceph.
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Journal, type Driver } from '@ephemera/driver';
import { removeDisks, stackDriver, stateUnder } from './support.js';

const MiB = 1024 * 1024;
let dir: string;
let driver: Driver;
const left: { instance: string; name: string }[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'eph-owner-reconcile-'));
  driver = await stackDriver({ ...stateUnder(dir), host: { id: 'reconcile-host-a' } });
});

afterAll(async () => {
  await removeDisks(driver, left);
  await driver?.close();
  await rm(dir, { recursive: true, force: true });
});

/** A spawn journaled up to the root disk's intent, whose process is gone. */
async function killedSpawn(uuid: string): Promise<void> {
  const op = await new Journal(driver.config.stateDir).begin('spawn', uuid, {
    domainName: driver.domainName(uuid),
    backend: 'rbd',
  });
  await op.intent('root-disk', { kind: 'disk', backend: 'rbd', name: 'disk' });
  await op.abandon();
}

describe('reconcile and disk owners', () => {
  it('removes the disks a killed spawn left without owner (killed between the clone and its metadata)', async () => {
    const uuid = randomUUID();
    const rbd = driver.backends.get('rbd');
    await killedSpawn(uuid);
    left.push({ instance: uuid, name: 'disk' }, { instance: uuid, name: 'disk.swap' });
    await rbd.createBlank({ instance: uuid, name: 'disk' }, 8 * MiB); // no owner yet
    await rbd.createBlank({ instance: uuid, name: 'disk.swap' }, 8 * MiB); // not even journaled
    const [action] = (await driver.reconcile()).filter((a) => a.instance === uuid);
    expect(action).toMatchObject({ op: 'spawn', action: 'rolled-back' });
    expect(action!.removed).toEqual(expect.arrayContaining(['disk rbd:disk', 'disk rbd:disk.swap']));
    expect(await rbd.list({ instance: uuid })).toEqual([]);
  });

  it("never removes another host's disk, even one this host's journal names", async () => {
    const uuid = randomUUID();
    const rbd = driver.backends.get('rbd');
    await killedSpawn(uuid);
    left.push({ instance: uuid, name: 'disk' }, { instance: uuid, name: 'disk.local' });
    const other = { hostId: 'reconcile-host-b', version: '1.0.0' };
    await rbd.createBlank({ instance: uuid, name: 'disk' }, 8 * MiB, { owner: other });
    await rbd.createBlank({ instance: uuid, name: 'disk.local' }, 8 * MiB, { owner: other });
    const [action] = (await driver.reconcile()).filter((a) => a.instance === uuid);
    expect(action).toMatchObject({ op: 'spawn', action: 'rolled-back', removed: [] });
    expect((await rbd.list({ instance: uuid })).map((d) => [d.disk.name, d.owner?.hostId])).toEqual([
      ['disk', 'reconcile-host-b'],
      ['disk.local', 'reconcile-host-b'],
    ]);
    // destroy and gc do not take them either
    await expect(driver.destroy(uuid)).rejects.toMatchObject({ code: 'INSTANCE_NOT_FOUND' });
    expect((await driver.gc({ remove: true, instances: [uuid] })).removed).toEqual([]);
    expect(await rbd.list({ instance: uuid })).toHaveLength(2);
  });
});
