// reconcile() after a snapshot killed mid-way (reliability known failures 4, 5, 8), on the real
// Ceph, Glance and libvirtd of the dev stack:
// - a DIRECT snapshot killed while cloning into the images pool: the temporary RBD snapshot on
//   the instance disk (protected, with a clone child) and the images-pool image (still watched by
//   the dead process) are journaled and removed, without waiting out the dead watch (the stack's
//   images-pool user cannot read the vms pool, so the backend copies the snapshot: a flat image);
// - an UPLOAD Glance is still receiving when reconcile runs: reconcile waits for it to settle
//   instead of deleting the image under it (the upload then wrote RBD data for a deleted image);
// - stale files in <stateDir>/tmp that belong to no unfinished operation are swept.
import { execFile, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GlanceClient } from '@ephemera/glance';
import { loadStack } from '@ephemera/testkit';
import { Journal, createDriver, loadConfig, type Driver } from '@ephemera/driver';

const exec = promisify(execFile);
const MiB = 1024 * 1024;
const stack = loadStack();
const admin = stack.ceph.users.admin;
const rbd = async (...args: string[]): Promise<string> =>
  (await exec('rbd', ['--conf', admin.confPath, '--id', admin.id, ...args], { timeout: 60_000 })).stdout;
const rbdLs = async (pool: string): Promise<string[]> =>
  JSON.parse(await rbd('ls', '--format', 'json', pool)) as string[];
const snapsOf = async (spec: string): Promise<string[]> =>
  (JSON.parse(await rbd('snap', 'ls', '--format', 'json', spec)) as { name: string }[]).map((s) => s.name);

let dir: string;
let driver: Driver;
let journal: Journal;
const glance = new GlanceClient({ url: stack.glance.url });
const uuid = randomUUID();
const images: string[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'eph-snapshot-reconcile-'));
  const { config } = loadConfig({
    env: {},
    stack,
    overrides: { stateDir: join(dir, 'state'), instancesPath: join(dir, 'instances'), log: { level: 'warn' } },
  });
  driver = await createDriver({ config, reconcile: false });
  journal = new Journal(driver.config.stateDir);
  expect(driver.backends.get('rbd').capabilities.directSnapshot).toBe(true);
});

afterAll(async () => {
  for (const id of images) {
    await glance.deleteImage(id).catch(() => undefined);
    await rbd('snap', 'unprotect', `${stack.ceph.pools.images}/${id}@snap`).catch(() => undefined);
    await rbd('snap', 'purge', `${stack.ceph.pools.images}/${id}`).catch(() => undefined);
    await rbd('rm', `${stack.ceph.pools.images}/${id}`).catch(() => undefined);
  }
  await driver?.backends
    .get('rbd')
    .remove({ instance: uuid, name: 'disk' })
    .catch(() => undefined);
  await driver?.close();
  await rm(dir, { recursive: true, force: true });
});

