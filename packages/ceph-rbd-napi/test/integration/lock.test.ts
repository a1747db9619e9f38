import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ImageBusy, ImageExists, InvalidArgument, type Cluster, type IoCtx } from '@ephemera/ceph-rbd-napi';
import { buildDist, connectAs, PKG as pkg, stack, uniq } from './helpers.js';

const fixture = join(pkg, 'test', 'integration', 'fixtures', 'hold-lock.mjs');
const LOCK = 'ephemera-test';
let a: Cluster;
let b: Cluster;
let ioA: IoCtx;
let ioB: IoCtx;
const objects: string[] = [];

beforeAll(async () => {
  buildDist(); // the child imports the compiled package
  // Two connections: two clients (client.<global id>), as two processes or hosts would be.
  a = await connectAs('admin');
  b = await connectAs('admin');
  ioA = await a.openIoCtx('rbd');
  ioB = await b.openIoCtx('rbd');
});
afterAll(async () => {
  // The first lock created each object: remove them with the CLI (the binding has no object API).
  const admin = stack().ceph.users.admin;
  for (const oid of objects)
    execFileSync('rados', ['-c', admin.confPath, '--keyring', admin.keyringPath, '-p', 'rbd', 'rm', oid], {
      timeout: 20_000,
    });
  await a?.close();
  await b?.close();
});

function oid(label: string): string {
  const o = uniq(`lock-${label}`);
  objects.push(o);
  return o;
}

