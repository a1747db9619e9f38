/**
 * Encrypted disks, driver side: the built-in file key provider, what a spawn request asks for
 * (`encryption` or Nova's flavor extra specs), and the libvirt `volume` secret QEMU reads the
 * passphrase from. A key never reaches argv, XML, logs, errors or the journal.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open, readFile, readdir, rm, link, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { KeyProvider } from '@ephemera/image-backend';
import { isLibvirtError, type Connection } from '@ephemera/libvirt-napi';
import { DriverError } from './errors.js';
import type { Flavor } from './types.js';

/** What a spawn asks to encrypt: every disk of the instance, with QEMU's LUKS (LUKS1). */
export interface EncryptionRequest {
  format: 'luks';
}

/** How an instance's disks are encrypted (in its record): the secret and where the key lives. */
export interface InstanceEncryption {
  format: 'luks';
  /** The libvirt secret (usage `volume`) holding the passphrase. */
  secretUuid: string;
  /** The key provider's name and the key id (the instance UUID). */
  keyProvider: string;
  keyId: string;
}

const TRUE = new Set(['true', '1', 'yes', 'on']);
const FALSE = new Set(['false', '0', 'no', 'off']);

/**
 * The encryption a spawn asks for: `encryption` on the request wins, else the flavor's
 * `hw:ephemeral_encryption` (Nova's spelling) with `hw:ephemeral_encryption_format` (only
 * `luks`: QEMU's engine does LUKS1 only). Undefined: not encrypted. Bad values: INVALID_ARGUMENT.
 */
export function encryptionRequest(
  requested: { format?: unknown } | undefined,
  flavor: Pick<Flavor, 'extraSpecs'>,
  instance?: string,
): EncryptionRequest | undefined {
  const bad = (m: string): DriverError => new DriverError('INVALID_ARGUMENT', m, instance ? { instance } : {});
  if (requested !== undefined) {
    if (typeof requested !== 'object' || requested === null || requested.format !== 'luks')
      throw bad(`encryption.format must be 'luks' (QEMU's LUKS1 engine)`);
    return { format: 'luks' };
  }
  const specs = flavor.extraSpecs ?? {};
  const on = specs['hw:ephemeral_encryption'];
  const fmt = specs['hw:ephemeral_encryption_format'];
  if (on === undefined) {
    if (fmt !== undefined) throw bad('hw:ephemeral_encryption_format needs hw:ephemeral_encryption=true');
    return undefined;
  }
  const v = String(on).trim().toLowerCase();
  if (FALSE.has(v)) return undefined;
  if (!TRUE.has(v)) throw bad(`hw:ephemeral_encryption must be true or false, got ${JSON.stringify(String(on))}`);
  if (fmt !== undefined && String(fmt).trim().toLowerCase() !== 'luks')
    throw bad(`hw:ephemeral_encryption_format ${JSON.stringify(String(fmt))} is not supported: only luks`);
  return { format: 'luks' };
}

