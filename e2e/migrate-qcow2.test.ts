// Live block migration of qcow2 instances between the two hosts of the dev stack (issue 19.3):
// host 2's driver fetches the image's base into its own cache (once per image) and pre-creates
// the overlays, libvirt copies only the overlays (NON_SHARED_INC), and host 1 keeps nothing but
// its shared image cache. The counting guest (`EPHEMERA-COUNT n` every 100 ms, never powers off)
// shows that the same guest kept running; its boot counter (sector 2, written at boot into the
// overlay) shows that the bytes it wrote on host 1 are on host 2.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  isDriverError,
  type DriverProgressEvent,
  type MigrationDestination,
  type MigrationProgress,
} from '@ephemera/driver';
import {
  BOOT_COUNTER_OFFSET,
  MARKER_OFFSET,
  readBootCount,
  readCounts,
  stackCommand,
  type StackHost,
} from '@ephemera/testkit';
import {
  TINY,
  countsGoOn,
  deleteImage,
  newUuid,
  serialText,
  testDriver,
  uploadGuest,
  type TestDriver,
} from './support.js';

const exec = promisify(execFile);
const MiB = 1024 * 1024;
const BASE_BYTES = 16 * MiB;

let a: TestDriver;
let b: TestDriver;
let hosts: StackHost[];
let imageId: string | undefined;
const marker = `qcow2-migrate-${newUuid().slice(0, 8)}`;
const uuids: string[] = [];

type Cache = { cachedBase(imageId: string): Promise<{ path: string } | undefined> };
const cache = (t: TestDriver): Cache => t.driver.backends.get('qcow2') as unknown as Cache;

/** Guest bytes of a disk file QEMU holds open (qemu-io with force-share, read-only). */
async function guestBytes(path: string, offset: number, length: number): Promise<Buffer> {
  const { stdout } = await exec('qemu-io', ['-U', '-r', '-f', 'qcow2', '-c', `read -v ${offset} ${length}`, path], {
    timeout: 30_000,
  });
  const hex = [...stdout.matchAll(/^[0-9a-f]{8}:\s+((?:[0-9a-f]{2} ){1,16})/gm)].map((m) => m[1]!.replace(/ /g, ''));
  return Buffer.from(hex.join(''), 'hex');
}

/** The instance runs on `on` only; `off` has no record, domain, console log, journal entry or disk of it. */
async function runsOnlyOn(on: TestDriver, off: TestDriver, uuid: string): Promise<void> {
  const inst = await on.driver.get(uuid);
  expect(inst.state).toBe('running');
  await expect(off.driver.get(uuid)).rejects.toThrow(/no instance/);
  expect(existsSync(off.driver.consolePath(uuid))).toBe(false);
  expect(await off.driver.operations()).toEqual([]);
  expect(await on.driver.operations()).toEqual([]);
  expect(await off.driver.backends.get('qcow2').list({ instance: uuid })).toEqual([]);
  expect((await readdir(off.driver.config.instancesPath)).filter((n) => n.startsWith(uuid))).toEqual([]);
  const disks = await on.driver.backends.get('qcow2').list({ instance: uuid });
  expect(disks.map((d) => d.disk.name)).toEqual(['disk']);
  for (const d of disks) expect(d.owner?.hostId).toBe(on.driver.config.host.id);
}

beforeAll(async () => {
  await stackCommand(['up', '--hosts', '2'], { timeoutMs: 300_000 });
  a = await testDriver({ host: { id: 'mig-qcow2-a' }, images: { type: 'qcow2' } });
  hosts = a.stack.hosts;
  b = await testDriver({
    host: { id: 'mig-qcow2-b' },
    images: { type: 'qcow2' },
    libvirt: { uri: hosts[1]!.libvirtUri },
  });
  // 16 MiB of random data after the boot code: a full copy would move all of it.
  imageId = await uploadGuest(a.glance, marker, { mode: 'count', size: BASE_BYTES, fill: 'random' });
}, 300_000);

afterAll(async () => {
  for (const u of uuids) {
    await a?.driver.destroy(u).catch(() => undefined);
    await b?.driver.destroy(u).catch(() => undefined);
  }
  await deleteImage(a?.glance, imageId);
  await b?.close();
  await a?.close();
});

