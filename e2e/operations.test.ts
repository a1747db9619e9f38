// Power operations, resize, events, serialization and failing spawns on the RBD backend.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readBootCount } from '@ephemera/testkit';
import { isDriverError, type InstanceLifecycleEvent } from '@ephemera/driver';
import {
  TINY,
  deleteImage,
  newUuid,
  rbdInfo,
  rbdLs,
  testDriver,
  uploadGuest,
  virshDomains,
  waitShutoff,
  type TestDriver,
} from './support.js';

let t: TestDriver;
let imageId: string | undefined;
const uuid = newUuid();
const events: InstanceLifecycleEvent[] = [];

beforeAll(async () => {
  t = await testDriver({ timeouts: { stopMs: 3000 } });
  imageId = await uploadGuest(t.glance, `ops-${uuid.slice(0, 8)}`);
  t.driver.on('lifecycle', (e) => events.push(e));
});
afterAll(async () => {
  await t?.driver.destroy(uuid).catch(() => undefined);
  await deleteImage(t?.glance, imageId);
  await t?.close();
});

async function bootCount(): Promise<number | undefined> {
  return readBootCount(await t.driver.console(uuid));
}

describe('instance operations', () => {
  it('two concurrent spawns of one instance: exactly one wins, the other is INSTANCE_EXISTS', async () => {
    const req = { instance: { uuid, name: 'ops' }, image: imageId!, flavor: { ...TINY, rootGiB: 1 } };
    const [a, b] = await Promise.allSettled([t.driver.spawn(req), t.driver.spawn(req)]);
    const ok = [a, b].filter((r) => r.status === 'fulfilled');
    const bad = [a, b].filter((r) => r.status === 'rejected') as PromiseRejectedResult[];
    expect(ok).toHaveLength(1);
    expect(bad).toHaveLength(1);
    expect(isDriverError(bad[0]!.reason, 'INSTANCE_EXISTS')).toBe(true);
    await waitShutoff(t.driver, uuid);
    expect(await bootCount()).toBe(1);
    const states = events.filter((e) => e.instance === uuid).map((e) => e.state);
    expect(states).toEqual(expect.arrayContaining(['spawning', 'started', 'running']));
    expect(states.indexOf('spawning')).toBeLessThan(states.indexOf('running'));
  });

  it('powerOn boots the stopped instance again; a hard reboot too', async () => {
    await t.driver.powerOn('ops');
    await waitShutoff(t.driver, uuid);
    expect(await bootCount()).toBe(2);
    await t.driver.reboot('ops');
    await waitShutoff(t.driver, uuid);
    expect(await bootCount()).toBe(3);
  });

  it('powerOff stops a running instance (ACPI, then forced after timeouts.stopMs)', async () => {
    await t.driver.powerOn(uuid);
    await t.driver.powerOff(uuid);
    expect((await t.driver.get(uuid)).state).toBe('shutoff');
  });

  it('resizeRootDisk grows the disk and the record; shrinking is refused', async () => {
    const r = await t.driver.resizeRootDisk(uuid, 2);
    expect(r.sizeBytes).toBe(2 * 1024 ** 3);
    expect((await rbdInfo(t.stack, `${t.stack.ceph.pools.vms}/${uuid}_disk`)).size).toBe(2 * 1024 ** 3);
    const rec = await t.driver.get(uuid);
    expect(rec.flavor.rootGiB).toBe(2);
    expect(rec.disks[0]!.sizeBytes).toBe(2 * 1024 ** 3);
    await expect(t.driver.resizeRootDisk(uuid, 1)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    expect(await t.driver.journal.entries()).toEqual([]);
  });

  it('a spawn that fails (unknown image) is typed and leaves nothing', async () => {
    const other = newUuid();
    await expect(t.driver.spawn({ instance: other, image: newUuid(), flavor: TINY })).rejects.toMatchObject({
      code: 'IMAGE_NOT_FOUND',
    });
    expect((await rbdLs(t.stack, t.stack.ceph.pools.vms)).filter((n) => n.startsWith(other))).toEqual([]);
    expect((await virshDomains(t.stack)).filter((d) => d.includes(other))).toEqual([]);
    expect(await t.driver.journal.entries()).toEqual([]);
    await expect(t.driver.get(other)).rejects.toMatchObject({ code: 'INSTANCE_NOT_FOUND' });
  });

  it('bad input (instance id, flavor, backend) is INVALID_ARGUMENT', async () => {
    await expect(t.driver.spawn({ instance: 'not-a-uuid', image: imageId!, flavor: TINY })).rejects.toMatchObject({
      code: 'INVALID_ARGUMENT',
    });
    await expect(
      t.driver.spawn({ instance: newUuid(), image: imageId!, flavor: { ...TINY, vcpus: 0 } }),
    ).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(
      t.driver.spawn({ instance: newUuid(), image: imageId!, flavor: TINY, backend: 'zfs' }),
    ).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    // Refused before anything is created: hostile extra specs, a flavor name the XML cannot carry.
    const bad = newUuid();
    await expect(
      t.driver.spawn({
        instance: bad,
        image: imageId!,
        flavor: { ...TINY, extraSpecs: { 'quota:disk_total_iops_sec': '-5' } },
      }),
    ).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(
      t.driver.spawn({ instance: bad, image: imageId!, flavor: { ...TINY, name: 'x\u0007y' } }),
    ).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    expect((await rbdLs(t.stack, t.stack.ceph.pools.vms)).filter((n) => n.startsWith(bad))).toEqual([]);
    expect(await t.driver.journal.entries()).toEqual([]);
  });

  it('destroy by name removes everything; a second destroy is INSTANCE_NOT_FOUND', async () => {
    await t.driver.destroy('ops');
    expect((await rbdLs(t.stack, t.stack.ceph.pools.vms)).filter((n) => n.startsWith(uuid))).toEqual([]);
    await expect(t.driver.destroy(uuid)).rejects.toMatchObject({ code: 'INSTANCE_NOT_FOUND' });
    expect(events.filter((e) => e.instance === uuid).map((e) => e.state)).toContain('destroyed');
  });
});

describe('start deadline', () => {
  it('a domain that does not start within timeouts.startMs is destroyed; TIMEOUT; nothing left', async () => {
    const quick = await testDriver({ timeouts: { startMs: 100 } });
    const u = newUuid();
    try {
      const started = performance.now();
      await expect(quick.driver.spawn({ instance: u, image: imageId!, flavor: TINY })).rejects.toMatchObject({
        code: 'TIMEOUT',
      });
      console.log(`spawn with a 100 ms start deadline failed after ${Math.round(performance.now() - started)} ms`);
      expect((await rbdLs(t.stack, t.stack.ceph.pools.vms)).filter((n) => n.startsWith(u))).toEqual([]);
      expect((await virshDomains(t.stack)).filter((d) => d.includes(u))).toEqual([]);
      expect(await quick.driver.journal.entries()).toEqual([]);
    } finally {
      await quick.driver.destroy(u).catch(() => undefined);
      await quick.close();
    }
  });
});
