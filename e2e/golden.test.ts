// Golden images on RBD across two hosts (issue 21): 10 spawns of one qcow2 Glance image at once,
// 5 on each host of the two-host dev stack (two drivers, two libvirtds, one Ceph cluster), make one
// conversion and 10 clones of it, and every guest boots from its clone.
import { PassThrough } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '@ephemera/cli';
import { waitForMarker } from '@ephemera/testkit';
import {
  TINY,
  deleteImage,
  newUuid,
  rbdInfo,
  rbdLs,
  stackWithHosts,
  testDriver,
  uploadGuest,
  type TestDriver,
} from './support.js';

const tag = newUuid().slice(0, 8);
const marker = `golden-${tag}`;
let a: TestDriver;
let b: TestDriver;
let imageId: string | undefined;
const spawned: { t: () => TestDriver; uuid: string }[] = [];

beforeAll(async () => {
  const host2 = (await stackWithHosts(2)).hosts[1]!;
  const golden = { images: { rbd: { goldenImages: true } } };
  a = await testDriver({ host: { id: `e2e-golden-a-${tag}` }, ...golden });
  b = await testDriver({ host: { id: `e2e-golden-b-${tag}` }, libvirt: { uri: host2.libvirtUri }, ...golden });
  imageId = await uploadGuest(a.glance, marker, { format: 'qcow2' });
}, 300_000);

afterAll(async () => {
  for (const s of spawned)
    await s
      .t()
      ?.driver.destroy(s.uuid)
      .catch(() => undefined);
  await deleteImage(a?.glance, imageId);
  // The golden image has no clones left and its Glance image is gone: gc --cache removes it.
  await a?.driver.gcCache({ unusedSeconds: 0 }).catch(() => undefined);
  await b?.close();
  await a?.close();
}, 300_000);

describe('golden images across two hosts', () => {
  it('10 spawns of one qcow2 image at once on two hosts: one conversion, 10 clones, 10 guests boot', async () => {
    const id = imageId!;
    expect(await a.driver.explain(id, 'rbd')).toContain('built by this spawn');
    const runs = Array.from({ length: 10 }, (_, i) => {
      const t = i % 2 ? () => b : () => a;
      const uuid = newUuid();
      spawned.push({ t, uuid });
      return t().driver.spawn({ instance: { uuid, name: `e2e-golden-${i}` }, image: id, flavor: TINY });
    });
    const results = await Promise.all(runs);
    const reasons = results.map((r) => r.rootDisk.reason ?? '');
    expect(results.map((r) => r.rootDisk.method)).toEqual(Array(10).fill('cloned'));
    // One spawn converted; the nine others waited for it or found it built.
    expect(reasons.filter((r) => /golden image \S+ built \(/.test(r))).toHaveLength(1);
    expect(reasons.filter((r) => /golden image \S+ (reused|built by )/.test(r))).toHaveLength(9);
    const golden = `ephemera-golden-${id}`;
    for (const s of spawned) {
      const info = await rbdInfo(a.stack, `${a.stack.ceph.pools.vms}/${s.uuid}_disk`);
      expect(info.parent).toMatchObject({ image: golden, snapshot: 'snap' });
    }
    const markers = await Promise.all(spawned.map((s) => waitForMarker(s.t().driver.consolePath(s.uuid), 120_000)));
    expect(markers).toEqual(Array(10).fill(marker));
    expect(await b.driver.explain(id, 'rbd')).toContain('reused (cloned)');
  });

  it('ephemera gc --cache keeps the golden image while clones use it and removes it once they and the Glance image are gone', async () => {
    const id = imageId!;
    const golden = `ephemera-golden-${id}`;
    const cli = async (...args: string[]) => {
      const stdout = new PassThrough();
      const stderr = new PassThrough();
      let out = '';
      stdout.on('data', (d) => (out += String(d)));
      stderr.on('data', (d) => (out += String(d)));
      const env = {
        EPHEMERA_STACK_DIR: a.stack.dir,
        EPHEMERA_IMAGES_RBD_GOLDEN_IMAGES: 'true',
        EPHEMERA_LOG_LEVEL: 'error',
      };
      const code = await run(['--state-dir', a.stateDir, ...args], { stdout, stderr, env });
      return { code, out };
    };
    const kept = await cli('gc', '--cache', '--unused', '0');
    expect(kept.code).toBe(0);
    expect(kept.out).toMatch(new RegExp(`kept +rbd:${golden} \\(golden\\): 10 clone\\(s\\) use it`));
    for (const s of spawned.splice(0)) await s.t().driver.destroy(s.uuid);
    await deleteImage(a.glance, id);
    imageId = undefined;
    const dry = await cli('gc', '--cache', '--dry-run');
    expect(dry.out).toMatch(/would be removed: its Glance image is gone/);
    expect(await rbdLs(a.stack, a.stack.ceph.pools.vms)).toContain(golden);
    const removed = await cli('gc', '--cache');
    expect(removed.out).toMatch(new RegExp(`removed +rbd:${golden} \\(golden\\): its Glance image is gone`));
    expect(await rbdLs(a.stack, a.stack.ceph.pools.vms)).not.toContain(golden);
  });
});
