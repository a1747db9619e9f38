/**
 * Shared helpers of the e2e tests: a driver on the dev stack with a private state directory,
 * guest images uploaded to the stack's Glance, leftover checks against the real components, the
 * CLI in process as a given host, and the counting guest's serial log.
 */
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { promisify } from 'node:util';
import { connect, type Cluster } from '@ephemera/ceph-rbd-napi';
import { run } from '@ephemera/cli';
import { createDriver, loadConfig, type ConfigInput, type DomainHook, type Driver } from '@ephemera/driver';
import { GlanceClient } from '@ephemera/glance';
import { guestImage, loadStack, readCounts, waitForSerial, type StackInfo } from '@ephemera/testkit';

const exec = promisify(execFile);

/** A small flavor for the test guest. */
export const TINY = { name: 'e2e.tiny', vcpus: 1, memoryMiB: 64, rootGiB: 0 } as const;

/** A driver with its own state dir on the stack. */
export interface TestDriver {
  driver: Driver;
  stack: StackInfo;
  stateDir: string;
  glance: GlanceClient;
  close(): Promise<void>;
}

export async function testDriver(
  overrides: ConfigInput = {},
  opts: { reconcile?: boolean; customizeDomain?: DomainHook } = {},
): Promise<TestDriver> {
  const stack = loadStack();
  const stateDir = await mkdtemp(join(tmpdir(), 'ephemera-e2e-'));
  const { config } = loadConfig({
    stack,
    env: {},
    overrides: { stateDir, log: { level: process.env.EPHEMERA_E2E_LOG ?? 'warn' }, ...overrides },
  });
  const driver = await createDriver({
    config,
    reconcile: opts.reconcile ?? true,
    ...(opts.customizeDomain ? { customizeDomain: opts.customizeDomain } : {}),
  });
  const glance = new GlanceClient({ url: stack.glance.url });
  return {
    driver,
    stack,
    stateDir,
    glance,
    async close() {
      await driver.close();
      await rm(stateDir, { recursive: true, force: true });
    },
  };
}

/** Uploads the guest image (marker `marker`) to the stack's Glance; resolves to the image id. */
export async function uploadGuest(
  glance: GlanceClient,
  marker: string,
  opts: { format?: 'raw' | 'qcow2'; size?: number; fill?: 'zero' | 'random'; mode?: 'poweroff' | 'count' } = {},
): Promise<string> {
  const format = opts.format ?? 'raw';
  const path = await guestImage({
    marker,
    format,
    ...(opts.mode ? { mode: opts.mode } : {}),
    ...(opts.size ? { size: opts.size } : {}),
    ...(opts.fill ? { fill: opts.fill } : {}),
    ...(opts.mode ? { mode: opts.mode } : {}),
  });
  const img = await glance.createImage({ name: `e2e-${marker}`, disk_format: format, container_format: 'bare' });
  await glance.upload(img.id, await readFile(path));
  await glance.waitForStatus(img.id, ['active'], { timeoutMs: 120_000 });
  return img.id;
}

/** Deletes a Glance image, ignoring a missing one. */
export async function deleteImage(glance: GlanceClient, id: string | undefined): Promise<void> {
  if (!id) return;
  await glance.deleteImage(id).catch(() => undefined);
}

/** Names in an RBD pool (as admin). */
export async function rbdLs(stack: StackInfo, pool: string): Promise<string[]> {
  const u = stack.ceph.users.admin;
  const { stdout } = await exec('rbd', ['--conf', u.confPath, '--id', u.id, 'ls', '--format', 'json', pool], {
    timeout: 60_000,
  });
  return JSON.parse(stdout) as string[];
}

/** `rbd info` of an image (as admin). */
export async function rbdInfo(
  stack: StackInfo,
  spec: string,
): Promise<{ parent?: { pool: string; image: string; snapshot: string }; size: number }> {
  const u = stack.ceph.users.admin;
  const { stdout } = await exec('rbd', ['--conf', u.confPath, '--id', u.id, 'info', '--format', 'json', spec], {
    timeout: 60_000,
  });
  return JSON.parse(stdout);
}

/** Every domain name of the stack's libvirtd. */
export async function virshDomains(stack: StackInfo): Promise<string[]> {
  const { stdout } = await exec('virsh', ['-q', '-c', stack.libvirt.uri, 'list', '--all', '--name'], {
    timeout: 60_000,
  });
  return stdout
    .split('\n')
    .map((s) => s.trim())
    .filter(Boolean);
}

