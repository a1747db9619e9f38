// "Define the ceph secret in libvirt once": on a private libvirtd without the secret, the first
// spawn defines it (value read from the keyring file, set through virSecretSetValue) and QEMU
// authenticates to Ceph with it; later spawns reuse it; destroy leaves the shared secret alone.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type Connection } from '@ephemera/libvirt-napi';
import { startPrivateLibvirtd, waitForMarker, type PrivateLibvirtd } from '@ephemera/testkit';
import { undefineSecret } from '../packages/driver/src/ceph.js';
import { TINY, deleteImage, newUuid, rbdLs, testDriver, uploadGuest, type TestDriver } from './support.js';

let lv: PrivateLibvirtd;
let lvDir: string;
let conn: Connection;
let t: TestDriver;
let imageId: string | undefined;
const uuids = [newUuid(), newUuid(), newUuid(), newUuid(), newUuid()];

beforeAll(async () => {
  lvDir = await mkdtemp(join(tmpdir(), 'ephemera-e2e-libvirtd-'));
  lv = await startPrivateLibvirtd(lvDir);
  conn = await connect(lv.uri);
  t = await testDriver({ libvirt: { uri: lv.uri } });
  // This libvirtd starts with the stack's secret: remove it so the driver has to define it.
  await undefineSecret(conn, t.driver.ceph.secretUuid!);
  imageId = await uploadGuest(t.glance, `secret-${uuids[0]!.slice(0, 8)}`);
}, 300_000);

afterAll(async () => {
  for (const u of uuids) await t?.driver.destroy(u).catch(() => undefined);
  await deleteImage(t?.glance, imageId);
  await t?.close();
  await conn?.close();
  await lv?.stop();
  await rm(lvDir, { recursive: true, force: true });
});

describe('ceph secret', () => {
  it('the first spawn defines it and the guest boots from RBD with cephx; the next one reuses it', async () => {
    const secretUuid = t.driver.ceph.secretUuid!;
    await expect(conn.lookupSecretByUUID(secretUuid)).rejects.toMatchObject({ codeName: 'VIR_ERR_NO_SECRET' });
    const first = await t.driver.spawn({ instance: uuids[0]!, image: imageId!, flavor: TINY });
    expect(first.timings.secret).toBeGreaterThan(0);
    const secret = await conn.lookupSecretByUUID(secretUuid);
    expect(secret.usageID()).toBe(`client.${t.driver.ceph.user} secret`);
    expect(await waitForMarker(t.driver.consolePath(uuids[0]!), 120_000)).toBe(`secret-${uuids[0]!.slice(0, 8)}`);
    const second = await t.driver.spawn({ instance: uuids[1]!, image: imageId!, flavor: TINY });
    expect(second.instance.state === 'running' || second.instance.state === 'shutoff').toBe(true);
    expect((await conn.listAllSecrets()).filter((s) => s.uuid() === secretUuid)).toHaveLength(1);
    for (const u of uuids.slice(0, 2)) await t.driver.destroy(u);
    // Shared by every instance: destroy keeps it.
    expect((await conn.lookupSecretByUUID(secretUuid)).uuid()).toBe(secretUuid);
    for (const u of uuids.slice(0, 2))
      expect((await rbdLs(t.stack, t.stack.ceph.pools.vms)).filter((n) => n.startsWith(u))).toEqual([]);
  });

  it('once libvirt holds it, a spawn neither looks the secret up nor defines it (issue 22.5)', async () => {
    const lv = t.driver.libvirt;
    const calls: string[] = [];
    const spy = <K extends 'lookupSecretByUUID' | 'lookupSecretByUsage' | 'defineSecret'>(k: K): (() => void) => {
      const orig = lv[k];
      lv[k] = ((...a: Parameters<Connection[K]>) => {
        calls.push(k);
        return (orig as (...x: unknown[]) => unknown).apply(lv, a);
      }) as Connection[K];
      return () => {
        lv[k] = orig;
      };
    };
    const restore = [spy('lookupSecretByUUID'), spy('lookupSecretByUsage'), spy('defineSecret')];
    try {
      const r = await t.driver.spawn({ instance: uuids[3]!, image: imageId!, flavor: TINY });
      expect(r.rootDisk.method).toBe('cloned');
    } finally {
      for (const f of restore) f();
    }
    expect(await waitForMarker(t.driver.consolePath(uuids[3]!), 120_000)).toBe(`secret-${uuids[0]!.slice(0, 8)}`);
    await t.driver.destroy(uuids[3]!);
    expect(calls).toEqual([]);
  });

  it('a secret removed by someone else is defined again and the guest boots', async () => {
    const secretUuid = t.driver.ceph.secretUuid!;
    expect(await undefineSecret(conn, secretUuid)).toBe(true);
    const r = await t.driver.spawn({ instance: uuids[4]!, image: imageId!, flavor: TINY });
    expect(r.rootDisk.method).toBe('cloned');
    expect((await conn.lookupSecretByUUID(secretUuid)).usageID()).toBe(`client.${t.driver.ceph.user} secret`);
    expect(await waitForMarker(t.driver.consolePath(uuids[4]!), 120_000)).toBe(`secret-${uuids[0]!.slice(0, 8)}`);
    await t.driver.destroy(uuids[4]!);
    expect((await rbdLs(t.stack, t.stack.ceph.pools.vms)).filter((n) => n.startsWith(uuids[4]!))).toEqual([]);
  });

  it('libvirtd restarts: the driver reconnects and the next spawn and destroy work', async () => {
    const before = t.driver.libvirt;
    await lv.restart();
    const r = await t.driver.spawn({ instance: uuids[2]!, image: imageId!, flavor: TINY });
    expect(r.rootDisk.method).toBe('cloned');
    expect(t.driver.libvirt).not.toBe(before);
    expect((await t.driver.list()).map((i) => i.uuid)).toEqual([uuids[2]]);
    await t.driver.destroy(uuids[2]!);
    expect((await rbdLs(t.stack, t.stack.ceph.pools.vms)).filter((n) => n.startsWith(uuids[2]!))).toEqual([]);
  });
});
