// Many compute hosts on one Ceph cluster (issue 18): two drivers, one per host of the two-host
// dev stack (own libvirtd, own state directory, own host id), share the pool `vms`. Each host's
// gc, list and reconcile touch only the disks it owns.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import type { ImageBackend } from '@ephemera/image-backend';
import { cephCli } from '@ephemera/testkit';
import {
  TINY,
  cliAs,
  deleteImage,
  newUuid,
  rbdLs,
  stackWithHosts,
  testDriver,
  uploadGuest,
  waitShutoff,
  type TestDriver,
} from './support.js';

const MiB = 1024 * 1024;
const tag = newUuid().slice(0, 8);
const HOST_A = `e2e-a-${tag}`;
const HOST_B = `e2e-b-${tag}`;
let a: TestDriver;
let b: TestDriver;
let imageId: string | undefined;
let countingId: string | undefined; // a guest that keeps running (its QEMU keeps the disks open)
const made: { t: () => TestDriver; uuid: string }[] = [];
const children: ChildProcess[] = [];
const repo = resolve(import.meta.dirname, '..');

beforeAll(async () => {
  const host2 = (await stackWithHosts(2)).hosts[1]!;
  a = await testDriver({ host: { id: HOST_A } });
  b = await testDriver({ host: { id: HOST_B }, libvirt: { uri: host2.libvirtUri } });
  imageId = await uploadGuest(a.glance, `hosts-${tag}`);
}, 180_000);

afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const m of made)
    await m
      .t()
      ?.driver.destroy(m.uuid)
      .catch(() => undefined);
  // Disks a failed test left handed over to A (adopt): A's orphans now.
  if (made.length) await a?.driver.gc({ remove: true, instances: made.map((m) => m.uuid) }).catch(() => undefined);
  await deleteImage(a.glance, imageId);
  await deleteImage(a.glance, countingId);
  await b?.close();
  await a?.close();
}, 300_000);

const rbdOf = (t: TestDriver): ImageBackend => t.driver.backends.get('rbd');

