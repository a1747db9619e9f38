// Issue 20, item 2: the packages as their users get them. A local Verdaccio (from npm, installed
// into .cache/ by tools/lib/release-deps.mjs) on a free loopback port with its state in a temp
// dir; `tools/release publish` publishes every package to it; then fresh projects in temp dirs
// outside the repository install from it, with every compile attempt failing
// (npm_config_node_gyp=/bin/false: the addons must come prebuilt), and run on the dev stack:
//  (a) @ephemera/backend-rbd alone: a copy-on-write clone of a Glance image's snapshot into an
//      instance disk, with neither libvirt-napi nor another backend in node_modules;
//  (b) @ephemera/driver with only @ephemera/backend-rbd: a configured qcow2 backend is a
//      ConfigError naming its package; a VM spawned to its serial marker, then destroyed;
//  (c) @ephemera/cli: `npx ephemera --version`, then `npx ephemera boot` of the same image, to
//      the guest's serial marker, and `destroy`.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GlanceClient } from '@ephemera/glance';
import { loadStack, type StackInfo } from '@ephemera/testkit';
import { deleteImage, newUuid, rbdLs, uploadGuest, virshDomains } from './support.js';

const repo = resolve(import.meta.dirname, '..');
const work = mkdtempSync(join(tmpdir(), 'ephemera-registry-'));
const marker = `reg-${randomBytes(4).toString('hex')}`;
const vmUuid = newUuid();
let stack: StackInfo;
let glance: GlanceClient;
let imageId = '';
let verdaccio: ChildProcess | undefined;
let registry = '';
let cliProject = '';
let npmrc = '';

interface Run {
  code: number;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Runs a program (argv, timeout); resolves with its exit code and output, never rejects on exit != 0. */
function run(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; timeout?: number } = {}) {
  const t0 = performance.now();
  return new Promise<Run>((res) => {
    execFile(
      cmd,
      args,
      { cwd: opts.cwd ?? repo, env: opts.env ?? process.env, timeout: opts.timeout ?? 300_000, maxBuffer: 64 << 20 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
        res({ code, stdout: String(stdout), stderr: String(stderr), ms: performance.now() - t0 });
      },
    );
  });
}

function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.once('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? res(addr.port) : rej(new Error('no port'))));
    });
  });
}

async function startVerdaccio(): Promise<void> {
  const deps = await run(process.execPath, [join(repo, 'tools/lib/release-deps.mjs'), 'verdaccio'], {
    timeout: 600_000,
  });
  if (deps.code !== 0) throw new Error(`installing verdaccio failed:\n${deps.stderr}`);
  const dir = join(work, 'verdaccio');
  mkdirSync(dir);
  const port = await freePort();
  registry = `http://127.0.0.1:${port}/`;
  // No uplinks: the registry serves only what the test publishes (other packages come from npm).
  writeFileSync(
    join(dir, 'config.yaml'),
    [
      `storage: ${join(dir, 'storage')}`,
      'auth:',
      '  htpasswd:',
      `    file: ${join(dir, 'htpasswd')}`,
      '    max_users: 10',
      'uplinks: {}',
      'packages:',
      "  '@ephemera/*':",
      '    access: $all',
      '    publish: $authenticated',
      "  '**':",
      '    access: $all',
      'web:',
      '  enable: false',
      'max_body_size: 100mb',
      'log: { type: stdout, format: pretty, level: warn }',
      '',
    ].join('\n'),
  );
  const bin = join(deps.stdout.trim(), 'node_modules', 'verdaccio', 'bin', 'verdaccio');
  const log = join(dir, 'verdaccio.log');
  const child = spawn(process.execPath, [bin, '--config', join(dir, 'config.yaml'), '--listen', `127.0.0.1:${port}`], {
    cwd: dir,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  verdaccio = child;
  let output = '';
  child.stdout?.on('data', (d) => (output += d));
  child.stderr?.on('data', (d) => (output += d));
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`verdaccio exited with ${child.exitCode}:\n${output}`);
    const ok = await fetch(`${registry}-/ping`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) break;
    if (Date.now() > deadline) throw new Error(`verdaccio did not answer on ${registry} within 60 s:\n${output}`);
    await new Promise((r) => setTimeout(r, 250));
  }
  writeFileSync(log, output);
}

