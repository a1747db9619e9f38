import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadStack, type StackInfo } from '@ephemera/testkit';
import { connect, type Cluster, type IoCtx } from '@ephemera/ceph-rbd-napi';

export type User = keyof StackInfo['ceph']['users'];

export function stack(): StackInfo {
  return loadStack();
}

/** Connects as one of the stack's users (keyring path only, never a key). */
export function connectAs(user: User, timeoutMs = 20_000): Promise<Cluster> {
  const u = stack().ceph.users[user];
  return connect({ confPath: u.confPath, clientId: u.id, keyringPath: u.keyringPath, timeoutMs });
}

/** An admin connection with the stack's images and vms pools open. */
export async function adminPools(): Promise<{ admin: Cluster; images: IoCtx; vms: IoCtx }> {
  const admin = await connectAs('admin');
  return {
    admin,
    images: await admin.openIoCtx(stack().ceph.pools.images),
    vms: await admin.openIoCtx(stack().ceph.pools.vms),
  };
}

/** This package's directory. */
export const PKG = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Builds dist/ from the current sources, for child processes that import the compiled package. */
export function buildDist(): void {
  execFileSync(
    process.execPath,
    [join(PKG, '..', '..', 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(PKG, 'tsconfig.build.json')],
    { timeout: 120_000 },
  );
}

/** A unique image name for this test run. */
export function uniq(prefix: string): string {
  return `t-${prefix}-${randomBytes(5).toString('hex')}`;
}

/** A port on 127.0.0.1 where nothing listens (connection refused). */
export const DEAD_MON = '127.0.0.1:1';

/** Runs cleanup steps in reverse order, continuing past failures (reported at the end). */
export class Cleanup {
  #steps: [string, () => Promise<unknown>][] = [];
  add(label: string, fn: () => Promise<unknown>): void {
    this.#steps.push([label, fn]);
  }
  async run(): Promise<void> {
    const errors: string[] = [];
    for (const [label, fn] of this.#steps.reverse()) {
      try {
        await fn();
      } catch (e) {
        errors.push(`${label}: ${(e as Error).message}`);
      }
    }
    this.#steps = [];
    if (errors.length) throw new Error(`cleanup failed:\n${errors.join('\n')}`);
  }
}

/** Runs `cleanup`, then closes `clusters` (in order) even when a cleanup step failed. */
export async function cleanUpAndClose(cleanup: Cleanup, ...clusters: (Cluster | undefined)[]): Promise<void> {
  try {
    await cleanup.run();
  } finally {
    for (const c of clusters) await c?.close();
  }
}
