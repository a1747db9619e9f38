// Evacuation of an RBD instance whose host died (issue 19, items 5 and 6), on the two-host dev
// stack: host 2 (B) runs the counting guest, then "dies" (its QEMU is SIGKILLed, so the guest's
// Ceph client still holds the disk's lock, and its libvirtd is stopped); host 1 (A) fences B's
// client, takes the disks and boots the guest from them (its boot counter on disk shows the second
// boot). B coming back drops its stale copy in reconcile without touching the disks.
// This file stops libvirtd@2 and always starts it again (later files migrate through it).
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EXIT } from '@ephemera/cli';
import { isDriverError, type EvacuateResult } from '@ephemera/driver';
import {
  cephCli,
  qemuPids,
  readBootCount,
  readCounts,
  stackCommand,
  until,
  waitForSerial,
  type StackHost,
} from '@ephemera/testkit';
import { TINY, cliAs, deleteImage, newUuid, serialText, testDriver, uploadGuest, type TestDriver } from './support.js';

const exec = promisify(execFile);
const HOST_A = 'evac-a';
const HOST_B = 'evac-b';

let a: TestDriver;
let b: TestDriver;
let hosts: StackHost[];
let imageId: string | undefined;
const uuids: string[] = [];
const blocklisted: string[] = [];

const virshList = async (uri: string): Promise<string[]> =>
  (await exec('virsh', ['-q', '-c', uri, 'list', '--all', '--name'], { timeout: 30_000 })).stdout
    .split('\n')
    .map((s) => s.trim())
    .filter(Boolean);

const counting = (t: TestDriver, uuid: string, n: number) =>
  waitForSerial(
    t.driver.consolePath(uuid),
    (text) => (readCounts(text).length >= n ? readCounts(text) : undefined),
    60_000,
    `${n} counter lines`,
  );
const rbd = (t: TestDriver) => t.driver.backends.get('rbd');
const owners = async (t: TestDriver, uuid: string) =>
  (await rbd(t).list({ instance: uuid })).map((d) => [d.id, d.owner?.hostId]);
const blocklist = async (): Promise<string> => cephCli('admin', ['ceph', 'osd', 'blocklist', 'ls']);
const from = () => ({ hostId: HOST_B, libvirtUri: hosts[1]!.libvirtUri });

/** `ephemera <args>` as host A (A's state directory and host id), in this process. */
const cliA = (...args: string[]) => cliAs(a, HOST_A, ...args);

beforeAll(async () => {
  await stackCommand(['up', '--hosts', '2'], { timeoutMs: 300_000 });
  a = await testDriver({ host: { id: HOST_A } });
  hosts = a.stack.hosts;
  b = await testDriver({ host: { id: HOST_B }, libvirt: { uri: hosts[1]!.libvirtUri } });
  imageId = await uploadGuest(a.glance, `evacuate-e2e-${newUuid().slice(0, 8)}`, { mode: 'count' });
}, 300_000);

afterAll(async () => {
  // Host 2 comes back whatever happened: later files migrate through it.
  await stackCommand(['start', 'libvirtd@2'], { timeoutMs: 120_000 });
  for (const u of uuids) {
    await a?.driver.destroy(u).catch(() => undefined);
    await b?.driver.destroy(u).catch(() => undefined);
  }
  for (const addr of blocklisted)
    await cephCli('admin', ['ceph', 'osd', 'blocklist', 'rm', addr]).catch(() => undefined);
  await deleteImage(a?.glance, imageId);
  await b?.close();
  await a?.close();
}, 180_000);

