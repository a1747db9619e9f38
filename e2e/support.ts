/**
 * Shared helpers of the e2e tests: a driver on the dev stack with a private state directory,
 * guest images uploaded to the stack's Glance, and leftover checks against the real components.
 */
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { connect, type Cluster } from '@ephemera/ceph-rbd-napi';
import { createDriver, loadConfig, type ConfigInput, type Driver } from '@ephemera/driver';
import { GlanceClient } from '@ephemera/glance';
import { guestImage, loadStack, type StackInfo } from '@ephemera/testkit';

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

export async function testDriver(overrides: ConfigInput = {}, opts: { reconcile?: boolean } = {}): Promise<TestDriver> {
  const stack = loadStack();
  const stateDir = await mkdtemp(join(tmpdir(), 'ephemera-e2e-'));
  const { config } = loadConfig({
    stack,
    env: {},
    overrides: { stateDir, log: { level: process.env.EPHEMERA_E2E_LOG ?? 'warn' }, ...overrides },
  });
  const driver = await createDriver({ config, reconcile: opts.reconcile ?? true });
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
export async function uploadGuest(glance: GlanceClient, marker: string, opts: { format?: 'raw' | 'qcow2'; size?: number; fill?: 'zero' | 'random' } = {}): Promise<string> {
  const format = opts.format ?? 'raw';
  const path = await guestImage({ marker, format, ...(opts.size ? { size: opts.size } : {}), ...(opts.fill ? { fill: opts.fill } : {}) });
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
  const { stdout } = await exec('rbd', ['--conf', u.confPath, '--id', u.id, 'ls', '--format', 'json', pool], { timeout: 60_000 });
  return JSON.parse(stdout) as string[];
}

/** `rbd info` of an image (as admin). */
export async function rbdInfo(stack: StackInfo, spec: string): Promise<{ parent?: { pool: string; image: string; snapshot: string }; size: number }> {
  const u = stack.ceph.users.admin;
  const { stdout } = await exec('rbd', ['--conf', u.confPath, '--id', u.id, 'info', '--format', 'json', spec], { timeout: 60_000 });
  return JSON.parse(stdout);
}

/** Every domain name of the stack's libvirtd. */
export async function virshDomains(stack: StackInfo): Promise<string[]> {
  const { stdout } = await exec('virsh', ['-q', '-c', stack.libvirt.uri, 'list', '--all', '--name'], { timeout: 60_000 });
  return stdout.split('\n').map((s) => s.trim()).filter(Boolean);
}

/** Every secret UUID of the stack's libvirtd. */
export async function virshSecrets(stack: StackInfo): Promise<string[]> {
  const { stdout } = await exec('virsh', ['-q', '-c', stack.libvirt.uri, 'secret-list'], { timeout: 60_000 });
  return stdout.split('\n').map((s) => s.trim().split(/\s+/)[0]!).filter(Boolean).sort();
}

/** An admin cluster connection for reading and writing disks in tests. */
export function adminCluster(stack: StackInfo): Promise<Cluster> {
  const u = stack.ceph.users.admin;
  return connect({ confPath: u.confPath, clientId: u.id, keyringPath: u.keyringPath, timeoutMs: 20_000 });
}

/** Reads `length` bytes at `offset` of `pool/image[@snap]`. */
export async function rbdRead(cluster: Cluster, pool: string, image: string, offset: number, length: number, snapshot?: string): Promise<Buffer> {
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
export async function rbdWrite(cluster: Cluster, pool: string, image: string, offset: number, data: Uint8Array): Promise<void> {
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

/** A fresh instance UUID. */
export const newUuid = (): string => randomUUID();
