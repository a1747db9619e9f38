// The ceph secret helpers against the dev stack's libvirtd (a throwaway usage name, never the stack's own secret).
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type Connection } from '@ephemera/libvirt-napi';
import { loadStack } from '@ephemera/testkit';
import { defaultSecretUuid, defineCephSecret, findCephSecret, undefineSecret } from '../../src/ceph.js';

const KEY = 'AQBzQ2NnAAAAABAAq0pDd3+Ee0cX5pGg2mRz0w==';
const user = `ephtest${randomUUID().slice(0, 8)}`;
let conn: Connection;
let dir: string;
let uuid: string;

beforeAll(async () => {
  conn = await connect(loadStack().libvirt.uri);
  dir = mkdtempSync(join(tmpdir(), 'eph-secret-'));
  writeFileSync(join(dir, 'k.keyring'), `[client.${user}]\n\tkey = ${KEY}\n`);
  uuid = defaultSecretUuid(user, join(dir, 'ceph.conf'));
});
afterAll(async () => {
  if (conn && uuid) await undefineSecret(conn, uuid).catch(() => undefined);
  await conn?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('ceph secret in libvirt', () => {
  it('defines it once, finds it by UUID or usage, never exposes the key, undefines idempotently', async () => {
    expect(uuid).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-8[0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(await findCephSecret(conn, uuid, user)).toBeUndefined();
    await defineCephSecret(conn, uuid, user, join(dir, 'k.keyring'));
    expect(await findCephSecret(conn, uuid, user)).toBe(uuid);
    expect(await findCephSecret(conn, randomUUID(), user)).toBe(uuid);
    const xml = await (await conn.lookupSecretByUUID(uuid)).xml();
    expect(xml).toContain(`client.${user} secret`);
    expect(xml).not.toContain(KEY);
    expect(await undefineSecret(conn, uuid)).toBe(true);
    expect(await undefineSecret(conn, uuid)).toBe(false);
    expect(await findCephSecret(conn, uuid, user)).toBeUndefined();
  });
});