/** A user for publishing; the token goes into an npmrc file (mode 600), never into argv. */
async function publisherNpmrc(): Promise<string> {
  const name = 'ephemera-release';
  const res = await fetch(`${registry}-/user/org.couchdb.user:${name}`, {
    method: 'PUT',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name, password: randomBytes(18).toString('base64url') }),
  });
  const body = (await res.json()) as { token?: string };
  if (!res.ok || !body.token) throw new Error(`creating the registry user failed: HTTP ${res.status}`);
  const npmrc = join(work, 'publisher.npmrc');
  writeFileSync(npmrc, `//${new URL(registry).host}/:_authToken=${body.token}\n`, { mode: 0o600 });
  return npmrc;
}

/** A fresh project outside the repository that gets @ephemera/* from the local registry. */
function project(name: string): string {
  const dir = join(work, name);
  mkdirSync(dir);
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name, private: true, type: 'module' }));
  writeFileSync(join(dir, '.npmrc'), `@ephemera:registry=${registry}\n`);
  return dir;
}

/** The consumer's environment: no variable of the repo's npm run leaks in; compiling is impossible. */
function consumerEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !/^(npm_|NODE_OPTIONS$|INIT_CWD$)/i.test(k)),
  );
  return { ...env, npm_config_node_gyp: '/bin/false', ...extra };
}

async function install(dir: string, spec: string): Promise<Run> {
  // --engine-strict: a package whose `engines` does not allow this Node fails the install.
  const args = ['install', '--no-audit', '--no-fund', '--prefer-online', '--engine-strict', ...spec.split(' ')];
  const r = await run('npm', args, {
    cwd: dir,
    env: consumerEnv(),
    timeout: 600_000,
  });
  expect(r.code, `npm install ${spec}:\n${r.stdout}\n${r.stderr}`).toBe(0);
  console.log(`npm install ${spec} (prebuilt addons): ${(r.ms / 1000).toFixed(1)} s`);
  return r;
}

const publicDirs = () =>
  readdirSync(join(repo, 'packages')).filter(
    (d) => !JSON.parse(readFileSync(join(repo, 'packages', d, 'package.json'), 'utf8')).private,
  );

const installed = (dir: string) => readdirSync(join(dir, 'node_modules', '@ephemera')).sort();

beforeAll(async () => {
  stack = loadStack();
  glance = new GlanceClient({ url: stack.glance.url });
  const t0 = performance.now();
  imageId = await uploadGuest(glance, marker);
  const t1 = performance.now();
  await startVerdaccio();
  const t2 = performance.now();
  npmrc = await publisherNpmrc();
  const pub = await run('bash', [join(repo, 'tools/release'), 'publish', '--registry', registry], {
    env: { ...process.env, NPM_CONFIG_USERCONFIG: npmrc },
    timeout: 900_000,
  });
  if (pub.code !== 0) throw new Error(`tools/release publish failed:\n${pub.stderr}`);
  const s = (a: number, b: number) => `${((b - a) / 1000).toFixed(1)} s`;
  console.log(`image upload ${s(t0, t1)}, verdaccio ${s(t1, t2)}, tools/release publish ${s(t2, performance.now())}`);
}, 1_200_000);