describe('two hosts on one Ceph cluster', () => {
  it("B's stopped instance survives gc --delete on A; A's orphan is still collected by A", async () => {
    const uuid = newUuid();
    made.push({ t: () => b, uuid });
    await b.driver.spawn({
      instance: { uuid, name: `hosts-b-${tag}` },
      image: imageId!,
      flavor: { ...TINY, swapMiB: 8 },
    });
    await b.driver.powerOff(uuid, { graceful: false });
    await waitShutoff(b.driver, uuid);
    // A's orphan: what a killed spawn of A leaves once its journal is gone (a disk owned by A,
    // no domain, no record).
    const orphan = newUuid();
    await rbdOf(a).createBlank({ instance: orphan, name: 'disk' }, 8 * MiB, {
      owner: { hostId: HOST_A, version: '0.0.0-e2e' },
    });

    const report = await a.driver.gc({ remove: true });
    expect(report.removed).toEqual([`${orphan}_disk`]);
    expect(report.orphans.map((o) => o.instance)).toEqual([orphan]);
    const pool = await rbdLs(a.stack, 'vms');
    expect(pool).toEqual(expect.arrayContaining([`${uuid}_disk`, `${uuid}_disk.swap`]));
    expect(pool).not.toContain(`${orphan}_disk`);
    // B's disks are still B's and its instance starts again.
    for (const d of await rbdOf(b).list({ instance: uuid })) expect(d.owner?.hostId).toBe(HOST_B);
    // It starts again (the guest may halt by itself afterwards): its disks are all there.
    await expect(b.driver.powerOn(uuid)).resolves.toBeUndefined();
  }, 300_000);

  it('ephemera gc: instance filters; --all-hosts lists other hosts read-only; unowned only with --include-unowned', async () => {
    const uuidB = made[0]!.uuid; // B's instance of the first test
    const orphan = newUuid();
    const unowned = newUuid();
    await rbdOf(a).createBlank({ instance: orphan, name: 'disk' }, 8 * MiB, { owner: a.driver.ownerStamp() });
    await rbdOf(a).createBlank({ instance: unowned, name: 'disk' }, 8 * MiB); // as made before ownership

    const look = await cliAs(a, HOST_A, 'gc', '--all-hosts', '--json', orphan, unowned, uuidB);
    expect(look.code, look.err).toBe(0);
    const r = JSON.parse(look.out);
    expect(r.orphans.map((o: { id: string }) => o.id)).toEqual([`${orphan}_disk`]);
    expect(r.unowned.map((o: { id: string }) => o.id)).toEqual([`${unowned}_disk`]);
    expect(r.otherHosts.map((o: { id: string; hostId: string }) => `${o.hostId}:${o.id}`).sort()).toEqual([
      `${HOST_B}:${uuidB}_disk`,
      `${HOST_B}:${uuidB}_disk.swap`,
    ]);
    expect(r.removed).toEqual([]);
    const text = await cliAs(a, HOST_A, 'gc', '--all-hosts', orphan, unowned, uuidB);
    expect(text.out).toContain(`owned by ${HOST_B} (not touched)`);
    expect(text.out).toContain(`unowned rbd:${unowned}_disk`);

    // --delete everything it may, all hosts in view: A's orphan only.
    const del = await cliAs(a, HOST_A, 'gc', '--delete', '--all-hosts', '--json', orphan, unowned, uuidB);
    expect(del.code, del.err).toBe(0);
    expect(JSON.parse(del.out).removed).toEqual([`${orphan}_disk`]);
    expect(await rbdOf(a).exists({ instance: unowned, name: 'disk' })).toBe(true);
    // The unowned disk goes only when asked, and B's never.
    const all = await cliAs(a, HOST_A, 'gc', '--delete', '--include-unowned', '--json', unowned, uuidB);
    expect(all.code, all.err).toBe(0);
    expect(JSON.parse(all.out).removed).toEqual([`${unowned}_disk`]);
    expect((await rbdOf(b).list({ instance: uuidB })).map((d) => d.disk.name)).toEqual(['disk', 'disk.swap']);
    // A bad filter is a usage error before anything is touched.
    expect((await cliAs(a, HOST_A, 'gc', 'not-a-uuid')).code).toBe(2);
  }, 300_000);

  it('10 spawns of one image on each host at once: 20 clones, each owned by its maker; each host lists only its own', async () => {
    const hosts = [
      { t: a, id: HOST_A, uuids: Array.from({ length: 10 }, newUuid) },
      { t: b, id: HOST_B, uuids: Array.from({ length: 10 }, newUuid) },
    ];
    for (const h of hosts) for (const uuid of h.uuids) made.push({ t: () => h.t, uuid });
    const started = performance.now();
    const results = await Promise.all(
      hosts.flatMap((h) =>
        h.uuids.map((uuid, i) =>
          h.t.driver.spawn({ instance: { uuid, name: `hosts-${h.id}-${i}` }, image: imageId!, flavor: TINY }),
        ),
      ),
    );
    console.log(`20 spawns on 2 hosts: ${Math.round(performance.now() - started)} ms`);
    expect(results.map((r) => r.rootDisk.method)).toEqual(Array(20).fill('cloned'));
    for (const h of hosts) {
      const other = hosts.find((x) => x !== h)!;
      for (const uuid of h.uuids) {
        const [disk, ...rest] = await rbdOf(h.t).list({ instance: uuid });
        expect(rest).toEqual([]);
        expect(disk!.parent).toMatch(/^images\//);
        expect(disk!.owner).toMatchObject({ hostId: h.id, instance: uuid, disk: 'disk' });
      }
      const listed = (await h.t.driver.list()).map((i) => i.uuid);
      expect(listed).toEqual(expect.arrayContaining(h.uuids));
      for (const uuid of other.uuids) expect(listed).not.toContain(uuid);
      // gc sees the other host's 10 disks only as the other host's, and no orphan of its own.
      const gc = await h.t.driver.gc({ allHosts: true, instances: [...h.uuids, ...other.uuids] });
      expect(gc.orphans).toEqual([]);
      expect(gc.unowned).toEqual([]);
      expect(gc.otherHosts!.map((o) => o.instance).sort()).toEqual([...other.uuids].sort());
      expect(new Set(gc.otherHosts!.map((o) => o.hostId))).toEqual(new Set([other.id]));
    }
    for (const h of hosts) for (const uuid of h.uuids) await h.t.driver.destroy(uuid);
    const pool = await rbdLs(a.stack, 'vms');
    for (const h of hosts) for (const uuid of h.uuids) expect(pool.filter((n) => n.startsWith(uuid))).toEqual([]);
  }, 600_000);

  it("reconcile after a SIGKILL of host A's driver mid-spawn touches nothing of B's", async () => {
    // The child runs the built driver (dist), as e2e/crash.test.ts does.
    await promisify(execFile)('npx', ['nx', 'run', '@ephemera/driver:build'], {
      cwd: repo,
      timeout: 600_000,
      maxBuffer: 64 << 20,
      env: { ...process.env, NX_DAEMON: 'false', NX_NO_CLOUD: 'true', NX_TUI: 'false' },
    });
    const uuidB = made[0]!.uuid; // B's instance of the first test
    const killed = newUuid();
    const before = await rbdOf(b).list({ instance: uuidB });

    const configPath = join(a.stateDir, 'driver.json');
    await writeFile(configPath, JSON.stringify(a.driver.config));
    const child = spawn(
      process.execPath,
      [join(repo, 'e2e', 'fixtures', 'spawn-child.mjs'), configPath, killed, imageId!],
      {
        cwd: repo,
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    children.push(child);
    let output = '';
    child.stdout!.on('data', (d) => (output += String(d)));
    child.stderr!.on('data', (d) => (output += String(d)));
    // Killed once the root disk is made (the swap disk's intent is journaled).
    const jdir = join(a.stateDir, 'journal');
    const deadline = Date.now() + 120_000;
    for (let hit = false; !hit; ) {
      if (child.exitCode !== null) throw new Error(`child exited (${child.exitCode}) early: ${output}`);
      if (Date.now() > deadline) throw new Error(`no swap-disk intent within 120 s: ${output}`);
      for (const f of await readdir(jdir).catch(() => [] as string[])) {
        const text = await readFile(join(jdir, f), 'utf8').catch(() => '');
        if (text.includes(`"instance":"${killed}"`) && text.includes('"t":"intent","step":"swap-disk"')) hit = true;
      }
      if (!hit) await new Promise((r) => setTimeout(r, 10));
    }
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    expect((await rbdOf(a).getOwner!({ instance: killed, name: 'disk' }))?.hostId).toBe(HOST_A);

    // A disk of B under the killed instance's UUID (as if handed over to B after the crash): A's sweep of the
    // instance's disks must leave it.
    const handed = { instance: killed, name: 'disk.local' };
    await rbdOf(b).createBlank(handed, 8 * MiB, { owner: b.driver.ownerStamp() });
    const actions = (await a.driver.reconcile()).filter((x) => x.instance === killed);
    expect(actions).toEqual([expect.objectContaining({ op: 'spawn', action: 'rolled-back' })]);
    expect(actions[0]!.removed).toContain('disk rbd:disk');
    expect(actions[0]!.removed.join(',')).not.toContain('disk.local');
    // Of the killed instance only B's disk is left, still B's; B's instance is as it was.
    expect((await rbdLs(a.stack, 'vms')).filter((n) => n.startsWith(killed))).toEqual([`${killed}_disk.local`]);
    expect((await rbdOf(b).getOwner!(handed))?.hostId).toBe(HOST_B);
    expect(await rbdOf(b).list({ instance: uuidB })).toEqual(before);
    expect((await b.driver.get(uuidB)).state).not.toBe('missing');
    await rbdOf(b).remove(handed);
  }, 900_000);

  it("ephemera adopt --from-host: refused while the old host's QEMU has the disks open, done once it is fenced", async () => {
    const uuid = newUuid();
    made.push({ t: () => b, uuid });
    countingId = await uploadGuest(a.glance, `hosts-count-${tag}`, { mode: 'count' });
    await b.driver.spawn({
      instance: { uuid, name: `hosts-adopt-${tag}` },
      image: countingId,
      flavor: { ...TINY, swapMiB: 8 },
    });
    const ids = [`${uuid}_disk`, `${uuid}_disk.swap`];
    // B's QEMU holds them (a live host): refused, nothing handed over.
    const refused = await cliAs(a, HOST_A, 'adopt', uuid, '--from-host', HOST_B);
    expect(refused.code).toBe(1);
    expect(refused.err).toContain(`host ${HOST_B} may be alive`);
    expect(refused.err).toContain('watcher client.');
    for (const d of await rbdOf(a).list({ instance: uuid })) expect(d.owner?.hostId).toBe(HOST_B);
    // B "dies": its clients are fenced as an operator does before adopting.
    // (QEMU has one Ceph client per disk: every disk's clients.)
    const clients = await Promise.all(
      (await rbdOf(a).list({ instance: uuid })).map((d) => rbdOf(a).diskClients!(d.disk)),
    );
    const fenced = [...new Set(clients.flat().map((c) => c.address))];
    expect(fenced.length).toBeGreaterThan(0);
    for (const addr of fenced) await cephCli('admin', ['ceph', 'osd', 'blocklist', 'add', addr, '600']);
    try {
      const done = await cliAs(a, HOST_A, 'adopt', uuid, '--from-host', HOST_B, '--json');
      expect(done.code, done.err).toBe(0);
      expect(JSON.parse(done.out)).toMatchObject({
        instance: uuid,
        fromHost: HOST_B,
        adopted: ids.map((i) => `rbd:${i}`),
      });
      for (const d of await rbdOf(a).list({ instance: uuid })) expect(d.owner?.hostId).toBe(HOST_A);
      // Again: nothing left to adopt, the disks are already this host's.
      const again = await cliAs(a, HOST_A, 'adopt', uuid, '--from-host', HOST_B, '--json');
      expect(JSON.parse(again.out)).toMatchObject({ adopted: [], alreadyOwned: ids.map((i) => `rbd:${i}`) });
      await b.driver.powerOff(uuid, { graceful: false });
    } finally {
      for (const addr of fenced) await cephCli('admin', ['ceph', 'osd', 'blocklist', 'rm', addr]);
    }
    // B's destroy (its record and domain) no longer touches the disks: they are A's now, and A's
    // gc collects them as its orphans.
    await b.driver.destroy(uuid);
    expect((await rbdLs(a.stack, 'vms')).filter((n) => n.startsWith(uuid)).sort()).toEqual(ids);
    const gc = await a.driver.gc({ instances: [uuid], remove: true });
    expect(gc.removed.sort()).toEqual(ids);
  }, 600_000);
});
