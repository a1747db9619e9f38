// Encrypted disks on the qcow2 backend, with the real qemu-img: a LUKS-encrypted overlay over the
// plain cached base (copy-on-write kept), the passphrase only in a 0600 file while qemu-img runs.
import { randomUUID } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  expectImageBackendError,
  patternBytes,
  sourceImageFromBytes,
  type DiskEncryption,
  type DiskRef,
} from '@ephemera/image-backend';
import { createFixture, exec, type Fixture } from '../support/fixture.js';

const MiB = 1024 * 1024;
let fx: Fixture;
const newDisk = (name = 'disk'): DiskRef => ({ instance: randomUUID(), name });
const key = 'q2-test-key-0123456789abcdef';
const enc = (): DiskEncryption => ({
  format: 'luks',
  secretUuid: randomUUID(),
  passphrase: async () => new TextEncoder().encode(key),
});

beforeAll(async () => {
  fx = await createFixture();
});
afterAll(async () => {
  await fx?.destroy();
});

describe('encryption', () => {
  it('makes an encrypted qcow2 overlay over the plain base; guest writes are ciphertext on disk', async () => {
    const disk = newDisk();
    const e = enc();
    const r = await fx.backend.createFromImage(disk, sourceImageFromBytes(patternBytes(2 * MiB, 5)), {
      sizeBytes: 4 * MiB,
      encryption: e,
    });
    expect(r.sizeBytes).toBe(4 * MiB);
    const info = await fx.backend.info(disk);
    expect(info.encrypted).toBe(true);
    expect(info.parent).toBeDefined();
    const src = await fx.backend.diskSource(disk);
    expect(src).toEqual({
      type: 'file',
      path: src.path,
      format: 'qcow2',
      encryption: { format: 'luks', secretUuid: e.secretUuid },
    });
    // Write through the key (as the guest would), then look for the plaintext in the raw file.
    const secretFile = join(fx.root, 'k');
    await exec('sh', ['-c', `umask 077; printf %s "$K" > "$F"`], {
      env: { K: key, F: secretFile, PATH: process.env.PATH },
    });
    await exec('qemu-io', [
      '--object',
      `secret,id=s0,file=${secretFile}`,
      '--image-opts',
      `driver=qcow2,file.filename=${src.path},encrypt.key-secret=s0`,
      '-c',
      `write -P 0x41 0 64k`,
    ]);
    const raw = await readFile(src.path);
    expect(raw.includes(Buffer.from('A'.repeat(4096)))).toBe(false);
    // No secret file left in the disk directory, no temporary directory left.
    expect((await readdir(join(src.path, '..'))).sort()).toEqual(['disk.qcow2', 'encryption.json']);
    expect((await readdir(fx.backend.instancesDir)).filter((n) => n.startsWith('.'))).toEqual([]);
  });

  it('encrypts blank disks, refuses a create without passphrase (nothing left) and a resize', async () => {
    const disk = newDisk('disk.local');
    await fx.backend.createBlank(disk, 2 * MiB, { encryption: enc() });
    expect((await fx.backend.info(disk)).encrypted).toBe(true);
    const { stdout } = await exec('qemu-img', [
      'info',
      '--output=json',
      '-f',
      'qcow2',
      (await fx.backend.diskSource(disk)).path,
    ]);
    expect(JSON.parse(stdout).encrypted).toBe(true);
    await expectImageBackendError(fx.backend.resize(disk, 4 * MiB), 'UNSUPPORTED_OPERATION');

    const bare = newDisk('disk.swap');
    const { passphrase: _p, ...noKey } = enc();
    await expectImageBackendError(fx.backend.createBlank(bare, 2 * MiB, { encryption: noKey }), 'INVALID_ARGUMENT');
    expect(await fx.backend.exists(bare)).toBe(false);
  });
});