describe('reconcile of a killed snapshot', () => {
  it('removes what a direct snapshot killed mid-copy left: temp snapshot, images-pool image (dead watch evicted), Glance image', async () => {
    const imageId = randomUUID();
    images.push(imageId);
    const disk = `${stack.ceph.pools.vms}/${uuid}_disk`;
    const dest = `${stack.ceph.pools.images}/${imageId}`;
    await driver.backends.get('rbd').createBlank({ instance: uuid, name: 'disk' }, 8 * MiB);
    // What the killed process had made: the journal (intents before acting), the Glance record,
    // the temporary snapshot (protected, as for a clone), the image it was copying into...
    const op = await journal.begin('snapshot', uuid, { name: 'killed', imageId });
    await op.intent('direct-snapshot', { kind: 'direct-snapshot', backend: 'rbd', disk: 'disk', imageId });
    await op.intent('image', { kind: 'glance-image', id: imageId });
    await op.abandon();
    await glance.createImage({ id: imageId, name: 'killed-direct', disk_format: 'raw', container_format: 'bare' });
    await rbd('snap', 'create', `${disk}@ephemera-direct-${imageId}`);
    await rbd('snap', 'protect', `${disk}@ephemera-direct-${imageId}`);
    await rbd('create', '--size', '8M', dest);
    // ...and its watch on that image (it died while writing): a SIGKILLed `rbd watch`.
    const watcher = spawn('rbd', ['--conf', admin.confPath, '--id', admin.id, 'watch', dest], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    await new Promise<void>((resolve, reject) => {
      watcher.stdout.on('data', (d) => String(d).includes('press enter') && resolve());
      watcher.once('exit', (code) => reject(new Error(`rbd watch exited ${code}`)));
    });
    watcher.kill('SIGKILL');
    expect(await rbd('status', '--format', 'json', dest)).toContain('"watchers":[{'); // the dead watch lingers

    const t0 = performance.now();
    const actions = (await driver.reconcile()).filter((a) => a.opId === op.opId);
    const ms = performance.now() - t0;
    expect(actions.map((a) => [a.op, a.action, a.error])).toEqual([['snapshot', 'rolled-back', undefined]]);
    expect(actions[0]!.removed).toEqual([`glance image ${imageId}`, `direct snapshot disk:${imageId}`]);
    expect(ms, 'the dead watch is evicted, not waited out (osd_client_watch_timeout 30 s)').toBeLessThan(25_000);
    expect(await rbdLs(stack.ceph.pools.images)).not.toContain(imageId);
    expect(await snapsOf(disk)).toEqual([]);
    await expect(glance.getImage(imageId)).rejects.toThrow();
    expect((await journal.entries()).filter((e) => e.instance === uuid)).toEqual([]);
    // Idempotent: nothing left to undo.
    expect(await driver.backends.get('rbd').removeDirectSnapshot!({ instance: uuid, name: 'disk' }, { imageId })).toBe(
      false,
    );
  }, 120_000);

  it('waits while Glance is still receiving an upload, so the upload leaves no RBD data behind', async () => {
    const img = await glance.createImage({ name: 'killed-upload', disk_format: 'raw', container_format: 'bare' });
    images.push(img.id);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    async function* body(): AsyncGenerator<Uint8Array> {
      yield new Uint8Array(MiB).fill(1);
      await gate;
      yield new Uint8Array(MiB).fill(2);
    }
    const upload = glance.upload(img.id, body()).then(
      () => 'uploaded',
      (e: Error) => `failed: ${e.message}`,
    );
    await glance.waitForStatus(img.id, ['saving'], { timeoutMs: 30_000 });
    const op = await journal.begin('snapshot', uuid, { name: 'killed', imageId: img.id });
    await op.intent('image', { kind: 'glance-image', id: img.id });
    await op.abandon();

    const t0 = performance.now();
    const reconciled = driver.reconcile();
    setTimeout(release, 1_500); // Glance finishes the upload 1.5 s later
    const actions = (await reconciled).filter((a) => a.opId === op.opId);
    expect(performance.now() - t0, 'reconcile waited for the upload').toBeGreaterThan(1_400);
    expect(actions.map((a) => [a.action, a.removed])).toEqual([['rolled-back', [`glance image ${img.id}`]]]);
    expect(await upload).toBe('uploaded');
    await expect(glance.getImage(img.id)).rejects.toThrow();
    // Glance deleted the image's data with the record: nothing appears in its pool afterwards.
    await new Promise((r) => setTimeout(r, 2_000));
    expect((await rbdLs(stack.ceph.pools.images)).filter((n) => n.startsWith(img.id))).toEqual([]);
  }, 120_000);

  it('sweeps temp files of no unfinished operation and keeps those of a live one', async () => {
    const tmp = join(driver.config.stateDir, 'tmp');
    await mkdir(tmp, { recursive: true });
    const stale = join(tmp, `${randomUUID()}.raw`);
    const live = join(tmp, `${randomUUID()}.raw`);
    await writeFile(stale, 'left by a killed qemu-img');
    await writeFile(live, 'being written');
    // An upload in progress in another (live) process: pid 1 is alive.
    const other = randomUUID();
    const op = await journal.begin('snapshot', other, { name: 'live' });
    await op.intent('upload-file', { kind: 'file', path: live });
    await op.abandon();
    const { writeFileSync, readFileSync } = await import('node:fs');
    writeFileSync(op.path, readFileSync(op.path, 'utf8').replace(`"pid":${process.pid}`, '"pid":1'));
    try {
      const actions = (await driver.reconcile()).filter((a) => a.instance === other);
      expect(actions.map((a) => a.action)).toEqual(['skipped']);
      expect(existsSync(stale)).toBe(false);
      expect(existsSync(live)).toBe(true);
    } finally {
      await rm(op.path, { force: true });
    }
  });
});