/** The volume secret's UUID of an instance (derived, so reconcile and gc find it from the UUID alone). */
export function volumeSecretUuid(instance: string): string {
  const h = createHash('sha256').update(`ephemera-volume-secret\0${instance.toLowerCase()}`).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-8${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

/** The usage name of an instance's volume secret (`virsh secret-list` shows it). */
export function volumeSecretUsage(instance: string): string {
  return `ephemera/${instance.toLowerCase()}`;
}

/**
 * The definition of an instance's `volume` secret: persistent, private (libvirt never hands the
 * value out), no value in it (that goes through virSecretSetValue). Only UUIDs are interpolated.
 */
export function volumeSecretXml(instance: string, secretUuid: string): string {
  for (const [what, v] of [
    ['instance', instance],
    ['secret UUID', secretUuid],
  ])
    if (!UUID_RE.test(v!)) throw new DriverError('INVALID_ARGUMENT', `${what} ${JSON.stringify(v)} is not a UUID`);
  return `<secret ephemeral='no' private='yes'><uuid>${secretUuid}</uuid><description>ephemera disk key</description><usage type='volume'><volume>${volumeSecretUsage(instance)}</volume></usage></secret>`;
}
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * Defines the instance's `volume` secret and sets its value with virSecretSetValue (the only way
 * the passphrase reaches libvirt). A failure undefines it again; errors never carry the key.
 */
export async function defineVolumeSecret(
  conn: Connection,
  instance: string,
  secretUuid: string,
  key: Uint8Array,
): Promise<void> {
  const secret = await conn.defineSecret(volumeSecretXml(instance, secretUuid));
  try {
    await secret.setValue(key);
  } catch (err) {
    await secret.undefine().catch(() => undefined);
    throw new DriverError('SPAWN_FAILED', `setting the value of libvirt secret ${secretUuid} failed: ${errText(err)}`, {
      instance,
      cause: err,
    });
  }
}

/** Whether libvirt has the secret. */
export async function hasSecret(conn: Connection, uuid: string): Promise<boolean> {
  try {
    await conn.lookupSecretByUUID(uuid);
    return true;
  } catch (err) {
    if (isLibvirtError(err, 'VIR_ERR_NO_SECRET')) return false;
    throw err;
  }
}

function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

const KEY_ID = /^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/;

/**
 * The built-in key provider: one file per key, `<dir>/<keyId>.key`, mode 0600 in a 0700
 * directory, created atomically (written and fsynced under a temporary name, then hard-linked into
 * place, which fails rather than replace an existing key). A key is 32 random bytes, base64url
 * text (44 ASCII bytes as passphrase, safe for every consumer).
 */
export class FileKeyProvider implements KeyProvider {
  readonly name = 'file';
  readonly dir: string;

  constructor(dir: string) {
    this.dir = dir;
  }

  #path(keyId: string): string {
    if (typeof keyId !== 'string' || !KEY_ID.test(keyId))
      throw new DriverError('INVALID_ARGUMENT', `key id ${JSON.stringify(String(keyId).slice(0, 64))} is not valid`);
    return join(this.dir, `${keyId}.key`);
  }

  async createKey(keyId: string): Promise<Uint8Array> {
    const path = this.#path(keyId);
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const key = Buffer.from(randomBytes(32).toString('base64url'), 'ascii');
    const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    try {
      const fh = await open(tmp, 'wx', 0o600);
      try {
        await fh.writeFile(key);
        await fh.sync();
      } finally {
        await fh.close();
      }
      await link(tmp, path);
    } catch (err) {
      key.fill(0);
      const code = (err as NodeJS.ErrnoException).code ?? 'error';
      throw new DriverError(
        code === 'EEXIST' ? 'INSTANCE_EXISTS' : 'JOURNAL',
        code === 'EEXIST' ? `a key for ${keyId} exists already` : `cannot write key file ${path}: ${code}`,
      );
    } finally {
      await unlink(tmp).catch(() => undefined);
    }
    return key;
  }

  async getKey(keyId: string): Promise<Uint8Array> {
    const path = this.#path(keyId);
    try {
      return await readFile(path);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? 'error';
      throw new DriverError('ENCRYPTION_KEY', `no key for ${keyId} in ${this.dir} (${code})`);
    }
  }

  async deleteKey(keyId: string): Promise<boolean> {
    const path = this.#path(keyId);
    try {
      await unlink(path);
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw err;
    }
  }

  async listKeys(): Promise<string[]> {
    try {
      return (await readdir(this.dir)).filter((n) => n.endsWith('.key')).map((n) => n.slice(0, -4));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
  }

  /** Removes temporary files of creates a crash interrupted (no key was published from them). */
  async sweep(): Promise<void> {
    for (const n of await readdir(this.dir).catch(() => [] as string[]))
      if (n.endsWith('.tmp')) await rm(join(this.dir, n), { force: true });
  }
}