describe('evacuation from a dead host (driver.evacuate, ephemera evacuate)', () => {
  it("refused while B's libvirtd answers; after B's QEMU and libvirtd die, A fences B's client and boots the guest from the same disks; B back drops its stale copy", async () => {
    const uuid = newUuid();
    uuids.push(uuid);
    const domainName = b.driver.config.libvirt.domainPrefix + uuid;
    await b.driver.spawn({ instance: { uuid, name: 'evac-guest' }, image: imageId!, flavor: TINY });
    await counting(b, uuid, 3);
    expect(readBootCount(serialText(b, uuid))).toBe(1);
    const disks = await owners(b, uuid);
    expect(disks.length).toBeGreaterThan(0);
    expect(disks.every(([, h]) => h === HOST_B)).toBe(true);

    // 1. B alive: refused with the reason, nothing changed (no fence, no owner, nothing on A).
    // B's QEMU: its Ceph client holds the root disk's exclusive lock.
    const clients = (await rbd(a).diskClients!({ instance: uuid, name: 'disk' })).filter((c) => !c.blocklisted);
    const qemuAddr = clients.find((c) => c.kind === 'lock-owner')?.address.replace(/^v[12]:/, '');
    expect(qemuAddr, JSON.stringify(clients)).toBeTruthy();
    const refused = await a.driver.evacuate(uuid, { from: from() }).catch((e: unknown) => e);
    expect(isDriverError(refused, 'HOST_ALIVE'), String(refused)).toBe(true);
    expect((refused as Error).message).toContain(`host ${HOST_B}'s libvirtd (${hosts[1]!.libvirtUri}) still answers`);
    // The same through the CLI (host 2 named as the dev stack's): exit 5 with the reason.
    const cliRefused = await cliA('evacuate', uuid, '--from', HOST_B, '--from-uri', '2');
    expect(cliRefused.code).toBe(EXIT.CONFLICT);
    expect(cliRefused.err).toContain(`host ${HOST_B}'s libvirtd`);
    expect(cliRefused.err).toContain('still answers');
    expect(await owners(a, uuid)).toEqual(disks);
    expect(await blocklist()).not.toContain(qemuAddr!);
    expect((await rbd(a).diskClients!({ instance: uuid, name: 'disk' })).some((c) => c.blocklisted)).toBe(false);
    expect(await virshList(hosts[0]!.libvirtUri)).not.toContain(domainName);
    await expect(a.driver.get(uuid)).rejects.toSatisfy((e) => isDriverError(e, 'INSTANCE_NOT_FOUND'));
    expect(await a.driver.operations()).toEqual([]);
    expect((await b.driver.get(uuid)).state).toBe('running');

    // 2. B dies: its QEMU killed (its Ceph client keeps the lock), then its libvirtd stopped.
    const pids = qemuPids(domainName);
    expect(pids.length).toBe(1);
    for (const p of pids) process.kill(p, 'SIGKILL');
    await until('B QEMU gone', () => qemuPids(domainName).length === 0);
    await stackCommand(['stop', 'libvirtd@2'], { timeoutMs: 60_000 });

    const t0 = Date.now();
    const done = await cliA('evacuate', uuid, '--from', HOST_B, '--from-uri', hosts[1]!.libvirtUri, '--json');
    expect(done.code, done.err).toBe(EXIT.OK);
    const r = JSON.parse(done.out) as EvacuateResult;
    blocklisted.push(...r.fenced);
    expect(r).toMatchObject({ instance: uuid, fromHost: HOST_B });
    expect(r.fenced).toContain(qemuAddr);
    expect(await blocklist()).toContain(qemuAddr!);
    // Same disks, now A's; the guest boots from them on A: its on-disk boot counter says 2.
    expect((await owners(a, uuid)).map(([id]) => id)).toEqual(disks.map(([id]) => id));
    expect((await owners(a, uuid)).every(([, h]) => h === HOST_A)).toBe(true);
    const inst = await a.driver.get(uuid);
    expect(inst).toMatchObject({ state: 'running', name: 'evac-guest', imageId, flavor: TINY });
    await counting(a, uuid, 3);
    expect(readBootCount(serialText(a, uuid))).toBe(2);
    expect(await a.driver.operations()).toEqual([]);
    console.log(`evacuated in ${Date.now() - t0} ms, fenced ${r.fenced.join(', ')}`);

    // 3. B comes back: its reconcile sees the disks are A's, drops its domain and record only.
    await stackCommand(['start', 'libvirtd@2'], { timeoutMs: 120_000 });
    expect(await virshList(hosts[1]!.libvirtUri)).toContain(domainName);
    const actions = (await b.driver.reconcile()).filter((x) => x.instance === uuid);
    expect(actions).toEqual([expect.objectContaining({ op: 'handed-over', action: 'completed' })]);
    expect(await virshList(hosts[1]!.libvirtUri)).not.toContain(domainName);
    await expect(b.driver.get(uuid)).rejects.toSatisfy((e) => isDriverError(e, 'INSTANCE_NOT_FOUND'));
    expect((await owners(a, uuid)).every(([, h]) => h === HOST_A)).toBe(true);
    expect((await owners(a, uuid)).map(([id]) => id)).toEqual(disks.map(([id]) => id));
    // Untouched: the guest still runs on A from them and goes on counting.
    const before = readCounts(serialText(a, uuid)).length;
    await counting(a, uuid, before + 3);
    expect((await a.driver.get(uuid)).state).toBe('running');
    expect(await b.driver.reconcile()).toEqual([]);
  }, 240_000);
});
