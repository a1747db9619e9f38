// Live migration refuses what it cannot move before anything moves (LVM: UNSUPPORTED; a stopped
// instance: INSTANCE_STATE; qcow2 instances are block-migrated, e2e/migrate-qcow2.test.ts), and reconcile finishes a migration's journal entries where
// the guest's whereabouts are clear. Two drivers on the two-host stack; records written by hand.
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadStack, stackCommand } from '@ephemera/testkit';
import { Journal, isDriverError, type Driver, type InstanceRecord } from '@ephemera/driver';
import { instanceRecord, stackDriver, writeRecord } from './support.js';

let dir: string;
let a: Driver;
let b: Driver;

const driverAt = (name: string, uri: string, enabled: string[] = []): Promise<Driver> =>
  stackDriver({ stateDir: join(dir, name), libvirt: { uri }, images: { enabled } });

/** A record of a stopped `backend` instance on `d`. */
async function addRecord(d: Driver, backend: string): Promise<InstanceRecord> {
  const rec = instanceRecord(d, randomUUID(), {
    name: `refused-${backend}`,
    backend,
    flavor: { vcpus: 1, memoryMiB: 64, rootGiB: 1 },
  });
  await writeRecord(d, rec);
  return rec;
}

const files = async (p: string): Promise<string[]> => (existsSync(p) ? readdir(p) : []);

beforeAll(async () => {
  await stackCommand(['up', '--hosts', '2'], { timeoutMs: 300_000 });
  dir = await mkdtemp(join(tmpdir(), 'eph-migrate-refused-'));
  const stack = loadStack();
  a = await driverAt('a', stack.hosts[0]!.libvirtUri, ['qcow2']);
  b = await driverAt('b', stack.hosts[1]!.libvirtUri);
}, 300_000);

afterAll(async () => {
  await a?.close();
  await b?.close();
  await rm(dir, { recursive: true, force: true });
});

describe('migrate refuses before anything moves', () => {
  for (const [backend, why] of [['lvm', /LVM: its volumes are local to this host/]] as const) {
    it(`a ${backend} instance: UNSUPPORTED saying why; no journal entry, nothing on the destination`, async () => {
      const rec = await addRecord(a, backend);
      const err = await a.migrate(rec.uuid, { to: b }).catch((e: unknown) => e);
      expect(isDriverError(err, 'UNSUPPORTED')).toBe(true);
      expect((err as Error).message).toMatch(why);
      expect(await a.journal.entries()).toEqual([]);
      expect(await b.journal.entries()).toEqual([]);
      expect(await files(b.config.instancesPath)).toEqual([]);
      expect((await a.get(rec.uuid)).backend).toBe(backend);
    });
  }

  it('a qcow2 instance is no longer refused as UNSUPPORTED: without a domain it is INSTANCE_NOT_FOUND, nothing moves', async () => {
    const rec = await addRecord(a, 'qcow2');
    const err = await a.migrate(rec.uuid, { to: b }).catch((e: unknown) => e);
    expect(isDriverError(err, 'INSTANCE_NOT_FOUND')).toBe(true);
    expect(await a.journal.entries()).toEqual([]);
    expect(await b.journal.entries()).toEqual([]);
    expect(await files(b.config.instancesPath)).toEqual([]);
  });

  it('an RBD instance without a domain: INSTANCE_NOT_FOUND; bad options: INVALID_ARGUMENT', async () => {
    const rec = await addRecord(a, 'rbd');
    const err = await a.migrate(rec.uuid, { to: b }).catch((e: unknown) => e);
    expect(isDriverError(err, 'INSTANCE_NOT_FOUND')).toBe(true);
    for (const opts of [{ to: b, timeoutMs: 0 }, { to: b, bandwidthMiB: 0.5 }, { to: a }, undefined, {}]) {
      const bad = await a.migrate(rec.uuid, opts as Parameters<Driver['migrate']>[1]).catch((e: unknown) => e);
      expect(isDriverError(bad, 'INVALID_ARGUMENT')).toBe(true);
    }
    expect(await a.journal.entries()).toEqual([]);
    expect(await b.journal.entries()).toEqual([]);
    expect(await files(b.config.instancesPath)).toEqual([]);
  });
});

describe('reconcile of an interrupted migration', () => {
  it('destination: a migrate-in whose domain never arrived is undone (its instance directory goes)', async () => {
    const uuid = randomUUID();
    const path = join(b.config.instancesPath, uuid);
    const op = await new Journal(b.config.stateDir).begin('migrate-in', uuid, { domainName: b.domainName(uuid) });
    await op.intent('files', { kind: 'file', path });
    await mkdir(path, { recursive: true });
    await op.abandon();
    const actions = (await b.reconcile()).filter((x) => x.instance === uuid);
    expect(actions).toMatchObject([{ op: 'migrate-in', action: 'rolled-back' }]);
    expect(existsSync(path)).toBe(false);
    expect(await b.journal.entries()).toEqual([]);
  });

  it('source: a migrate-out whose domain is not here is kept and reported (the guest may run on the destination)', async () => {
    const rec = await addRecord(a, 'rbd');
    const op = await new Journal(a.config.stateDir).begin('migrate-out', rec.uuid, { domainName: rec.domainName });
    await op.abandon();
    const actions = (await a.reconcile()).filter((x) => x.instance === rec.uuid);
    expect(actions).toMatchObject([{ op: 'migrate-out', action: 'failed' }]);
    expect(actions[0]!.error).toMatch(/check the destination/);
    expect(await a.journal.entries()).toHaveLength(1);
    expect((await a.get(rec.uuid)).uuid).toBe(rec.uuid);
    await a.journal.remove((await a.journal.entries())[0]!);
  });
});
