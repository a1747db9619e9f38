// Live migration of an RBD instance between the two hosts of the dev stack (issue 19, items 2
// and 6): host 1's driver and host 2's driver in this process, the counting guest (it prints
// `EPHEMERA-COUNT n` every 100 ms and never powers off), so "the same guest kept running" shows
// as a counter that goes on in the destination's serial log instead of restarting at 0.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isDriverError, type MigrationDestination, type MigrationProgress } from '@ephemera/driver';
import { readBootCount, readCounts, stackCommand, waitForSerial, type StackHost } from '@ephemera/testkit';
import {
  TINY,
  adminCluster,
  countsGoOn,
  deleteImage,
  newUuid,
  rbdLs,
  rbdRead,
  serialText,
  testDriver,
  uploadGuest,
  type TestDriver,
} from './support.js';

const exec = promisify(execFile);

let a: TestDriver;
let b: TestDriver;
let hosts: StackHost[];
let imageId: string | undefined;
const uuids: string[] = [];
const images: string[] = [];

async function virsh(uri: string, args: string[]): Promise<string> {
  return (await exec('virsh', ['-q', '-c', uri, ...args], { timeout: 60_000 })).stdout;
}
const domains = async (uri: string): Promise<string[]> =>
  (await virsh(uri, ['list', '--all', '--name']))
    .split('\n')
    .map((s) => s.trim())
    .filter(Boolean);

/** The instance runs on `on` (record, running domain) and `off` has nothing of it. */
async function runsOnlyOn(on: TestDriver, off: TestDriver, uuid: string): Promise<void> {
  const inst = await on.driver.get(uuid);
  expect(inst.state).toBe('running');
  expect(inst.consolePath).toBe(on.driver.consolePath(uuid));
  await expect(off.driver.get(uuid)).rejects.toSatisfy((e) => isDriverError(e, 'INSTANCE_NOT_FOUND'));
  expect(await domains(off.driver.config.libvirt.uri)).not.toContain(inst.domainName);
  expect(existsSync(off.driver.consolePath(uuid))).toBe(false);
  expect(await off.driver.operations()).toEqual([]);
  expect(await on.driver.operations()).toEqual([]);
  // Its disks are the destination's now: only that host's gc and reconcile may touch them.
  const disks = await on.driver.backends.get('rbd').list({ instance: uuid });
  expect(disks.length).toBeGreaterThan(0);
  for (const d of disks) expect(d.owner?.hostId).toBe(on.driver.config.host.id);
}

/**
 * Uploads the writing guest (nasm source in the comment): a boot sector that writes sector
 * 8 + (k mod 256) with the dword k, k = 0, 1, 2, ..., one int 13h extended write at a time, and
 * prints `W` on COM1 after every 256 writes (`E` on a disk error).
 *   cli; xor ax,ax; mov ds,ax; mov ss,ax; mov sp,0x7c00; sti; mov [drive],dl; xor ebp,ebp
 *   write: mov [0x8000],ebp; mov eax,ebp; and eax,0xff; add eax,8; mov [lba],eax; mov si,dap
 *          mov ax,0x4300; mov dl,[drive]; int 0x13; jc fail; inc ebp; test bp,0xff; jnz write
 *          (print "W\r\n" on 0x3f8); jmp write
 *   fail: (print "E"); hlt loop.   dap: db 0x10,0; dw 1; dw 0x8000,0; lba: dd 0,0
 */
async function uploadWriterGuest(): Promise<string> {
  const code =
    'fa31c08ed88ed0bc007cfb8816557c6631ed66892e00806689e86625ff0000006683c00866a35e7cbe567cb8004' +
    '38a16557ccd1372166645f7c5ff0075d4baf803b057eeb00deeb00aeeebc6baf803b045eef4ebfd00100001000080';
  const disk = Buffer.alloc(1 << 20);
  Buffer.from(code, 'hex').copy(disk);
  disk[510] = 0x55;
  disk[511] = 0xaa;
  const img = await a.glance.createImage({ name: 'e2e-migrate-writer', disk_format: 'raw', container_format: 'bare' });
  await a.glance.upload(img.id, disk);
  await a.glance.waitForStatus(img.id, ['active'], { timeoutMs: 120_000 });
  return img.id;
}

