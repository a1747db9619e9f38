// Encrypted ephemeral disks (issue 23) on the real stack: the test guest boots from an encrypted
// root disk and writes (its boot counter), the bytes underneath are ciphertext, a wrong key is a
// typed error, and destroy leaves no key, secret or disk.
import { execFile } from 'node:child_process';
import { open, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isDriverError, volumeSecretUuid } from '@ephemera/driver';
import { connect } from '@ephemera/libvirt-napi';
import { readBootCount, waitForMarker, waitForSerial } from '@ephemera/testkit';
import { createTestVg, type TestVg } from './lvm-support.js';
import {
  TINY,
  adminCluster,
  rbdRead,
  deleteImage,
  newUuid,
  testDriver,
  uploadGuest,
  virshSecrets,
  type TestDriver,
} from './support.js';

const exec = promisify(execFile);
const LUKS_MAGIC = 'LUKS\xba\xbe';

/** The first `length` bytes of a file or block device, raw. */
async function rawBytes(path: string, length: number): Promise<Buffer> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(length);
    const { bytesRead } = await fh.read(buf, 0, length, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

describe('encrypted disks', () => {
  let t: TestDriver;
  let vg: TestVg;
  let imageId: string | undefined;
  const ids = { qcow2: newUuid(), lvm: newUuid(), rbd: newUuid() };
  const marker = `crypt-e2e-${ids.qcow2.slice(0, 8)}`;
  const snapshots: string[] = [];

  beforeAll(async () => {
    vg = await createTestVg(128);
    t = await testDriver({
      images: { type: 'qcow2', enabled: ['lvm', 'rbd'], lvm: { volumeGroup: vg.vg, devices: [vg.pv] } },
    });
    imageId = await uploadGuest(t.glance, marker);
  });
  afterAll(async () => {
    for (const u of Object.values(ids)) await t?.driver.destroy(u).catch(() => undefined);
    await deleteImage(t?.glance, imageId);
    for (const s of snapshots) await deleteImage(t?.glance, s);
    await t?.close();
    await vg?.destroy();
  });

  it('boots from encrypted disks on qcow2 (overlay), LVM and RBD; guest writes land as ciphertext', async () => {
    const rbd = t.driver.spawn({
      instance: ids.rbd,
      image: imageId!,
      backend: 'rbd',
      flavor: { ...TINY, swapMiB: 8 },
      encryption: { format: 'luks' },
    });
    const qcow2 = await t.driver.spawn({
      instance: ids.qcow2,
      image: imageId!,
      flavor: { ...TINY, swapMiB: 8 },
      encryption: { format: 'luks' },
    });
    // Nova's flavor spelling asks for the same.
    const lvm = await t.driver.spawn({
      instance: ids.lvm,
      image: imageId!,
      backend: 'lvm',
      flavor: { ...TINY, extraSpecs: { 'hw:ephemeral_encryption': 'true', 'hw:ephemeral_encryption_format': 'luks' } },
    });
    expect(lvm.rootDisk.reason).toMatch(/encrypted/);
    const onRbd = await rbd;
    // Ceph 16 cannot encrypt a clone: the result says the disk was copied, and why.
    expect(onRbd.rootDisk.reason).toMatch(/copied, not cloned, because Ceph 16 cannot encrypt a clone/);
    expect(await t.driver.explain(imageId!, 'rbd')).toMatch(/encrypted .*copied, not cloned, because Ceph 16/);
    for (const r of [qcow2, lvm, onRbd]) {
      expect(r.instance.encryption).toMatchObject({ format: 'luks', secretUuid: volumeSecretUuid(r.instance.uuid) });
      const log = t.driver.consolePath(r.instance.uuid);
      expect(await waitForMarker(log, 120_000)).toBe(marker);
      // The guest read its counter from the encrypted disk and wrote it back through QEMU's LUKS.
      expect(await waitForSerial(log, readBootCount, 60_000, 'the boot count')).toBe(1);
    }
    // qcow2: every disk of the instance is an encrypted qcow2; the root one stays an overlay.
    const q = t.driver.backends.get('qcow2');
    for (const d of await q.list({ instance: ids.qcow2 })) {
      expect(d.encrypted).toBe(true);
      const src = await q.diskSource(d.disk);
      const { stdout } = await exec('qemu-img', [
        'info',
        '--output=json',
        '-U',
        '-f',
        'qcow2',
        (src as { path: string }).path,
      ]);
      expect(JSON.parse(stdout)).toMatchObject({ encrypted: true });
      if (d.disk.name === 'disk') expect(d.parent).toBeDefined();
    }
    // LVM: the LV itself is a LUKS volume and the guest's marker is nowhere in its raw bytes.
    const l = t.driver.backends.get('lvm');
    const src = await l.diskSource({ instance: ids.lvm, name: 'disk' });
    const raw = await rawBytes((src as { path: string }).path, 8 * 1024 * 1024);
    expect(raw.subarray(0, 6).toString('latin1')).toBe(LUKS_MAGIC);
    expect(raw.includes(Buffer.from(marker))).toBe(false);
    // RBD: the image is a LUKS image (QEMU's header), the marker nowhere in its raw bytes.
    const cluster = await adminCluster(t.stack);
    try {
      const pool = t.driver.config.images.rbd.pool;
      const rawRbd = await rbdRead(cluster, pool, `${ids.rbd}_disk`, 0, 8 * 1024 * 1024);
      expect(rawRbd.subarray(0, 6).toString('latin1')).toBe(LUKS_MAGIC);
      expect(rawRbd.includes(Buffer.from(marker))).toBe(false);
    } finally {
      await cluster.close();
    }
    expect((await t.driver.backends.get('rbd').list({ instance: ids.rbd })).map((d) => d.disk.name).sort()).toEqual([
      'disk',
      'disk.swap',
    ]);
    // The passphrase is in the key file only: not in the domain XML nor the journal or record.
    const key = await readFile(join(t.stateDir, 'keys', `${ids.lvm}.key`), 'utf8');
    const { stdout: xml } = await exec('virsh', ['-c', t.stack.libvirt.uri, 'dumpxml', t.driver.domainName(ids.lvm)]);
    expect(xml).toMatch(/<encryption format='luks'[ >]/);
    expect(xml).not.toContain(key);
    const record = await readFile(join(t.driver.config.instancesPath, ids.lvm, 'instance.json'), 'utf8');
    expect(record).not.toContain(key);
  });

  it('a snapshot uploads the decrypted image; a wrong key is ENCRYPTION_KEY; destroy leaves nothing', async () => {
    const uuid = ids.qcow2;
    await t.driver.powerOff(uuid, { graceful: false });
    // Glance gets the plaintext: the guest's marker is in the uploaded bytes.
    for (const u of [ids.qcow2, ids.lvm]) {
      const snap = await t.driver.snapshot(u, `crypt-snap-${u.slice(0, 8)}`);
      snapshots.push(snap.imageId);
      expect(snap.method).toBe('upload');
      const file = join(t.stateDir, `snap-${u}.raw`);
      await t.glance.downloadToFile(snap.imageId, file);
      expect((await readFile(file)).includes(Buffer.from(marker))).toBe(true);
    }
    expect(await readdir(join(t.stateDir, 'tmp'))).toEqual([]);
    const conn = await connect(t.stack.libvirt.uri);
    try {
      const secret = await conn.lookupSecretByUUID(volumeSecretUuid(uuid));
      await secret.setValue(new TextEncoder().encode('not-the-key'));
    } finally {
      await conn.close();
    }
    const err = await t.driver.powerOn(uuid).catch((e: unknown) => e);
    expect(isDriverError(err, 'ENCRYPTION_KEY'), String(err)).toBe(true);
    for (const u of Object.values(ids)) await t.driver.destroy(u);
    expect(await readdir(join(t.stateDir, 'keys'))).toEqual([]);
    const secrets = await virshSecrets(t.stack);
    for (const u of Object.values(ids)) expect(secrets).not.toContain(volumeSecretUuid(u));
    expect(await t.driver.backends.get('qcow2').list({ instance: uuid })).toEqual([]);
    expect(await vg.lvs()).toEqual([]);
    expect(await t.driver.backends.get('rbd').list({ instance: ids.rbd })).toEqual([]);
    expect(await t.driver.journal.entries()).toEqual([]);
  });
});
