// Keyring parsing of the ceph secret helpers (no libvirt needed).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { keyringPath, readCephKey } from '../../src/ceph.js';

const KEY = 'AQBzQ2NnAAAAABAAq0pDd3+Ee0cX5pGg2mRz0w==';
let dir: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'eph-secret-'));
  writeFileSync(join(dir, 'k.keyring'), `[client.nova]\n\tkey = ${KEY}\n\tcaps mon = "profile rbd"\n`);
  writeFileSync(
    join(dir, 'ceph.conf'),
    `[global]\nmon_host = 127.0.0.1\n[client]\nkeyring = ${join(dir, 'k.keyring')}\n`,
  );
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('ceph secret', () => {
  it('reads the key from the keyring file; errors never show it', async () => {
    const key = await readCephKey(join(dir, 'k.keyring'), 'nova');
    expect(key.toString('base64')).toBe(KEY);
    const err = await readCephKey(join(dir, 'k.keyring'), 'other').catch((e: Error) => e);
    expect(String(err)).toContain('no key for client.other');
    expect(String(err)).not.toContain(KEY);
    expect(await keyringPath(join(dir, 'ceph.conf'), 'nova')).toBe(join(dir, 'k.keyring'));
    expect(await keyringPath(join(dir, 'ceph.conf'), 'nova', '/x.keyring')).toBe('/x.keyring');
  });
});
