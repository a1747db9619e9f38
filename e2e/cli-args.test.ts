// The `ephemera` command (built bin) refuses bad arguments and configuration before it journals or
// creates anything, with the documented exit codes; an image whose content is not what Glance
// declares exits 6 naming the inspector's finding; a glance.url ending in /v2 works.
import { execFile } from 'node:child_process';
import { watch, type FSWatcher } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GlanceClient } from '@ephemera/glance';
import { loadStack } from '@ephemera/testkit';
import { deleteImage, newUuid, rbdLs, uploadGuest, virshDomains } from './support.js';

const exec = promisify(execFile);
const repo = resolve(import.meta.dirname, '..');
const bin = join(repo, 'packages/cli/dist/bin.js');
const stack = loadStack();
const glance = new GlanceClient({ url: stack.glance.url });
let stateDir: string;
let rawImage: string | undefined;
let textAsQcow2: string | undefined;

async function ephemera(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await exec(process.execPath, [bin, '--state-dir', stateDir, ...args], {
      timeout: 300_000,
      maxBuffer: 16 << 20,
      env: { ...process.env, ...env },
    });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

/** Runs `fn` while recording every file that appears in the journal directory (even briefly). */
async function journalCreations<T>(fn: () => Promise<T>): Promise<{ result: T; created: string[] }> {
  const dir = join(stateDir, 'journal');
  await mkdir(dir, { recursive: true });
  const created: string[] = [];
  const w: FSWatcher = watch(dir, (_ev, name) => {
    if (name) created.push(String(name));
  });
  try {
    const result = await fn();
    return { result, created };
  } finally {
    w.close();
  }
}

async function nothingOf(uuid: string): Promise<void> {
  expect((await rbdLs(stack, stack.ceph.pools.vms)).filter((n) => n.startsWith(uuid))).toEqual([]);
  expect((await virshDomains(stack)).filter((d) => d.includes(uuid))).toEqual([]);
  expect(await readdir(join(stateDir, 'journal'))).toEqual([]);
}

beforeAll(async () => {
  await exec('npx', ['nx', 'run', '@ephemera/cli:build'], {
    cwd: repo,
    timeout: 600_000,
    maxBuffer: 64 << 20,
    env: { ...process.env, NX_DAEMON: 'false', NX_NO_CLOUD: 'true', NX_TUI: 'false' },
  });
  stateDir = await mkdtemp(join(tmpdir(), 'ephemera-e2e-cli-args-'));
  rawImage = await uploadGuest(glance, `cli-args-${newUuid().slice(0, 8)}`);
  // A text file stored in Glance as qcow2 (Glance's API does not look at the bytes).
  const img = await glance.createImage({
    name: `e2e-text-as-qcow2-${newUuid().slice(0, 8)}`,
    disk_format: 'qcow2',
    container_format: 'bare',
  });
  textAsQcow2 = img.id;
  await glance.upload(img.id, Buffer.from('this is a text file, not a disk image\n'.repeat(200)));
  await glance.waitForStatus(img.id, ['active'], { timeoutMs: 120_000 });
}, 900_000);

afterAll(async () => {
  await deleteImage(glance, rawImage);
  await deleteImage(glance, textAsQcow2);
  if (stateDir) await rm(stateDir, { recursive: true, force: true });
});

describe('ephemera boot: arguments and configuration are checked first', () => {
  it('a malformed image id is a usage error (exit 2) and journals nothing', async () => {
    const uuid = newUuid();
    const { result: r, created } = await journalCreations(() =>
      ephemera(['boot', '--image', 'not-a-uuid', '--name', 'x', '--uuid', uuid, '--json']),
    );
    expect(r.code, r.stderr).toBe(2);
    expect(JSON.parse(r.stdout).error).toEqual({
      code: 'INVALID_ARGUMENT',
      message: expect.stringContaining('"not-a-uuid" is not a Glance image id'),
    });
    expect(created).toEqual([]);
    const bad = await ephemera(['boot', '--image', rawImage!, '--name', 'x', '--uuid', 'nope', '--json']);
    expect(bad.code).toBe(2);
    expect(JSON.parse(bad.stdout).error.message).toContain('--uuid "nope" is not a UUID');
    await nothingOf(uuid);
  });

  it('a ceph secret libvirt cannot use (another UUID for the user) is found before the journal and the root disk: exit 3', async () => {
    const uuid = newUuid();
    const other = newUuid();
    const { result: r, created } = await journalCreations(() =>
      ephemera(['boot', '--image', rawImage!, '--name', 'x', '--uuid', uuid, '--json'], {
        EPHEMERA_IMAGES_RBD_SECRET_UUID: other,
      }),
    );
    expect(r.code, r.stderr).toBe(3);
    const e = JSON.parse(r.stdout).error;
    expect(e.code).toBe('INVALID_CONFIG');
    expect(e.message).toContain(`libvirt already has a ceph secret for client.${stack.ceph.users.ephemera.id}`);
    expect(e.message).toContain('images.rbd.secretUuid');
    // Nothing was journaled, so no disk was cloned and rolled back.
    expect(created).toEqual([]);
    await nothingOf(uuid);
  });
});

describe('ephemera boot: an unusable image exits 6 and says what is wrong', () => {
  for (const backend of ['rbd', 'qcow2']) {
    it(`a text file stored as qcow2 (${backend} backend): IMAGE_UNUSABLE naming the inspector's finding, nothing left`, async () => {
      const uuid = newUuid();
      const r = await ephemera([
        'boot',
        '--image',
        textAsQcow2!,
        '--name',
        'x',
        '--uuid',
        uuid,
        '--backend',
        backend,
        '--json',
      ]);
      expect(r.code, r.stderr).toBe(6);
      const e = JSON.parse(r.stdout).error;
      expect(e.code).toBe('IMAGE_UNUSABLE');
      expect(e.message).toContain(`unusable image ${textAsQcow2}`);
      expect(e.message).toMatch(/declared qcow2 but .*raw/);
      expect(e.message).toContain('(format-mismatch)');
      await nothingOf(uuid);
    });
  }
});

describe('glance.url ending in /v2', () => {
  for (const suffix of ['/v2', '/v2/']) {
    it(`${suffix}: image show and the driver's plan work (the version is stripped)`, async () => {
      const env = { EPHEMERA_GLANCE_URL: `${stack.glance.url}${suffix}` };
      const show = await ephemera(['image', 'show', rawImage!, '--json'], env);
      expect(show.code, show.stderr).toBe(0);
      expect(JSON.parse(show.stdout).id).toBe(rawImage);
      const plan = await ephemera(['image', 'explain', rawImage!, '--backend', 'lvm', '--json'], env);
      expect(plan.code, plan.stderr).toBe(0);
      expect(JSON.parse(plan.stdout).chosen.method).toBe('download');
    });
  }
});
