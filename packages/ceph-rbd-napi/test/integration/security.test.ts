import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, PermissionDenied, ReadOnlyImage, Timeout, type Cluster, type IoCtx } from '@ephemera/ceph-rbd-napi';
import { Cleanup, cleanUpAndClose, connectAs, DEAD_MON, stack, uniq } from './helpers.js';

const MiB = 1 << 20;
let admin: Cluster;
let ephemera: Cluster;
let adminImages: IoCtx;
const cleanup = new Cleanup();

function keyOf(keyringPath: string): string {
  const m = /key\s*=\s*(\S+)/.exec(readFileSync(keyringPath, 'utf8'));
  if (!m) throw new Error(`no key in ${keyringPath}`);
  return m[1]!;
}

beforeAll(async () => {
  admin = await connectAs('admin');
  ephemera = await connectAs('ephemera');
  adminImages = await admin.openIoCtx('images');
});
afterAll(() => cleanUpAndClose(cleanup, ephemera, admin));

describe('cephx capabilities', () => {
  it('client.ephemera cannot write into images (PermissionDenied / ReadOnlyImage) but clones from it into vms', async () => {
    const base = uniq('perm');
    await adminImages.create(base, 4 * MiB);
    const a = await adminImages.open(base);
    await a.write(0, Buffer.alloc(MiB, 9));
    await a.createSnapshot('s');
    await a.protectSnapshot('s');
    await a.close();
    cleanup.add(`remove ${base}`, async () => {
      const i = await adminImages.open(base);
      await i.unprotectSnapshot('s');
      await i.removeSnapshot('s');
      await i.close();
      await adminImages.remove(base);
    });

    const images = await ephemera.openIoCtx('images');
    const vms = await ephemera.openIoCtx('vms');
    const created = await images.create(uniq('nope'), MiB).catch((e: unknown) => e);
    expect(created).toBeInstanceOf(PermissionDenied);
    expect((created as PermissionDenied).code).toBe('EPERM');
    expect(await images.open(base).catch((e: unknown) => e)).toBeInstanceOf(PermissionDenied); // a writable open needs a watch
    expect(await images.remove(base).catch((e: unknown) => e)).toBeInstanceOf(PermissionDenied);
    const ro = await images.open(base, { readOnly: true });
    expect(await ro.write(0, Buffer.alloc(4096)).catch((e: unknown) => e)).toBeInstanceOf(ReadOnlyImage);
    expect(await ro.read(0, 4)).toEqual(Buffer.alloc(4, 9));
    await ro.close();

    const clone = uniq('eph-clone');
    await vms.clone({ parent: { ioctx: images, image: base, snap: 's' }, dest: { name: clone } });
    const c = await vms.open(clone);
    await c.write(MiB, Buffer.alloc(MiB, 1));
    expect((await c.read(0, 4))[0]).toBe(9);
    await c.close();
    await vms.remove(clone);
  });
});

describe('connect timeout and secrets', () => {
  it('connecting to a dead monitor fails with Timeout within the timeout', async () => {
    const timeoutMs = 2000;
    const t0 = performance.now();
    const err = await connect({
      monHost: DEAD_MON,
      clientId: 'admin',
      keyringPath: stack().ceph.users.admin.keyringPath,
      timeoutMs,
    }).catch((e: unknown) => e);
    const ms = performance.now() - t0;
    expect(err).toBeInstanceOf(Timeout);
    expect((err as Timeout).code).toBe('ETIMEDOUT');
    expect((err as Timeout).operation).toBe('connect');
    expect(ms).toBeGreaterThan(timeoutMs * 0.8);
    expect(ms).toBeLessThan(timeoutMs + 1500);
  });

  it('keys never appear in errors (wrong key, key option, dead monitor)', async () => {
    const realKey = keyOf(stack().ceph.users.ephemera.keyringPath);
    const fakeKey = 'AQAAAAAAAAAAABAAAAAAAAAAAAAAAAAAAAAAAA==';
    const errors: unknown[] = [];
    // a wrong inline key for a real user: authentication fails
    errors.push(
      await connect({
        monHost: stack().ceph.monHost,
        clientId: 'ephemera',
        timeoutMs: 5000,
        options: { key: fakeKey },
      }).catch((e: unknown) => e),
    );
    // the real keyring against a dead monitor
    errors.push(
      await connect({
        monHost: DEAD_MON,
        clientId: 'ephemera',
        keyringPath: stack().ceph.users.ephemera.keyringPath,
        timeoutMs: 1000,
      }).catch((e: unknown) => e),
    );
    // a bad option next to a key
    errors.push(
      await connect({ monHost: DEAD_MON, timeoutMs: 1000, options: { key: realKey, no_such_option_xyz: '1' } }).catch(
        (e: unknown) => e,
      ),
    );
    for (const e of errors) {
      expect(e).toBeInstanceOf(Error);
      const text = `${(e as Error).message}\n${(e as Error).stack}\n${JSON.stringify(e)}`;
      expect(text).not.toContain(realKey);
      expect(text).not.toContain(fakeKey);
    }
    expect(errors[0]).toBeInstanceOf(PermissionDenied);
    expect(errors[1]).toBeInstanceOf(Timeout);
  });
});