describe('RADOS object locks', () => {
  it('an exclusive lock excludes other holders until it is released, and lists its holder', async () => {
    const o = oid('basic');
    await ioA.lockExclusive(o, LOCK, { cookie: 'c1', description: 'builder', durationMs: 30_000 });
    const held = await ioB.listLockers(o, LOCK);
    expect(held.exclusive).toBe(true);
    expect(held.lockers).toEqual([{ client: `client.${a.instanceId()}`, cookie: 'c1', address: expect.any(String) }]);
    await expect(ioB.lockExclusive(o, LOCK, { cookie: 'c2', durationMs: 30_000 })).rejects.toBeInstanceOf(ImageBusy);
    // Same client, other cookie: another holder too.
    await expect(ioA.lockExclusive(o, LOCK, { cookie: 'c2' })).rejects.toBeInstanceOf(ImageBusy);
    // Same holder again without renew: EEXIST; with renew: a new lease.
    await expect(ioA.lockExclusive(o, LOCK, { cookie: 'c1' })).rejects.toBeInstanceOf(ImageExists);
    await ioA.lockExclusive(o, LOCK, { cookie: 'c1', durationMs: 30_000, renew: 'may' });
    await expect(ioB.unlock(o, LOCK, 'c1')).resolves.toBe(false); // not B's lock
    await expect(ioA.unlock(o, LOCK, 'c1')).resolves.toBe(true);
    await expect(ioA.unlock(o, LOCK, 'c1')).resolves.toBe(false);
    expect((await ioA.listLockers(o, LOCK)).lockers).toEqual([]);
    await ioB.lockExclusive(o, LOCK, { cookie: 'c2', durationMs: 30_000 });
    expect((await ioA.listLockers(o, LOCK)).lockers.map((l) => l.client)).toEqual([`client.${b.instanceId()}`]);
    await ioB.unlock(o, LOCK, 'c2');
  });

  it('breakLock frees another holder’s lock; a missing object has no lockers', async () => {
    const o = oid('break');
    expect(await ioA.listLockers(o, LOCK)).toMatchObject({ lockers: [] });
    await ioA.lockExclusive(o, LOCK, { cookie: 'held' });
    await expect(ioB.breakLock(o, LOCK, `client.${a.instanceId()}`, 'other')).resolves.toBe(false);
    await expect(ioB.breakLock(o, LOCK, `client.${a.instanceId()}`, 'held')).resolves.toBe(true);
    await ioB.lockExclusive(o, LOCK, { cookie: 'next', durationMs: 5_000 });
    await ioB.unlock(o, LOCK, 'next');
  });

  it('a renewed lease keeps the lock past its duration; an unrenewed one expires by itself', async () => {
    const o = oid('lease');
    await ioA.lockExclusive(o, LOCK, { cookie: 'lease', durationMs: 1_000 });
    const t0 = Date.now();
    while (Date.now() - t0 < 2_500) {
      await new Promise((r) => setTimeout(r, 300));
      await ioA.lockExclusive(o, LOCK, { cookie: 'lease', durationMs: 1_000, renew: 'must' });
      await expect(ioB.lockExclusive(o, LOCK, { cookie: 'b', durationMs: 1_000 })).rejects.toBeInstanceOf(ImageBusy);
    }
    // Stop renewing: B gets it once the lease has run out, and not before.
    const stopped = Date.now();
    let tries = 0;
    for (;;) {
      try {
        await ioB.lockExclusive(o, LOCK, { cookie: 'b', durationMs: 5_000 });
        break;
      } catch (e) {
        expect(e).toBeInstanceOf(ImageBusy);
        tries++;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    const waited = Date.now() - stopped;
    expect(tries).toBeGreaterThan(0);
    expect(waited).toBeGreaterThanOrEqual(500);
    expect(waited).toBeLessThan(4_000);
    // A's lease is gone: renewing it (must) fails, and it is not listed.
    await expect(ioA.lockExclusive(o, LOCK, { cookie: 'lease', durationMs: 1_000, renew: 'must' })).rejects.toThrow();
    expect((await ioA.listLockers(o, LOCK)).lockers.map((l) => l.cookie)).toEqual(['b']);
    await ioB.unlock(o, LOCK, 'b');
  });

  it('the lock of a SIGKILLed process frees itself after its lease', async () => {
    const o = oid('sigkill');
    const admin = stack().ceph.users.admin;
    const child = spawn(process.execPath, [fixture, 'rbd', o, LOCK, 'dead', '2000'], {
      env: { ...process.env, RBD_CONF: admin.confPath, RBD_KEYRING: admin.keyringPath },
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 60_000,
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const [line] = (await once(child.stdout, 'data')) as [Buffer];
    const { client } = JSON.parse(line.toString()) as { client: string };
    expect((await ioA.listLockers(o, LOCK)).lockers).toEqual([{ client, cookie: 'dead', address: expect.any(String) }]);
    child.kill('SIGKILL');
    await once(child, 'exit');
    const killed = Date.now();
    // Dead, but its lock stays until the lease ends: the cluster, not the process, frees it.
    await expect(ioA.lockExclusive(o, LOCK, { cookie: 'next', durationMs: 5_000 })).rejects.toBeInstanceOf(ImageBusy);
    for (;;) {
      try {
        await ioA.lockExclusive(o, LOCK, { cookie: 'next', durationMs: 5_000 });
        break;
      } catch (e) {
        expect(e, stderr).toBeInstanceOf(ImageBusy);
        expect(Date.now() - killed).toBeLessThan(10_000);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    expect((await ioB.listLockers(o, LOCK)).lockers.map((l) => l.client)).toEqual([`client.${a.instanceId()}`]);
    await ioA.unlock(o, LOCK, 'next');
  });

  it('refuses bad arguments before anything reaches the cluster', async () => {
    await expect(ioA.lockExclusive('', LOCK, { cookie: 'x' })).rejects.toBeInstanceOf(InvalidArgument);
    await expect(ioA.lockExclusive('o', LOCK, { cookie: '' })).rejects.toBeInstanceOf(InvalidArgument);
    await expect(ioA.lockExclusive('o', LOCK, { cookie: 'x', durationMs: -1 })).rejects.toBeInstanceOf(InvalidArgument);
    await expect(ioA.lockExclusive('o', LOCK, { cookie: 'x', renew: 'sometimes' as 'may' })).rejects.toBeInstanceOf(
      InvalidArgument,
    );
    await expect(ioA.unlock('o', 'a\0b', 'x')).rejects.toBeInstanceOf(InvalidArgument);
    await expect(ioA.breakLock('o', LOCK, '', 'x')).rejects.toBeInstanceOf(InvalidArgument);
  });
});
