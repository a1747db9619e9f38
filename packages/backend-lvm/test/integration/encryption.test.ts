// Encrypted LVs on a real VG: QEMU's LUKS on the LV's block device (no dm-crypt); the raw LV
// holds ciphertext, the image reads back through the key, the key never stays on disk.
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  expectImageBackendError,
  sourceImageFromBytes,
  type DiskEncryption,
  type DiskRef,
} from '@ephemera/image-backend';
import { createBackendFixture, type BackendFixture } from '../support/backend-fixture.js';

const exec = promisify(execFile);
const MiB = 1024 * 1024;
const key = 'lvm-test-key-0123456789abcdef';
let fx: BackendFixture;
let tempDir: string;
const newDisk = (name = 'disk'): DiskRef => ({ instance: randomUUID(), name });
const enc = (): DiskEncryption => ({
  format: 'luks',
  secretUuid: randomUUID(),
  passphrase: async () => new TextEncoder().encode(key),
});

beforeAll(async () => {
  tempDir = await mkdtemp(join(tmpdir(), 'lvm-enc-'));
  fx = await createBackendFixture({ sizeMiB: 128, extentMiB: 4, tempDir });
});
afterAll(async () => {
  await fx?.destroy();
  if (tempDir) await rm(tempDir, { recursive: true, force: true });
});

describe('encrypted LVs', () => {
  it('converts an image into a LUKS volume on the LV: ciphertext underneath, plaintext through the key', async () => {
    const disk = newDisk();
    const marker = Buffer.from(`EPHEMERA-LVM-ENCRYPTED-${randomUUID()}`);
    const image = Buffer.alloc(2 * MiB);
    marker.copy(image, 512);
    const e = enc();
    const r = await fx.backend.createFromImage(disk, sourceImageFromBytes(image), { encryption: e });
    expect(r.method).toBe('imported');
    expect(r.reason).toMatch(/encrypted/);
    expect((await fx.backend.info(disk)).encrypted).toBe(true);
    const src = await fx.backend.diskSource(disk);
    expect(src.encryption).toEqual({ format: 'luks', secretUuid: e.secretUuid });
    const raw = Buffer.from(await fx.read(disk, 8 * MiB));
    expect(raw.subarray(0, 6).toString('latin1')).toBe('LUKS\xba\xbe');
    expect(raw.includes(marker)).toBe(false);
    // Through the key, the image is there.
    const keyFile = join(tempDir, 'k');
    await writeFile(keyFile, key, { mode: 0o600 });
    const out = join(tempDir, 'back.raw');
    await exec('qemu-img', [
      'convert',
      '--object',
      `secret,id=s0,file=${keyFile}`,
      '--image-opts',
      `driver=luks,key-secret=s0,file.driver=host_device,file.filename=${src.path}`,
      '-O',
      'raw',
      out,
    ]);
    const { readFile } = await import('node:fs/promises');
    expect((await readFile(out)).includes(marker)).toBe(true);
    await rm(keyFile);
    await rm(out);
    // No secret file or spool left in tempDir.
    expect(await readdir(tempDir)).toEqual([]);
    await expectImageBackendError(fx.backend.resize(disk, 64 * MiB), 'UNSUPPORTED_OPERATION');
    expect(await fx.backend.remove(disk)).toBe(true);
  });

  it('encrypts blank LVs; a create without passphrase is InvalidArgument and leaves no LV', async () => {
    const disk = newDisk('disk.swap');
    await fx.backend.createBlank(disk, 8 * MiB, { encryption: enc() });
    const raw = Buffer.from(await fx.read(disk, 512));
    expect(raw.subarray(0, 6).toString('latin1')).toBe('LUKS\xba\xbe');
    expect(await fx.backend.remove(disk)).toBe(true);
    const bare = newDisk('disk.local');
    const { passphrase: _p, ...noKey } = enc();
    await expectImageBackendError(fx.backend.createBlank(bare, 8 * MiB, { encryption: noKey }), 'INVALID_ARGUMENT');
    expect(await fx.backend.exists(bare)).toBe(false);
  });
});
