// SIGKILL during an encrypted spawn: a child process runs the BUILT driver (dist) and spawns an
// encrypted RBD instance; it is killed once its key and volume secret exist and the root disk is
// being made (the plain copy, or the LUKS conversion). reconcile() on the same state directory
// must then leave no key, no libvirt secret, no disk (the plain copy included) and no journal entry.
// gc removes a key and its secret that no journal names (the journal lost, a key made by hand).
import { execFile, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FileKeyProvider, createDriver, loadConfig, volumeSecretUuid, type Driver } from '@ephemera/driver';
import { connect } from '@ephemera/libvirt-napi';
import { GlanceClient } from '@ephemera/glance';
import { guestImage, loadStack } from '@ephemera/testkit';

const exec = promisify(execFile);
const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..');
const dist = pathToFileURL(join(repo, 'packages', 'driver', 'dist', 'index.js')).href;
let dir: string;
let driver: Driver;
let glance: GlanceClient;
let imageId: string | undefined;
let configPath: string;
const uuid = randomUUID();

beforeAll(async () => {
  // The child runs the built driver: build it (nx builds its dependencies first; cached when unchanged).
  await exec('npx', ['nx', 'run', '@ephemera/driver:build'], {
    cwd: repo,
    timeout: 600_000,
    maxBuffer: 64 << 20,
    env: { ...process.env, NX_DAEMON: 'false', NX_NO_CLOUD: 'true', NX_TUI: 'false' },
  });
  dir = await mkdtemp(join(tmpdir(), 'eph-enc-kill-'));
  const stack = loadStack();
  const { config } = loadConfig({
    env: {},
    stack,
    overrides: { stateDir: join(dir, 'state'), instancesPath: join(dir, 'instances'), log: { level: 'warn' } },
  });
  configPath = join(dir, 'driver.json');
  await writeFile(configPath, JSON.stringify(config));
  driver = await createDriver({ config, reconcile: false });
  glance = new GlanceClient({ url: stack.glance.url });
  const img = await glance.createImage({
    name: `enc-kill-${uuid.slice(0, 8)}`,
    disk_format: 'raw',
    container_format: 'bare',
  });
  imageId = img.id;
  await glance.upload(img.id, await readFile(await guestImage({ marker: `enc-kill-${uuid.slice(0, 8)}` })));
  await glance.waitForStatus(img.id, ['active'], { timeoutMs: 120_000 });
}, 900_000);

afterAll(async () => {
  await driver?.destroy(uuid).catch(() => undefined);
  if (imageId) await glance?.deleteImage(imageId).catch(() => undefined);
  await driver?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('SIGKILL during an encrypted spawn', () => {
  it('reconcile removes the key, the volume secret and every disk the killed spawn made', async () => {
    const code = `
      import { createDriver, loadConfig } from ${JSON.stringify(dist)};
      const { config } = loadConfig({ file: process.env.CONFIG, env: {} });
      const driver = await createDriver({ config, reconcile: false });
      driver.on('step', (e) => console.log(JSON.stringify({ step: e.step, status: e.status })));
      await driver.spawn({ instance: process.env.UUID, image: process.env.IMAGE, backend: 'rbd',
        flavor: { vcpus: 1, memoryMiB: 64, rootGiB: 0 }, encryption: { format: 'luks' } });
      console.log(JSON.stringify({ step: 'spawned' }));`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', code], {
      cwd: repo,
      env: { ...process.env, CONFIG: configPath, UUID: uuid, IMAGE: imageId! },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stderr.on('data', (d) => (out += String(d)));
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    // Killed while the root disk is being made: the key and the secret exist by then.
    await new Promise<void>((res, rej) => {
      child.stdout.on('data', (d) => {
        out += String(d);
        if (/"step":"root-disk","status":"started"/.test(out)) setTimeout(() => res(), 1500);
      });
      exited.then(() => rej(new Error(`child exited before the root disk: ${out}`)));
    });
    child.kill('SIGKILL');
    await exited;
    expect(out).not.toContain('"spawned"');
    // The kill left the key (file) and the volume secret behind: the journal knows both.
    const secretUuid = volumeSecretUuid(uuid);
    expect(await readdir(join(driver.config.stateDir, 'keys'))).toContain(`${uuid}.key`);

    const actions = (await driver.reconcile()).filter((a) => a.instance === uuid);
    expect(actions.map((a) => a.action)).toEqual(['rolled-back']);
    expect((await readdir(join(driver.config.stateDir, 'keys'))).filter((n) => n.startsWith(uuid))).toEqual([]);
    const { stdout } = await exec('virsh', ['-q', '-c', loadStack().libvirt.uri, 'secret-list']);
    expect(stdout).not.toContain(secretUuid);
    const rbdNames = (await driver.backends.get('rbd').list({ instance: uuid })).map((d) => d.id);
    expect(rbdNames).toEqual([]);
    expect((await driver.journal.entries()).filter((e) => e.instance === uuid)).toEqual([]);
  });

  it('gc reports and removes a key and its volume secret whose instance has nothing else', async () => {
    const orphan = randomUUID();
    const keys = new FileKeyProvider(join(driver.config.stateDir, 'keys'));
    await keys.createKey(orphan);
    const secretUuid = volumeSecretUuid(orphan);
    const conn = await connect(loadStack().libvirt.uri);
    try {
      const secret = await conn.defineSecret(
        `<secret ephemeral='no' private='yes'><uuid>${secretUuid}</uuid><usage type='volume'><volume>ephemera/${orphan}</volume></usage></secret>`,
      );
      await secret.setValue(new TextEncoder().encode('orphan-key'));
    } finally {
      await conn.close();
    }
    const seen = await driver.gc({ instances: [orphan] });
    expect(seen.keys).toEqual([orphan]);
    expect(seen.removed).toEqual([]);
    expect(await keys.listKeys()).toContain(orphan);
    const gone = await driver.gc({ instances: [orphan], remove: true });
    expect(gone.removed).toEqual([`key:${orphan}`]);
    expect(await keys.listKeys()).not.toContain(orphan);
    const { stdout } = await exec('virsh', ['-q', '-c', loadStack().libvirt.uri, 'secret-list']);
    expect(stdout).not.toContain(secretUuid);
  });
});
