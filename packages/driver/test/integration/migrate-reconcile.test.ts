// Reconcile of an interrupted live migration decided from both hosts (issue 19.4): the states a
// killed migration can leave are built by hand on the two-host stack (a small diskless TCG domain
// with the instance's UUID on either host, running or paused; the journal entries both drivers
// write; the record on the source), then both hosts reconcile, in either order, and the guest
// must run on exactly one host, which has the record; the other keeps nothing. qcow2 instances
// also have disk copies on both hosts (the destination's half-copied), made by the real backend.
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, StartFlags, type Connection } from '@ephemera/libvirt-napi';
import { loadStack, stackCommand } from '@ephemera/testkit';
import { Journal, isDriverError, type Driver, type InstanceRecord } from '@ephemera/driver';
import type { DiskRef } from '@ephemera/image-backend';
import { instanceRecord, stackDriver, writeRecord } from './support.js';

const exec = promisify(execFile);
const MiB = 1024 * 1024;
/** The qcow2 backend's block migration step (the destination's empty copy of a disk). */
type Qcow2 = {
  prepareIncomingDisk(
    disk: DiskRef,
    spec: { sizeBytes: number; format: 'qcow2'; backed: boolean },
  ): Promise<{ path: string }>;
};

let dir: string;
let a: Driver;
let b: Driver;
let conns: Connection[] = [];
const uuids: string[] = [];

const driverAt = (name: string, uri: string): Promise<Driver> =>
  stackDriver({
    stateDir: join(dir, name),
    libvirt: { uri },
    host: { id: `mig-reconcile-${name}` },
    images: { enabled: ['qcow2'] },
  });

const recordOf = (d: Driver, uuid: string, backend = 'rbd'): InstanceRecord =>
  instanceRecord(d, uuid, { name: 'mig-reconcile', backend });

/** A diskless TCG domain with the instance's UUID (SeaBIOS finds nothing to boot and idles). */
async function startDomain(conn: Connection, rec: InstanceRecord, paused: boolean): Promise<void> {
  const xml = `<domain type='qemu'><name>${rec.domainName}</name><uuid>${rec.uuid}</uuid><memory unit='MiB'>32</memory><vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os></domain>`;
  // Persistent, as a migrated domain is on both sides (PERSIST_DEST; the source until undefined).
  const dom = await conn.defineXML(xml);
  await dom.create(paused ? StartFlags.PAUSED : StartFlags.NONE);
}

async function stateOn(conn: Connection, uuid: string): Promise<string> {
  try {
    return (await (await conn.lookupByUUID(uuid)).state()).state;
  } catch {
    return 'absent';
  }
}

type Side = 'absent' | 'running' | 'paused';

/** Builds the state a killed migration A -> B left: domains, journal entries, the record on A. */
async function interrupted(src: Side, dst: Side, backend = 'rbd'): Promise<InstanceRecord> {
  const uuid = randomUUID();
  uuids.push(uuid);
  const rec = recordOf(a, uuid, backend);
  const disk = { instance: uuid, name: 'disk' };
  if (backend === 'qcow2')
    await a.backends.get('qcow2').createBlank(disk, MiB, { owner: { hostId: a.config.host.id, version: '0' } });
  const [ca, cb] = conns as [Connection, Connection];
  if (src !== 'absent') await startDomain(ca, rec, src === 'paused');
  if (dst !== 'absent') await startDomain(cb, recordOf(b, uuid), dst === 'paused');
  await writeRecord(a, rec);
  const out = await new Journal(a.config.stateDir).begin('migrate-out', uuid, {
    domainName: rec.domainName,
    from: a.config.libvirt.uri,
    backend,
  });
  await out.done('prepare-destination', { to: b.config.libvirt.uri });
  await out.done('migrate-started', { to: b.config.libvirt.uri });
  await out.abandon();
  const inc = await new Journal(b.config.stateDir).begin('migrate-in', uuid, {
    domainName: rec.domainName,
    backend,
    record: rec,
    from: a.config.libvirt.uri,
  });
  const path = join(b.config.instancesPath, uuid);
  await inc.intent('files', { kind: 'file', path });
  await mkdir(path, { recursive: true });
  if (backend === 'qcow2') {
    // The destination's copy, killed while libvirt filled it: some clusters written.
    await inc.intent('incoming-disk:disk', { kind: 'disk', backend, name: 'disk' });
    const copy = await (b.backends.get('qcow2') as unknown as Qcow2).prepareIncomingDisk(disk, {
      sizeBytes: MiB,
      format: 'qcow2',
      backed: false,
    });
    await exec('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x5a 0 65536', copy.path], { timeout: 30_000 });
  }
  await inc.done('prepared');
  await inc.abandon();
  return rec;
}

async function reconcileBoth(order: Driver[], uuid: string): Promise<void> {
  for (const d of order) {
    const actions = (await d.reconcile()).filter((x) => x.instance === uuid);
    expect(actions.filter((x) => x.action === 'failed')).toEqual([]);
  }
}