beforeAll(async () => {
  await stackCommand(['up', '--hosts', '2'], { timeoutMs: 300_000 });
  a = await testDriver({ host: { id: 'migrate-a' } });
  hosts = a.stack.hosts;
  // B's migrations go tunnelled (libvirt.migrationTunnelled), A's direct (the default): every
  // round trip below runs both transports.
  b = await testDriver({ host: { id: 'migrate-b' }, libvirt: { uri: hosts[1]!.libvirtUri, migrationTunnelled: true } });
  imageId = await uploadGuest(a.glance, `migrate-e2e-${newUuid().slice(0, 8)}`, { mode: 'count' });
}, 300_000);

afterAll(async () => {
  for (const u of uuids) {
    await a?.driver.destroy(u).catch(() => undefined);
    await b?.driver.destroy(u).catch(() => undefined);
  }
  await deleteImage(a.glance, imageId);
  for (const id of images) await deleteImage(a.glance, id);
  await b?.close();
  await a?.close();
});

describe('live migration between two hosts (driver.migrate)', () => {
  it('moves a running counting guest A -> B -> A: the counter goes on in each serial log, the RBD disk is not copied, the source keeps nothing', async () => {
    const uuid = newUuid();
    uuids.push(uuid);
    await a.driver.spawn({ instance: { uuid, name: 'mig-roundtrip' }, image: imageId!, flavor: TINY });
    await countsGoOn(a, uuid, 3);
    const disks = (await rbdLs(a.stack, a.stack.ceph.pools.vms)).filter((n) => n.includes(uuid));
    expect(disks.length).toBeGreaterThan(0);
    // Host 2 without the ceph secret: the destination must define it before libvirt migrates.
    const secret = a.stack.libvirt.cephSecretUuid;
    await virsh(hosts[1]!.libvirtUri, ['secret-undefine', secret]);

    const progress: MigrationProgress[] = [];
    const seenOnA = readCounts(serialText(a, uuid));
    const there = await a.driver.migrate(uuid, { to: b.driver, onProgress: (p) => progress.push(p) });
    expect(there).toMatchObject({ instance: uuid, from: hosts[0]!.libvirtUri, to: hosts[1]!.libvirtUri });
    expect(await virsh(hosts[1]!.libvirtUri, ['secret-list'])).toContain(secret);
    await runsOnlyOn(b, a, uuid);
    const onB = await countsGoOn(b, uuid, 5);
    // Same guest: B's log continues A's count (no reboot: no boot lines, no restart at 0).
    expect(onB[0]!).toBeGreaterThan(seenOnA.at(-1)!);
    expect(onB).toEqual(onB.map((_, i) => onB[0]! + i));
    expect(readBootCount(serialText(b, uuid))).toBeUndefined();
    // Progress: monotonic, ends at 100 with the measured downtime.
    const percents = progress.map((p) => p.percent);
    expect(percents).toEqual([...percents].sort((x, y) => x - y));
    expect(progress.at(-1)).toMatchObject({ instance: uuid, percent: 100 });
    expect(there.downtimeMs).toBeGreaterThanOrEqual(0);
    expect(progress.at(-1)!.downtimeMs).toBe(there.downtimeMs);

    const back = await b.driver.migrate(uuid, { to: a.driver });
    await runsOnlyOn(a, b, uuid);
    const onA = await countsGoOn(a, uuid, 5);
    expect(onA[0]!).toBeGreaterThan(onB.at(-1)!);
    expect(onA).toEqual(onA.map((_, i) => onA[0]! + i));
    expect(readBootCount(serialText(a, uuid))).toBeUndefined();
    // The disks never moved: the same RBD images, still one set.
    expect((await rbdLs(a.stack, a.stack.ceph.pools.vms)).filter((n) => n.includes(uuid))).toEqual(disks);
    console.log(
      `migration downtime (libvirt job stats): A->B ${there.downtimeMs} ms in ${Math.round(there.durationMs)} ms, ` +
        `B->A ${back.downtimeMs} ms in ${Math.round(back.durationMs)} ms`,
    );
  }, 300_000);

  it('moves a guest in the middle of a burst of disk writes A -> B -> A: no write lost, none reordered', async () => {
    const uuid = newUuid();
    uuids.push(uuid);
    const writer = await uploadWriterGuest();
    images.push(writer);
    await a.driver.spawn({ instance: { uuid, name: 'mig-writes' }, image: writer, flavor: TINY });
    const ws = (t: TestDriver): number => (serialText(t, uuid).match(/^W\r?$/gm) ?? []).length;
    const moreWrites = (t: TestDriver, more: number) =>
      waitForSerial(t.driver.consolePath(uuid), () => (ws(t) >= more ? true : undefined), 60_000, 'more writes');
    await moreWrites(a, 3);
    let seen = ws(a);
    await a.driver.migrate(uuid, { to: b.driver });
    await moreWrites(b, 3);
    seen += ws(b);
    await b.driver.migrate(uuid, { to: a.driver });
    await moreWrites(a, 3);
    seen += ws(a);
    expect(serialText(a, uuid)).not.toContain('E');
    // Stop the writes, then read sectors 8..263 as the cluster has them (the guest never flushes,
    // so librbd's cache stays write-through: every acknowledged write is in the cluster).
    await virsh(hosts[0]!.libvirtUri, ['suspend', a.driver.domainName(uuid)]);
    const admin = await adminCluster(a.stack);
    let data: Buffer;
    try {
      data = await rbdRead(admin, a.stack.ceph.pools.vms, `${uuid}_disk`, 8 * 512, 256 * 512);
    } finally {
      await admin.close();
    }
    const values = Array.from({ length: 256 }, (_, i) => data.readUInt32LE(i * 512));
    expect(values.map((v) => v % 256)).toEqual(values.map((_, i) => i));
    // The last 256 writes k = K-255..K, each in its own sector: a lost write would leave an older value.
    const last = Math.max(...values);
    expect([...values].sort((x, y) => x - y)).toEqual(Array.from({ length: 256 }, (_, i) => last - 255 + i));
    expect(last + 1).toBeGreaterThanOrEqual(256 * seen);
  }, 300_000);

  it('a failure after libvirt reported success never undoes the destination: the guest keeps running there', async () => {
    const uuid = newUuid();
    uuids.push(uuid);
    await a.driver.spawn({ instance: { uuid, name: 'mig-late-failure' }, image: imageId!, flavor: TINY });
    await countsGoOn(a, uuid, 2);
    // Host 2's driver, whose commit step fails once (as a full disk would).
    const to: MigrationDestination = {
      preLiveMigration: (rec) => b.driver.preLiveMigration(rec),
      postLiveMigrationAtDestination: async () => {
        throw new Error('no space left to write the record');
      },
      rollbackLiveMigrationAtDestination: (u) => b.driver.rollbackLiveMigrationAtDestination(u),
    };
    const err = await a.driver.migrate(uuid, { to }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect((err as Error).message).toBe('no space left to write the record');
    // The guest left A and runs on B (not destroyed by a rollback): its counter goes on there.
    expect(await domains(hosts[0]!.libvirtUri)).not.toContain(a.driver.domainName(uuid));
    expect((await virsh(hosts[1]!.libvirtUri, ['domstate', b.driver.domainName(uuid)])).trim()).toBe('running');
    await countsGoOn(b, uuid, 3);
    // A keeps its journal entry for reconcile and the operator.
    expect(await a.driver.operations()).toMatchObject([
      { op: 'migrate-out', instance: uuid, status: 'rollback-failed' },
    ]);
    // A keeps its record too (state missing) until someone finishes: B commits, A's entry and record go.
    expect((await a.driver.get(uuid)).state).toBe('missing');
    await b.driver.postLiveMigrationAtDestination(uuid);
    for (const e of await a.driver.journal.entries()) await a.driver.journal.remove(e);
    await rm(dirname(a.driver.consolePath(uuid)), { recursive: true });
    await runsOnlyOn(b, a, uuid);
  }, 300_000);

  it('an abort midway (1 MiB/s, 8 GiB of guest RAM to send) leaves the guest running on A with its record; B has nothing', async () => {
    const uuid = newUuid();
    uuids.push(uuid);
    // Even all-zero RAM costs about 9 bytes a page in the stream: 8 GiB at 1 MiB/s needs more
    // than 18 s, so an abort once data moves (polled every 250 ms) always finds the migration in
    // flight. Untouched guest RAM is not allocated on the host (TCG or KVM).
    const flavor = { ...TINY, memoryMiB: 8192 };
    await a.driver.spawn({ instance: { uuid, name: 'mig-abort' }, image: imageId!, flavor });
    await countsGoOn(a, uuid, 3);
    const ac = new AbortController();
    const progress: MigrationProgress[] = [];
    const err = await a.driver
      .migrate(uuid, {
        to: b.driver,
        signal: ac.signal,
        bandwidthMiB: 1,
        onProgress: (p) => {
          progress.push(p);
          if ((p.memProcessed ?? 0) > 0) ac.abort();
        },
      })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(isDriverError(err, 'ABORTED')).toBe(true);
    // It was aborted in flight, far from done.
    expect(progress.at(-1)!.memRemaining).toBeGreaterThan(1024 ** 3);
    expect(progress.at(-1)!.percent).toBeLessThan(100);
    await runsOnlyOn(a, b, uuid);
    const counts = await countsGoOn(a, uuid, 5);
    expect(counts).toEqual(counts.map((_, i) => i));
  }, 300_000);

  it('an abort while the destination prepares stops before libvirt migrates (ABORTED), the guest stays on A', async () => {
    const uuid = newUuid();
    uuids.push(uuid);
    await a.driver.spawn({ instance: { uuid, name: 'mig-abort-early' }, image: imageId!, flavor: TINY });
    await countsGoOn(a, uuid, 2);
    const ac = new AbortController();
    const to: MigrationDestination = {
      preLiveMigration: async (rec) => {
        const target = await b.driver.preLiveMigration(rec);
        ac.abort();
        return target;
      },
      postLiveMigrationAtDestination: (u) => b.driver.postLiveMigrationAtDestination(u),
      rollbackLiveMigrationAtDestination: (u) => b.driver.rollbackLiveMigrationAtDestination(u),
    };
    const err = await a.driver.migrate(uuid, { to, signal: ac.signal }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isDriverError(err, 'ABORTED')).toBe(true);
    await runsOnlyOn(a, b, uuid);
    const counts = await countsGoOn(a, uuid, 3);
    expect(counts).toEqual(counts.map((_, i) => i));
  }, 300_000);

  it('a timeout aborts the migration the same way (TIMEOUT), the guest stays on A', async () => {
    const uuid = newUuid();
    uuids.push(uuid);
    await a.driver.spawn({
      instance: { uuid, name: 'mig-timeout' },
      image: imageId!,
      flavor: { ...TINY, memoryMiB: 4096 },
    });
    await countsGoOn(a, uuid, 2);
    const err = await a.driver.migrate(uuid, { to: b.driver, bandwidthMiB: 1, timeoutMs: 3_000 }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isDriverError(err, 'TIMEOUT')).toBe(true);
    await runsOnlyOn(a, b, uuid);
    const counts = await countsGoOn(a, uuid, 3);
    expect(counts).toEqual(counts.map((_, i) => i));
  }, 300_000);
});
