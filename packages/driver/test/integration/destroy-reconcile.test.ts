// reconcile() finishes a destroy killed before its `domain` intent was written (reliability
// known failure 9): the journal names the files and the disk only, yet the domain (by UUID) goes
// too, and so does a disk of the instance the journal does not name. Real libvirtd and Ceph.
import { randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type Connection } from '@ephemera/libvirt-napi';
import { loadStack } from '@ephemera/testkit';
import { Journal, type Driver } from '@ephemera/driver';
import { domainExists, removeDisks, stackDriver, stateUnder, undefineQuietly } from './support.js';

const MiB = 1024 * 1024;
let dir: string;
let driver: Driver;
let conn: Connection;
const uuid = randomUUID();

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'eph-destroy-reconcile-'));
  driver = await stackDriver(stateUnder(dir));
  conn = await connect(loadStack().libvirt.uri);
});

afterAll(async () => {
  // whatever the test left: the domain, the disks
  await undefineQuietly(conn, uuid);
  await removeDisks(driver, [
    { instance: uuid, name: 'disk' },
    { instance: uuid, name: 'disk.eph0' },
  ]);
  await conn?.close();
  await driver?.close();
  await rm(dir, { recursive: true, force: true });
});

describe('reconcile of a destroy killed before its domain intent', () => {
  it('removes the domain by UUID and every disk of the instance, then the journal entry', async () => {
    const rbd = driver.backends.get('rbd');
    await rbd.createBlank({ instance: uuid, name: 'disk' }, 8 * MiB);
    await rbd.createBlank({ instance: uuid, name: 'disk.eph0' }, 8 * MiB);
    const name = driver.domainName(uuid);
    await conn.defineXML(
      `<domain type='qemu'><name>${name}</name><uuid>${uuid}</uuid><memory unit='MiB'>64</memory>` +
        `<os><type arch='x86_64'>hvm</type></os></domain>`,
    );

    // The killed destroy: `files` and one `disk` intent written, then SIGKILL.
    const journal = new Journal(driver.config.stateDir);
    const op = await journal.begin('destroy', uuid, { domainName: name });
    await op.intent('files', { kind: 'file', path: join(driver.config.instancesPath, uuid) });
    await op.intent('disk', { kind: 'disk', backend: 'rbd', name: 'disk' });
    await op.abandon(); // the process is gone: no end record

    const actions = (await driver.reconcile()).filter((a) => a.instance === uuid);
    expect(actions).toHaveLength(1);
    expect(actions[0]!.action).toBe('completed');
    expect(await domainExists(conn, uuid)).toBe(false);
    expect(await rbd.list({ instance: uuid })).toEqual([]);
    expect((await journal.entries()).filter((e) => e.instance === uuid)).toEqual([]);
  });

  it('removes the instance files of a destroy killed right after it began (no intent yet)', async () => {
    const id = randomUUID();
    const files = join(driver.config.instancesPath, id);
    await mkdir(files, { recursive: true });
    await writeFile(join(files, 'instance.json'), '{}');
    const journal = new Journal(driver.config.stateDir);
    const op = await journal.begin('destroy', id, { domainName: driver.domainName(id) });
    await op.abandon(); // SIGKILL right after the begin record (seed 262779950, kill 30)

    const actions = (await driver.reconcile()).filter((a) => a.instance === id);
    expect(actions.map((a) => a.action)).toEqual(['completed']);
    expect(
      await stat(files).then(
        () => true,
        () => false,
      ),
    ).toBe(false);
    expect((await journal.entries()).filter((e) => e.instance === id)).toEqual([]);
  });
});
