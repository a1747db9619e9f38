// reconcile() undefines a shut-off domain of this driver that nothing accounts for (reliability
// known failure 14: libvirtd ran a killed driver's queued defineXML after reconcile had rolled the
// spawn back), and leaves alone every domain that is not that. Real libvirtd and Ceph.
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type Connection } from '@ephemera/libvirt-napi';
import { domainXml } from '@ephemera/libvirt-xml';
import { loadStack } from '@ephemera/testkit';
import { Journal, type Driver } from '@ephemera/driver';
import { domainExists, removeDisks, stackDriver, stateUnder, undefineQuietly } from './support.js';

const MiB = 1024 * 1024;
let dir: string;
let driver: Driver;
let conn: Connection;
const made: string[] = [];

/** Defines (does not start) a domain as a spawn would: Ephemera's metadata, console log in `consoleDir`. */
async function define(uuid: string, opts: { metadata?: boolean; consoleDir?: string } = {}): Promise<void> {
  made.push(uuid);
  await conn.defineXML(
    domainXml({
      type: 'qemu',
      name: driver.domainName(uuid),
      uuid,
      memoryMiB: 64,
      vcpus: 1,
      disks: [],
      serialLogPath: join(opts.consoleDir ?? join(driver.config.instancesPath, uuid), 'console.log'),
      ...(opts.metadata === false ? {} : { metadata: { instanceId: uuid, imageId: 'orphan-test' } }),
    }),
  );
}

const exists = (uuid: string): Promise<boolean> => domainExists(conn, uuid);

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'eph-orphan-domain-'));
  driver = await stackDriver(stateUnder(dir));
  conn = await connect(loadStack().libvirt.uri);
});

afterAll(async () => {
  for (const uuid of made) {
    await undefineQuietly(conn, uuid);
    await removeDisks(driver, [{ instance: uuid, name: 'disk' }]);
  }
  await conn?.close();
  await driver?.close();
  await rm(dir, { recursive: true, force: true });
});

describe('reconcile of domains nothing accounts for', () => {
  it.each(['spawn', 'evacuate'] as const)(
    "removes a killed %s's domain that libvirtd defines after the rollback, in the same reconcile",
    async (kind) => {
      const uuid = randomUUID();
      const name = driver.domainName(uuid);
      // The killed operation: its `define` intent written, the defineXML call still queued in libvirtd.
      const op = await new Journal(driver.config.stateDir).begin(kind, uuid, { domainName: name, backend: 'rbd' });
      await op.intent('define', { kind: 'domain', uuid, name });
      await op.abandon();
      const late = new Promise((r) => setTimeout(r, 1000)).then(() => define(uuid));
      const t0 = performance.now();
      const actions = (await driver.reconcile()).filter((a) => a.instance === uuid);
      await late;
      expect(actions).toHaveLength(1);
      expect(actions[0]!.action).toBe('rolled-back');
      expect(actions[0]!.removed.some((r) => r.includes(name))).toBe(true);
      expect(await exists(uuid)).toBe(false);
      // It watched only until the domain showed, not for the whole grace period (3 s).
      expect(performance.now() - t0).toBeLessThan(2500);
    },
  );

  it('undefines a shut-off domain of this driver with no record, journal entry or disk', async () => {
    const uuid = randomUUID();
    await define(uuid);
    const actions = (await driver.reconcile()).filter((a) => a.instance === uuid);
    expect(actions).toEqual([
      {
        opId: '-',
        op: 'orphan-domain',
        instance: uuid,
        action: 'completed',
        removed: [`domain ${driver.domainName(uuid)}`],
      },
    ]);
    expect(await exists(uuid)).toBe(false);
  });

  it('leaves a domain that has a disk, one without our metadata and one of another state dir', async () => {
    const withDisk: string = randomUUID();
    await driver.backends.get('rbd').createBlank({ instance: withDisk, name: 'disk' }, 8 * MiB);
    await define(withDisk);
    const foreign: string = randomUUID();
    await define(foreign, { metadata: false });
    const otherDriver: string = randomUUID();
    await define(otherDriver, { consoleDir: join(dir, 'another-driver', otherDriver) });
    const actions = (await driver.reconcile()).filter((a) => [withDisk, foreign, otherDriver].includes(a.instance));
    expect(actions).toEqual([]);
    for (const uuid of [withDisk, foreign, otherDriver]) expect(await exists(uuid)).toBe(true);
  });
});
