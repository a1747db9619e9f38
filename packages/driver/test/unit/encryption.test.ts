import { mkdtempSync, readdirSync, rmSync, statSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { isDriverError } from '../../src/errors.js';
import {
  FileKeyProvider,
  encryptionRequest,
  volumeSecretUsage,
  volumeSecretUuid,
  volumeSecretXml,
} from '../../src/encryption.js';

const UUID = 'b0d4c1a6-2f6e-4e55-9a38-8c0f2b1c3d4e';

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'eph-k-'));
  onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return isDriverError(err) ? err.code : 'not a DriverError';
  }
  return undefined;
}

describe('FileKeyProvider', () => {
  it('creates a 0600 key file in a 0700 directory, reads it back, deletes it idempotently', async () => {
    const dir = join(tempDir(), 'keys');
    const p = new FileKeyProvider(dir);
    const key = Buffer.from(await p.createKey(UUID));
    expect(key.length).toBeGreaterThanOrEqual(32);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    const file = join(dir, `${UUID}.key`);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(readFileSync(file).equals(key)).toBe(true);
    expect(Buffer.from(await p.getKey(UUID)).equals(key)).toBe(true);
    expect(await p.listKeys()).toEqual([UUID]);
    // Nothing but the key file: the temporary file was removed.
    expect(readdirSync(dir)).toEqual([`${UUID}.key`]);
    expect(await p.deleteKey(UUID)).toBe(true);
    expect(await p.deleteKey(UUID)).toBe(false);
    await expect(p.getKey(UUID)).rejects.toMatchObject({ code: 'ENCRYPTION_KEY' });
  });

  it('never replaces an existing key and makes a different key per id', async () => {
    const p = new FileKeyProvider(tempDir());
    const a = Buffer.from(await p.createKey(UUID));
    await expect(p.createKey(UUID)).rejects.toMatchObject({ code: 'INSTANCE_EXISTS' });
    expect(Buffer.from(await p.getKey(UUID)).equals(a)).toBe(true);
    const b = Buffer.from(await p.createKey('other-instance'));
    expect(b.equals(a)).toBe(false);
    expect(readdirSync(p.dir).sort()).toEqual([`${UUID}.key`, 'other-instance.key'].sort());
  });

  it('refuses key ids that could escape the directory, and errors never carry the key', async () => {
    const p = new FileKeyProvider(tempDir());
    await expect(p.createKey('../x')).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(p.getKey('a/b')).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    const key = Buffer.from(await p.createKey(UUID)).toString();
    const err = await p.createKey(UUID).catch((e: Error) => e);
    expect(String((err as Error).message)).not.toContain(key);
  });
});

describe('encryptionRequest', () => {
  it('takes the request, else Nova flavor extra specs', () => {
    expect(encryptionRequest({ format: 'luks' }, {})).toEqual({ format: 'luks' });
    expect(encryptionRequest(undefined, {})).toBeUndefined();
    expect(encryptionRequest(undefined, { extraSpecs: { 'hw:ephemeral_encryption': 'True' } })).toEqual({
      format: 'luks',
    });
    expect(
      encryptionRequest(undefined, {
        extraSpecs: { 'hw:ephemeral_encryption': 'true', 'hw:ephemeral_encryption_format': 'luks' },
      }),
    ).toEqual({ format: 'luks' });
    expect(encryptionRequest(undefined, { extraSpecs: { 'hw:ephemeral_encryption': 'false' } })).toBeUndefined();
  });

  it('refuses what it cannot do with INVALID_ARGUMENT', () => {
    expect(codeOf(() => encryptionRequest({ format: 'luks2' }, {}))).toBe('INVALID_ARGUMENT');
    expect(codeOf(() => encryptionRequest(undefined, { extraSpecs: { 'hw:ephemeral_encryption': 'maybe' } }))).toBe(
      'INVALID_ARGUMENT',
    );
    expect(
      codeOf(() =>
        encryptionRequest(undefined, {
          extraSpecs: { 'hw:ephemeral_encryption': 'true', 'hw:ephemeral_encryption_format': 'plain' },
        }),
      ),
    ).toBe('INVALID_ARGUMENT');
    expect(
      codeOf(() => encryptionRequest(undefined, { extraSpecs: { 'hw:ephemeral_encryption_format': 'luks' } })),
    ).toBe('INVALID_ARGUMENT');
  });
});

describe('volume secret naming', () => {
  it('derives a stable UUID and usage per instance', () => {
    expect(volumeSecretUuid(UUID)).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-8[0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(volumeSecretUuid(UUID.toUpperCase())).toBe(volumeSecretUuid(UUID));
    expect(volumeSecretUuid(UUID)).not.toBe(volumeSecretUuid('00000000-0000-4000-8000-000000000000'));
    expect(volumeSecretUsage(UUID)).toBe(`ephemera/${UUID}`);
  });
});

describe('volumeSecretXml', () => {
  it('is a private, persistent volume secret without any value, and refuses non-UUIDs', () => {
    const su = volumeSecretUuid(UUID);
    const xml = volumeSecretXml(UUID, su);
    expect(xml).toBe(
      `<secret ephemeral='no' private='yes'><uuid>${su}</uuid><description>ephemera disk key</description>` +
        `<usage type='volume'><volume>ephemera/${UUID}</volume></usage></secret>`,
    );
    expect(xml).not.toMatch(/<value|passphrase/);
    expect(codeOf(() => volumeSecretXml(`${UUID}'/><x`, su))).toBe('INVALID_ARGUMENT');
    expect(codeOf(() => volumeSecretXml(UUID, 'not-a-uuid'))).toBe('INVALID_ARGUMENT');
  });
});