/** The guest runs on `on` only, with its record there; `off` has nothing of it. */
async function onlyOn(on: Driver, off: Driver, uuid: string): Promise<void> {
  const [ca, cb] = conns as [Connection, Connection];
  const [con, coff] = on === a ? [ca, cb] : [cb, ca];
  expect(await stateOn(con, uuid)).toBe('running');
  expect(await stateOn(coff, uuid)).toBe('absent');
  expect((await on.get(uuid)).state).toBe('running');
  expect((await on.get(uuid)).consolePath).toBe(on.consolePath(uuid));
  await expect(off.get(uuid)).rejects.toSatisfy((e) => isDriverError(e, 'INSTANCE_NOT_FOUND'));
  expect(existsSync(join(off.config.instancesPath, uuid))).toBe(false);
  expect((await a.journal.entries()).filter((e) => e.instance === uuid)).toEqual([]);
  expect((await b.journal.entries()).filter((e) => e.instance === uuid)).toEqual([]);
}

beforeAll(async () => {
  await stackCommand(['up', '--hosts', '2'], { timeoutMs: 300_000 });
  dir = await mkdtemp(join(tmpdir(), 'eph-migrate-reconcile-'));
  const stack = loadStack();
  a = await driverAt('a', stack.hosts[0]!.libvirtUri);
  b = await driverAt('b', stack.hosts[1]!.libvirtUri);
  conns = [await connect(stack.hosts[0]!.libvirtUri), await connect(stack.hosts[1]!.libvirtUri)];
}, 300_000);

afterAll(async () => {
  for (const c of conns)
    for (const u of uuids) {
      const dom = await c.lookupByUUID(u).catch(() => undefined);
      await dom?.destroy().catch(() => undefined);
      await dom?.undefine().catch(() => undefined);
    }
  for (const c of conns) await c.close();
  await a?.close();
  await b?.close();
  await rm(dir, { recursive: true, force: true });
});

describe('reconcile of a killed migration on both hosts', () => {
  for (const first of ['source', 'destination'] as const) {
    const order = (): Driver[] => (first === 'source' ? [a, a, b, b] : [b, a, b, a]);

    it(`source running, destination paused (incoming): the destination's copy goes, never the source's (${first} first)`, async () => {
      const rec = await interrupted('running', 'paused');
      await reconcileBoth(order(), rec.uuid);
      await onlyOn(a, b, rec.uuid);
    });

    it(`source undefined, destination paused: the destination resumes and commits the record (${first} first)`, async () => {
      const rec = await interrupted('absent', 'paused');
      await reconcileBoth(order(), rec.uuid);
      await onlyOn(b, a, rec.uuid);
      expect((await b.get(rec.uuid)).name).toBe(rec.name);
    });

    it(`source paused (switch-over failed), destination paused: the source resumes, the destination's copy goes (${first} first)`, async () => {
      const rec = await interrupted('paused', 'paused');
      await reconcileBoth(order(), rec.uuid);
      await onlyOn(a, b, rec.uuid);
    });

    it(`source paused, destination running (libvirt finished): the source's copy and record go (${first} first)`, async () => {
      const rec = await interrupted('paused', 'running');
      await reconcileBoth(order(), rec.uuid);
      await onlyOn(b, a, rec.uuid);
    });
  }

  /** The instance's qcow2 disk is on `on` only (owned by it); `off` has no disk and no leftover directory. */
  async function diskOnlyOn(on: Driver, off: Driver, uuid: string): Promise<void> {
    const disks = await on.backends.get('qcow2').list({ instance: uuid });
    expect(disks.map((d) => [d.disk.name, d.owner?.hostId])).toEqual([['disk', on.config.host.id]]);
    expect(await off.backends.get('qcow2').list({ instance: uuid })).toEqual([]);
    expect((await readdir(off.config.instancesPath)).filter((n) => n.includes(uuid))).toEqual([]);
  }

  it("qcow2, source running, destination paused: the destination's half-copied disk goes, the source keeps its own", async () => {
    const rec = await interrupted('running', 'paused', 'qcow2');
    await reconcileBoth([b, a, b, a], rec.uuid);
    await onlyOn(a, b, rec.uuid);
    await diskOnlyOn(a, b, rec.uuid);
  });

  it("qcow2, source paused, destination running: the source's disk goes, the destination's copy becomes its own", async () => {
    const rec = await interrupted('paused', 'running', 'qcow2');
    await reconcileBoth([a, a, b, b], rec.uuid);
    await onlyOn(b, a, rec.uuid);
    await diskOnlyOn(b, a, rec.uuid);
  });

  it('both running: reported as failed on both hosts, nothing destroyed', async () => {
    const rec = await interrupted('running', 'running');
    for (const d of [a, b]) {
      const actions = (await d.reconcile()).filter((x) => x.instance === rec.uuid);
      expect(actions).toMatchObject([{ action: 'failed' }]);
      expect(actions[0]!.error).toMatch(/runs on both hosts/);
    }
    const [ca, cb] = conns as [Connection, Connection];
    expect(await stateOn(ca, rec.uuid)).toBe('running');
    expect(await stateOn(cb, rec.uuid)).toBe('running');
    for (const d of [a, b])
      for (const e of (await d.journal.entries()).filter((x) => x.instance === rec.uuid)) await d.journal.remove(e);
  });
});