describe('live block migration of qcow2 instances (driver.migrate)', () => {
  const fetches: DriverProgressEvent[] = [];
  const onProgress = (e: DriverProgressEvent): void => {
    if (e.op === 'migrate-in' && e.phase === 'download') fetches.push(e);
  };

  it('moves a running qcow2 guest A -> B: the counter goes on, its disk writes are there, only the overlay was copied, A keeps only its image cache', async () => {
    const uuid = newUuid();
    uuids.push(uuid);
    await a.driver.spawn({ instance: { uuid, name: 'mig-qcow2' }, image: imageId!, flavor: TINY });
    const seenOnA = await countsGoOn(a, uuid, 3);
    // The guest wrote its boot counter (1) into A's overlay at boot.
    expect(readBootCount(serialText(a, uuid))).toBe(1);
    expect(await cache(b).cachedBase(imageId!)).toBeUndefined();
    const aBase = (await cache(a).cachedBase(imageId!))!.path;

    b.driver.on('progress', onProgress);
    const progress: MigrationProgress[] = [];
    const r = await a.driver.migrate(uuid, { to: b.driver, onProgress: (p) => progress.push(p) });
    expect(r).toMatchObject({ instance: uuid, from: hosts[0]!.libvirtUri, to: hosts[1]!.libvirtUri });
    await runsOnlyOn(b, a, uuid);

    // Same guest: B's log continues A's count, no reboot.
    const onB = await countsGoOn(b, uuid, 5);
    expect(onB[0]!).toBeGreaterThan(seenOnA.at(-1)!);
    expect(onB).toEqual(onB.map((_, i) => onB[0]! + i));
    expect(readBootCount(serialText(b, uuid))).toBeUndefined();

    // B fetched the base into its own cache (once); its overlay sits on it, with A's writes in it.
    expect(fetches.length).toBeGreaterThan(0);
    const bBase = (await cache(b).cachedBase(imageId!))!.path;
    expect((await stat(bBase)).size).toBe(BASE_BYTES);
    const path = (await b.driver.backends.get('qcow2').diskSource({ instance: uuid, name: 'disk' })) as {
      path: string;
    };
    const root = (await b.driver.backends.get('qcow2').list({ instance: uuid }))[0]!;
    expect(root.parent).toBe(bBase);
    expect((await guestBytes(path.path, BOOT_COUNTER_OFFSET, 2)).readUInt16LE(0)).toBe(1);
    expect((await guestBytes(path.path, MARKER_OFFSET, marker.length)).toString('latin1')).toBe(marker);

    // libvirt copied the overlay only: far less than the base.
    expect(r.diskProcessed).toBeGreaterThan(0);
    expect(r.diskProcessed!).toBeLessThan(BASE_BYTES / 16);
    const percents = progress.map((p) => p.percent);
    expect(percents).toEqual([...percents].sort((x, y) => x - y));
    expect(progress.at(-1)).toMatchObject({ percent: 100, diskProcessed: r.diskProcessed, diskRemaining: 0 });
    // A keeps its shared image cache (other instances use it), nothing of the instance.
    expect(existsSync(aBase)).toBe(true);
    console.log(
      `qcow2 block migration: ${Math.round(r.durationMs)} ms, downtime ${r.downtimeMs} ms, ` +
        `disk copied ${r.diskProcessed} bytes of a ${BASE_BYTES}-byte base`,
    );
  }, 120_000);

  it('a second instance of the same image: an abort after B prepared removes B’s copies; then it moves reusing B’s cached base (no second fetch); the first moves back B -> A', async () => {
    const uuid = newUuid();
    uuids.push(uuid);
    const bBase = (await cache(b).cachedBase(imageId!))!.path;
    const inode = (await stat(bBase)).ino;
    const before = fetches.length;
    await a.driver.spawn({ instance: { uuid, name: 'mig-qcow2-2' }, image: imageId!, flavor: TINY });
    await countsGoOn(a, uuid, 2);
    // Aborted once B made its copies: B removes them (not its cache), the guest stays on A.
    const ac = new AbortController();
    const to: MigrationDestination = {
      preLiveMigration: async (rec, from, disks) => {
        const target = await b.driver.preLiveMigration(rec, from, disks);
        expect(await b.driver.backends.get('qcow2').list({ instance: uuid })).toHaveLength(1);
        ac.abort();
        return target;
      },
      postLiveMigrationAtDestination: (u) => b.driver.postLiveMigrationAtDestination(u),
      rollbackLiveMigrationAtDestination: (u) => b.driver.rollbackLiveMigrationAtDestination(u),
    };
    const err = await a.driver.migrate(uuid, { to, signal: ac.signal }).catch((e: unknown) => e);
    expect(isDriverError(err, 'ABORTED')).toBe(true);
    await runsOnlyOn(a, b, uuid);
    expect((await stat(bBase)).ino).toBe(inode);

    const r = await a.driver.migrate(uuid, { to: b.driver });
    expect(r.diskProcessed!).toBeLessThan(BASE_BYTES / 16);
    expect(fetches.length).toBe(before);
    expect((await stat(bBase)).ino).toBe(inode);
    await runsOnlyOn(b, a, uuid);
    const onB = await countsGoOn(b, uuid, 3);
    expect(onB).toEqual(onB.map((_, i) => onB[0]! + i));

    // Back to A, whose cache still has the base: the counter goes on there.
    const first = uuids[0]!;
    const lastOnB = readCounts(serialText(b, first)).at(-1)!;
    await b.driver.migrate(first, { to: a.driver });
    await runsOnlyOn(a, b, first);
    const onA = await countsGoOn(a, first, 3);
    expect(onA[0]!).toBeGreaterThan(lastOnB);
    expect(onA).toEqual(onA.map((_, i) => onA[0]! + i));
    expect(readBootCount(serialText(a, first))).toBeUndefined();
    // Still one base on B (the second instance uses it).
    expect((await stat(bBase)).ino).toBe(inode);
  }, 120_000);
});