/** Every secret UUID of the stack's libvirtd. */
export async function virshSecrets(stack: StackInfo, opts: { usage?: string } = {}): Promise<string[]> {
  const { stdout } = await exec('virsh', ['-q', '-c', stack.libvirt.uri, 'secret-list'], { timeout: 60_000 });
  return stdout
    .split('\n')
    .map((s) => s.trim().split(/\s+/))
    .filter((cols) => cols[0] && (opts.usage === undefined || cols.slice(1).join(' ') === opts.usage))
    .map((cols) => cols[0]!)
    .sort();
}

/** An admin cluster connection for reading and writing disks in tests. */
export function adminCluster(stack: StackInfo): Promise<Cluster> {
  const u = stack.ceph.users.admin;
  return connect({ confPath: u.confPath, clientId: u.id, keyringPath: u.keyringPath, timeoutMs: 20_000 });
}

/** Reads `length` bytes at `offset` of `pool/image[@snap]`. */
export async function rbdRead(
  cluster: Cluster,
  pool: string,
  image: string,
  offset: number,
  length: number,
  snapshot?: string,
): Promise<Buffer> {
  const io = await cluster.openIoCtx(pool);
  try {
    const img = await io.open(image, snapshot ? { snapshot, readOnly: true } : {});
    try {
      return await img.read(offset, length);
    } finally {
      await img.close();
    }
  } finally {
    await io.close();
  }
}

/** Writes `data` at `offset` of `pool/image`. */
export async function rbdWrite(
  cluster: Cluster,
  pool: string,
  image: string,
  offset: number,
  data: Uint8Array,
): Promise<void> {
  const io = await cluster.openIoCtx(pool);
  try {
    const img = await io.open(image);
    try {
      await img.write(offset, data);
      await img.flush();
    } finally {
      await img.close();
    }
  } finally {
    await io.close();
  }
}

/** Waits until the instance's domain is shut off (the guest powers off after its marker). */
export async function waitShutoff(driver: Driver, uuid: string, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const i = await driver.get(uuid);
    if (i.state === 'shutoff') return;
    if (Date.now() > deadline) throw new Error(`${uuid} still ${i.state} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The `ephemera` command in this process as host `hostId`, with `t`'s stack and state directory. */
export async function cliAs(
  t: TestDriver,
  hostId: string,
  ...args: string[]
): Promise<{ code: number; out: string; err: string }> {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = '';
  let err = '';
  stdout.on('data', (d) => (out += String(d)));
  stderr.on('data', (d) => (err += String(d)));
  const env = { EPHEMERA_STACK_DIR: t.stack.dir, EPHEMERA_HOST_ID: hostId, EPHEMERA_LOG_LEVEL: 'error' };
  const code = await run(['--state-dir', t.stateDir, ...args], { stdout, stderr, env });
  return { code, out, err };
}

/** What the guest has written to `t`'s serial log of `uuid` so far ('' before the log exists). */
export function serialText(t: TestDriver, uuid: string): string {
  const path = t.driver.consolePath(uuid);
  return existsSync(path) ? readFileSync(path, 'latin1') : '';
}

/** Waits until the counting guest printed `more` further counter lines in `t`'s serial log; all its counts. */
export async function countsGoOn(t: TestDriver, uuid: string, more: number): Promise<number[]> {
  const before = readCounts(serialText(t, uuid)).length;
  await waitForSerial(
    t.driver.consolePath(uuid),
    (text) => (readCounts(text).length >= before + more ? true : undefined),
    60_000,
    `${more} more counter lines`,
  );
  return readCounts(serialText(t, uuid));
}

/** A fresh instance UUID. */
export const newUuid = (): string => randomUUID();

/**
 * The stack with at least `n` compute hosts: `tools/stack up --hosts n` adds the missing ones to
 * the running stack (the others keep running), so a test that needs host 2 starts it itself.
 */
export async function stackWithHosts(n: number): Promise<StackInfo> {
  if (loadStack().hosts.length >= n) return loadStack();
  const repo = join(import.meta.dirname, '..');
  await exec('bash', [join(repo, 'tools', 'stack'), 'up', '--hosts', String(n)], {
    timeout: 300_000,
    maxBuffer: 16 << 20,
  });
  return loadStack();
}