afterAll(async () => {
  if (cliProject) {
    await run('npx', ['ephemera', '--state-dir', join(work, 'state'), 'destroy', vmUuid], {
      cwd: cliProject,
      env: consumerEnv({ EPHEMERA_STACK_DIR: stack.dir }),
    });
  }
  const v = verdaccio;
  if (v && v.exitCode === null) {
    const exited = new Promise((res) => v.once('exit', res));
    v.kill('SIGTERM');
    const t = setTimeout(() => v.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(t);
  }
  await deleteImage(glance, imageId);
  rmSync(work, { recursive: true, force: true });
});

describe('installing the published packages from a registry', () => {
  it('every public package is in the registry', async () => {
    for (const d of publicDirs()) {
      const r = await fetch(`${registry}@ephemera%2f${d}`);
      expect(r.status, d).toBe(200);
    }
  });

  it('publishing the same tarballs again skips every version the registry already has', async () => {
    const again = await run(
      'bash',
      [
        join(repo, 'tools/release'),
        'publish',
        '--registry',
        registry,
        '--tarballs',
        join(repo, '.cache/release/tarballs'),
      ],
      { env: { ...process.env, NPM_CONFIG_USERCONFIG: npmrc }, timeout: 300_000 },
    );
    expect(again.code, again.stderr).toBe(0);
    const skipped = again.stderr.split('\n').filter((l) => l.includes(`already in ${registry}, skipped`));
    expect(skipped.length).toBe(publicDirs().length);
    expect(again.stderr).not.toContain('published to');
  });

  it('(a) @ephemera/backend-rbd alone clones a Glance snapshot into an instance disk', async () => {
    const dir = project('rbd-only');
    await install(dir, '@ephemera/backend-rbd');
    expect(installed(dir)).toEqual(['backend-rbd', 'ceph-rbd-napi', 'image-backend', 'qemu-img-wrapper']);
    // The prebuilt binary, not a compile: npm_config_node_gyp=/bin/false would have failed one.
    const addon = join(dir, 'node_modules', '@ephemera', 'ceph-rbd-napi');
    expect(existsSync(join(addon, 'prebuilds', 'linux-x64', 'ceph_rbd_napi.node'))).toBe(true);
    expect(existsSync(join(addon, 'build'))).toBe(false);
    // npm ran on the Node 22 from npm (tools/node, first in PATH), not the system Node 20, and
    // every package it installed asks for the Node 22.12 floor.
    const versions = await run('npm', ['version', '--json'], { cwd: dir, env: consumerEnv() });
    expect(versions.code, versions.stderr).toBe(0);
    const [major, minor] = String(JSON.parse(versions.stdout).node).split('.').map(Number);
    expect(major * 1000 + minor).toBeGreaterThanOrEqual(22_012);
    for (const name of installed(dir)) {
      const manifest = JSON.parse(readFileSync(join(dir, 'node_modules', '@ephemera', name, 'package.json'), 'utf8'));
      expect(manifest.engines, name).toEqual({ node: '>=22.12' });
    }

    const u = stack.ceph.users.ephemera;
    const script = `
import { RbdBackend } from '@ephemera/backend-rbd';
const [glanceUrl, imageId, instance] = process.argv.slice(2);
const rec = await (await fetch(\`\${glanceUrl}/v2/images/\${imageId}\`)).json();
const locations = (rec.locations ?? [{ url: rec.direct_url, metadata: {} }]).map((l) => ({ url: l.url, metadata: l.metadata ?? {} }));
const image = {
  id: rec.id, size: rec.size, diskFormat: rec.disk_format, containerFormat: rec.container_format,
  checksum: rec.checksum, osHashAlgo: rec.os_hash_algo, osHashValue: rec.os_hash_value, locations,
  open: async () => { throw new Error('a clone must not download the image'); },
};
const backend = await RbdBackend.create(${JSON.stringify({
      pool: stack.ceph.pools.vms,
      confPath: u.confPath,
      clientId: u.id,
      keyringPath: u.keyringPath,
      secretUuid: stack.libvirt.cephSecretUuid,
    })});
const disk = { instance, name: 'disk' };
try {
  const res = await backend.createFromImage(disk, image, { sizeBytes: 64 * 1024 * 1024 });
  const listed = (await backend.list({ instance })).map((d) => d.disk.name);
  const source = await backend.diskSource(disk);
  console.log(JSON.stringify({ method: res.method, reason: res.reason, listed, source: source.name }));
} finally {
  await backend.remove(disk);
  await backend.close();
}
`;
    writeFileSync(join(dir, 'clone.mjs'), script);
    const instance = newUuid();
    const r = await run(process.execPath, ['clone.mjs', stack.glance.url, imageId, instance], {
      cwd: dir,
      env: consumerEnv(),
    });
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout.trim().split('\n').at(-1) ?? '{}');
    expect(out).toMatchObject({
      method: 'cloned',
      listed: ['disk'],
      source: `${stack.ceph.pools.vms}/${instance}_disk`,
    });
    expect(out.reason).toContain(`${stack.ceph.pools.images}/${imageId}@snap`);
    expect((await rbdLs(stack, stack.ceph.pools.vms)).filter((n) => n.startsWith(instance))).toEqual([]);
  });

  it('(b) @ephemera/driver with only @ephemera/backend-rbd spawns a VM to its serial marker and destroys it', async () => {
    const dir = project('driver-rbd');
    await install(dir, '@ephemera/driver@latest @ephemera/backend-rbd@latest');
    const present = installed(dir);
    expect(present).toEqual(expect.arrayContaining(['driver', 'backend-rbd', 'libvirt-napi', 'ceph-rbd-napi']));
    expect(present).not.toContain('backend-qcow2');
    expect(present).not.toContain('backend-lvm');
    const script = `
import { readFileSync } from 'node:fs';
import { createDriver, loadConfig } from '@ephemera/driver';
const [stackJson, stateDir, imageId, uuid] = process.argv.slice(2);
const stack = JSON.parse(readFileSync(stackJson, 'utf8'));
const out = {};
// A backend that is configured but not installed.
try {
  const { config } = loadConfig({ stack, env: {}, overrides: { stateDir, images: { type: 'qcow2' } } });
  await createDriver({ config });
  out.qcow2 = 'created';
} catch (e) {
  out.qcow2 = { name: e.name, key: e.key, message: e.message };
}
const { config } = loadConfig({ stack, env: {}, overrides: { stateDir } });
const driver = await createDriver({ config });
try {
  const r = await driver.spawn({
    instance: { uuid, name: 'driver-vm' },
    image: imageId,
    flavor: { vcpus: 1, memoryMiB: 64, rootGiB: 1, ephemeralGiB: 0, swapMiB: 0 },
  });
  out.method = r.rootDisk.method;
  const deadline = Date.now() + 120_000;
  let serial = '';
  while (!serial.includes('EPHEMERA-POWEROFF') && Date.now() < deadline) {
    serial = await driver.console('driver-vm');
    await new Promise((res) => setTimeout(res, 500));
  }
  out.serial = serial;
} finally {
  await driver.destroy(uuid).catch((e) => (out.destroyError = e.message));
  await driver.close();
}
console.log(JSON.stringify(out));
`;
    writeFileSync(join(dir, 'spawn.mjs'), script);
    const uuid = newUuid();
    const r = await run(
      process.execPath,
      ['spawn.mjs', join(stack.dir, 'stack.json'), join(work, 'driver-state'), imageId, uuid],
      { cwd: dir, env: consumerEnv() },
    );
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout.trim().split('\n').at(-1) ?? '{}');
    expect(out.qcow2).toMatchObject({ name: 'ConfigError', key: 'images.type' });
    expect(out.qcow2.message).toContain('npm install @ephemera/backend-qcow2');
    expect(out.method).toBe('cloned');
    expect(out.serial).toContain(`EPHEMERA-MARKER ${marker}`);
    expect(out.destroyError).toBeUndefined();
    expect((await virshDomains(stack)).filter((d) => d.includes(uuid))).toEqual([]);
    expect((await rbdLs(stack, stack.ceph.pools.vms)).filter((n) => n.startsWith(uuid))).toEqual([]);
  });

  it('(c) @ephemera/cli: npx ephemera --version, then boot to the serial marker and destroy', async () => {
    cliProject = project('cli');
    await install(cliProject, '@ephemera/cli');
    for (const a of ['ceph-rbd-napi', 'libvirt-napi']) {
      expect(existsSync(join(cliProject, 'node_modules', '@ephemera', a, 'build')), a).toBe(false);
    }
    const env = consumerEnv({ EPHEMERA_STACK_DIR: stack.dir });
    const ephemera = (...args: string[]) =>
      run('npx', ['ephemera', '--state-dir', join(work, 'state'), ...args], { cwd: cliProject, env });
    const version = await ephemera('--version');
    expect(version.code, version.stderr).toBe(0);
    const published = JSON.parse(readFileSync(join(repo, 'packages/cli/package.json'), 'utf8')).version;
    expect(version.stdout.trim()).toBe(published);

    const boot = await ephemera(
      'boot',
      '--image',
      imageId,
      '--name',
      'registry-vm',
      '--uuid',
      vmUuid,
      '--flavor',
      'vcpus=1,ram=64,root=1',
      '--json',
    );
    expect(boot.code, boot.stderr).toBe(0);
    expect(JSON.parse(boot.stdout)).toMatchObject({ rootDisk: { method: 'cloned' }, instance: { uuid: vmUuid } });
    const deadline = Date.now() + 120_000;
    let serial = '';
    while (!serial.includes('EPHEMERA-POWEROFF') && Date.now() < deadline) {
      serial = (await ephemera('console', 'registry-vm')).stdout;
      await new Promise((res) => setTimeout(res, 500));
    }
    expect(serial).toContain(`EPHEMERA-MARKER ${marker}`);
    expect((await ephemera('destroy', 'registry-vm')).code).toBe(0);
    expect((await virshDomains(stack)).filter((d) => d.includes(vmUuid))).toEqual([]);
    expect((await rbdLs(stack, stack.ceph.pools.vms)).filter((n) => n.startsWith(vmUuid))).toEqual([]);
  });
});
