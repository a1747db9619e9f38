/**
 * Ceph glue of the driver: the keyring (read from its file, never logged), the libvirt ceph
 * secret (defined once when missing), and an RbdProbe over librbd for the resolver.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { Cluster } from '@ephemera/ceph-rbd-napi';
import type { RbdProbe } from '@ephemera/glance';
import { isLibvirtError, type Connection } from '@ephemera/libvirt-napi';
import { DriverError } from './errors.js';

/** Parses an ini-style ceph file into sections. */
function parseIni(text: string): Map<string, Map<string, string>> {
  const out = new Map<string, Map<string, string>>();
  let cur = new Map<string, string>();
  out.set('', cur);
  for (const raw of text.split('\n')) {
    const line = raw.replace(/[#;].*$/, '').trim();
    if (!line) continue;
    const sec = /^\[(.+)\]$/.exec(line);
    if (sec) {
      cur = out.get(sec[1]!.trim()) ?? new Map();
      out.set(sec[1]!.trim(), cur);
      continue;
    }
    const eq = line.indexOf('=');
    if (eq < 0) continue;
    cur.set(line.slice(0, eq).trim().replace(/[ _]+/g, '_'), line.slice(eq + 1).trim());
  }
  return out;
}

/** The keyring path for `client.<user>`: the configured one, else `keyring` from the ceph.conf. */
export async function keyringPath(confPath: string, user: string, configured?: string): Promise<string> {
  if (configured) return configured;
  let text: string;
  try {
    text = await readFile(confPath, 'utf8');
  } catch (err) {
    throw new DriverError('INVALID_CONFIG', `cannot read ceph.conf ${confPath}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  const ini = parseIni(text);
  for (const sec of [`client.${user}`, 'client', 'global']) {
    const v = ini.get(sec)?.get('keyring');
    if (v)
      return v
        .split(',')[0]!
        .trim()
        .replace(/\$name/g, `client.${user}`)
        .replace(/\$cluster/g, 'ceph');
  }
  return `/etc/ceph/ceph.client.${user}.keyring`;
}

/**
 * The key of `client.<user>` from a keyring file, as bytes (decoded base64). The caller zeroes
 * it after use. Errors name the file, never the key.
 */
export async function readCephKey(path: string, user: string): Promise<Buffer> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new DriverError(
      'INVALID_CONFIG',
      `cannot read keyring ${path}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`,
    );
  }
  const key = parseIni(text).get(`client.${user}`)?.get('key');
  text = '';
  if (!key || !/^[A-Za-z0-9+/=]+$/.test(key))
    throw new DriverError('INVALID_CONFIG', `keyring ${path} has no key for client.${user}`);
  return Buffer.from(key, 'base64');
}

/** A stable secret UUID for a Ceph user when none is configured. */
export function defaultSecretUuid(user: string, confPath: string): string {
  const h = createHash('sha256').update(`ephemera-ceph-secret\0${confPath}\0${user}`).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-8${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

/** The usage name libvirt knows the secret by. */
export function secretUsage(user: string): string {
  return `client.${user} secret`;
}

/** Looks the secret up by UUID, then by usage; undefined when neither exists. */
export async function findCephSecret(conn: Connection, uuid: string, user: string): Promise<string | undefined> {
  try {
    return (await conn.lookupSecretByUUID(uuid)).uuid();
  } catch (err) {
    if (!isLibvirtError(err)) throw err;
  }
  try {
    return (await conn.lookupSecretByUsage('ceph', secretUsage(user))).uuid();
  } catch (err) {
    if (!isLibvirtError(err)) throw err;
    return undefined;
  }
}

/**
 * Defines the ceph secret `uuid` for `client.<user>` with the key read from `keyring` (the value
 * goes through `virSecretSetValue`, never argv, XML or logs). Rolls the definition back if setting
 * the value fails.
 */
export async function defineCephSecret(conn: Connection, uuid: string, user: string, keyring: string): Promise<void> {
  const key = await readCephKey(keyring, user);
  try {
    const xml = `<secret ephemeral='no' private='yes'><uuid>${uuid}</uuid><usage type='ceph'><name>${secretUsage(user).replace(/[<>&'"]/g, '')}</name></usage></secret>`;
    const secret = await conn.defineSecret(xml);
    try {
      await secret.setValue(key);
    } catch (err) {
      await secret.undefine().catch(() => undefined);
      throw new DriverError(
        'SPAWN_FAILED',
        `setting the value of libvirt secret ${uuid} failed: ${(err as Error).message}`,
        { cause: err },
      );
    }
  } finally {
    key.fill(0);
  }
}

/** Undefines a secret if it exists (idempotent). */
export async function undefineSecret(conn: Connection, uuid: string): Promise<boolean> {
  try {
    const s = await conn.lookupSecretByUUID(uuid);
    await s.undefine();
    return true;
  } catch (err) {
    if (isLibvirtError(err, 'VIR_ERR_NO_SECRET')) return false;
    throw err;
  }
}

/** An {@link RbdProbe} that opens the snapshot read-only through librbd. */
export class LibrbdProbe implements RbdProbe {
  readonly #cluster: Cluster;
  readonly #fsid: string;

  constructor(cluster: Cluster, fsid: string) {
    this.#cluster = cluster;
    this.#fsid = fsid;
  }

  async snapshotReadable(ref: {
    fsid: string;
    pool: string;
    image: string;
    snapshot: string;
  }): Promise<boolean | string> {
    if (ref.fsid.toLowerCase() !== this.#fsid.toLowerCase())
      return `cluster ${ref.fsid} is not this node's cluster ${this.#fsid}`;
    try {
      const io = await this.#cluster.openIoCtx(ref.pool);
      try {
        const img = await io.open(ref.image, { snapshot: ref.snapshot, readOnly: true });
        await img.close();
        return true;
      } finally {
        await io.close();
      }
    } catch (err) {
      return `${ref.pool}/${ref.image}@${ref.snapshot}: ${(err as Error).message}`;
    }
  }
}
