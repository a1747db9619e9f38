// The `ephemera` command (built bin) against the dev stack: upload, explain, boot, list, console,
// snapshot, destroy, gc, reconcile; --json output and exit codes.
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { guestImage, loadStack } from '@ephemera/testkit';
import { deleteImage, newUuid, rbdLs, virshDomains } from './support.js';
import { GlanceClient } from '@ephemera/glance';

const exec = promisify(execFile);
const repo = resolve(import.meta.dirname, '..');
const bin = join(repo, 'packages/cli/dist/bin.js');
let stateDir: string;
const images: string[] = [];
const uuid = newUuid();

async function ephemera(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await exec(process.execPath, [bin, '--state-dir', stateDir, ...args], { timeout: 300_000, maxBuffer: 16 << 20 });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

beforeAll(async () => {
  await exec('npx', ['nx', 'run', '@ephemera/cli:build'], {
    cwd: repo, timeout: 600_000, maxBuffer: 64 << 20, env: { ...process.env, NX_DAEMON: 'false', NX_NO_CLOUD: 'true', NX_TUI: 'false' },
  });
  stateDir = await mkdtemp(join(tmpdir(), 'ephemera-e2e-cli-'));
}, 900_000);

afterAll(async () => {
  await ephemera('destroy', uuid);
  const glance = new GlanceClient({ url: loadStack().glance.url });
  for (const id of images.reverse()) await deleteImage(glance, id);
  await rm(stateDir, { recursive: true, force: true });
});

describe('ephemera CLI on the dev stack', () => {
  it('uploads, explains, boots, lists, shows the console, snapshots and destroys', async () => {
    const marker = `cli-${uuid.slice(0, 8)}`;
    const up = await ephemera('image', 'upload', await guestImage({ marker }), '--name', marker, '--json');
    expect(up.code, up.stderr).toBe(0);
    const image = JSON.parse(up.stdout);
    images.push(image.id);
    expect(image).toMatchObject({ status: 'active', disk_format: 'raw' });

    const explain = await ephemera('image', 'explain', image.id);
    expect(explain.stdout).toMatch(/plan: clone by rbd-clone/);
    const plan = JSON.parse((await ephemera('image', 'explain', image.id, '--backend', 'lvm', '--json')).stdout);
    expect(plan.chosen.method).toBe('download');
    expect(plan.declined.map((d: { handler: string }) => d.handler)).toContain('rbd-clone');

    const boot = await ephemera('boot', '--image', image.id, '--name', 'cli-vm', '--uuid', uuid, '--flavor', 'vcpus=1,ram=64,root=1,swap=8', '--json');
    expect(boot.code, boot.stderr).toBe(0);
    const r = JSON.parse(boot.stdout);
    expect(r.rootDisk.method).toBe('cloned');
    expect(r.instance.uuid).toBe(uuid);

    const again = await ephemera('boot', '--image', image.id, '--name', 'cli-vm', '--uuid', uuid, '--json');
    expect(again.code).toBe(5);
    expect(JSON.parse(again.stdout).error.code).toBe('INSTANCE_EXISTS');

    const list = JSON.parse((await ephemera('list', '--json')).stdout);
    expect(list.map((i: { name: string }) => i.name)).toEqual(['cli-vm']);
    const deadline = Date.now() + 120_000;
    let console_ = '';
    while (!console_.includes('EPHEMERA-POWEROFF') && Date.now() < deadline) {
      console_ = (await ephemera('console', 'cli-vm')).stdout;
      await new Promise((res) => setTimeout(res, 500));
    }
    expect(console_).toContain(`EPHEMERA-MARKER ${marker}`);

    const snap = await ephemera('snapshot', 'cli-vm', `${marker}-snap`, '--json');
    expect(snap.code, snap.stderr).toBe(0);
    images.push(JSON.parse(snap.stdout).imageId);

    expect((await ephemera('destroy', 'cli-vm')).code).toBe(0);
    expect((await ephemera('show', 'cli-vm')).code).toBe(4);
    expect((await rbdLs(loadStack(), 'vms')).filter((n) => n.startsWith(uuid))).toEqual([]);
    expect((await virshDomains(loadStack())).filter((d) => d.includes(uuid))).toEqual([]);
    expect(JSON.parse((await ephemera('reconcile', '--json')).stdout)).toEqual([]);
    const gc = JSON.parse((await ephemera('gc', '--json')).stdout);
    expect(gc.removed).toEqual([]);
  });

  it('an empty image: upload refused (exit 2, no Glance record), boot of an empty Glance image refused (exit 6), nothing left', async () => {
    const name = `e2e-empty-${uuid.slice(0, 8)}`;
    const empty = join(stateDir, 'empty.img');
    await writeFile(empty, new Uint8Array(0));
    const up = await ephemera('image', 'upload', empty, '--name', name, '--json');
    expect(up.code, up.stdout + up.stderr).toBe(2);
    expect(JSON.parse(up.stdout).error).toMatchObject({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(/empty/) });
    const listed = JSON.parse((await ephemera('image', 'list', '--json')).stdout) as { name?: string }[];
    expect(listed.filter((i) => i.name === name)).toEqual([]);

    // An empty image that reached Glance some other way.
    const glance = new GlanceClient({ url: loadStack().glance.url });
    const rec = await glance.createImage({ name, disk_format: 'raw', container_format: 'bare' });
    images.push(rec.id);
    await glance.upload(rec.id, new Uint8Array(0));
    expect(await glance.waitForStatus(rec.id, ['active'], { timeoutMs: 120_000 })).toMatchObject({ size: 0 });
    for (const backend of ['rbd', 'qcow2']) {
      const vm = newUuid();
      const boot = await ephemera('boot', '--image', rec.id, '--name', `empty-${backend}`, '--uuid', vm, '--flavor', 'vcpus=1,ram=64,root=1,swap=8', '--backend', backend, '--json');
      expect(boot.code, `${backend}: ${boot.stdout}${boot.stderr}`).toBe(6);
      expect(JSON.parse(boot.stdout).error).toMatchObject({ code: 'IMAGE_UNUSABLE', message: expect.stringMatching(/empty/) });
      expect((await ephemera('show', vm)).code).toBe(4);
      expect((await virshDomains(loadStack())).filter((d) => d.includes(vm))).toEqual([]);
      expect((await rbdLs(loadStack(), loadStack().ceph.pools.vms)).filter((n) => n.includes(vm))).toEqual([]);
    }
  });

  it('exit codes: unknown image 4, bad flavor 2, unknown command 2', async () => {
    expect((await ephemera('boot', '--image', newUuid(), '--name', 'x')).code).toBe(4);
    expect((await ephemera('boot', '--image', 'x', '--name', 'x', '--flavor', 'huge')).code).toBe(2);
    expect((await ephemera('fly')).code).toBe(2);
    expect((await ephemera('image', 'show', newUuid())).code).toBe(4);
  });
});
