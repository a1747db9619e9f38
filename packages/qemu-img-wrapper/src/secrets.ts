/**
 * Passphrases for LUKS images: qemu-img reads them from a `--object secret,file=` of a 0600
 * file that exists only while the command runs, never from argv.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { QemuImgError } from './errors.js';
import { renderImageOpts, type ImageLocation } from './location.js';

/** A QEMU secret object read from a file (`--object secret,id=<id>,file=<file>,format=raw`). */
export interface QemuSecret {
  /** Object id that image options reference (`key-secret=<id>`). */
  id: string;
  /** Absolute path of the file holding the passphrase. */
  file: string;
}

const ID_RE = /^[A-Za-z][A-Za-z0-9_-]{0,31}$/;

/** The argv of one secret object (the id and path are checked; the path may not contain a comma). */
export function renderSecretObject(s: QemuSecret): string[] {
  if (!ID_RE.test(s.id)) throw bad(`invalid secret id ${JSON.stringify(s.id)}`);
  if (typeof s.file !== 'string' || !s.file.startsWith('/') || /[,\0\n]/.test(s.file))
    throw bad('a secret file must be an absolute path without commas');
  return ['--object', `secret,id=${s.id},file=${s.file},format=raw`];
}

/**
 * Writes `passphrase` to a new 0600 file in `dir` (created 0700 if missing), runs `fn` with the
 * secret object for it, and removes the file afterwards, whatever `fn` did. The caller zeroes
 * its copy of the passphrase.
 */
export async function withSecretFile<T>(
  dir: string,
  passphrase: Uint8Array,
  fn: (secret: QemuSecret) => Promise<T>,
): Promise<T> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const file = join(dir, `.qemu-secret-${process.pid}-${randomBytes(6).toString('hex')}`);
  const fh = await open(file, 'wx', 0o600);
  try {
    try {
      await fh.writeFile(passphrase);
    } finally {
      await fh.close();
    }
    return await fn({ id: 'sec0', file });
  } finally {
    await unlink(file).catch(() => undefined);
  }
}

/**
 * `-o` options that make `qemu-img create -f luks` (or `encrypt.*` of qcow2, with `prefix`
 * `encrypt.`) format with the secret. The key is 256 random bits, not a human passphrase, so
 * PBKDF2 stretching adds nothing: a short `iter-time` keeps every create and unlock cheap.
 */
export function luksCreateOptions(secret: QemuSecret, prefix: '' | 'encrypt.' = ''): Record<string, string | number> {
  return {
    ...(prefix ? { 'encrypt.format': 'luks' } : {}),
    [`${prefix}key-secret`]: secret.id,
    [`${prefix}iter-time`]: LUKS_ITER_TIME_MS,
  };
}

/** PBKDF2 time per key slot, in ms (QEMU's default is 2000, for human passphrases). */
export const LUKS_ITER_TIME_MS = 50;

/**
 * The `--target-image-opts` spelling of an existing LUKS image (for `convert` with `noCreate`):
 * `driver=luks,key-secret=<id>,file.driver=...`. `fileDriver` `host_device` for block devices.
 */
export function luksImageOpts(loc: ImageLocation, secret: QemuSecret, fileDriver?: 'file' | 'host_device'): string {
  let s = renderImageOpts(loc, 'luks');
  if (fileDriver === 'host_device') s = s.replace(',file.driver=file,', ',file.driver=host_device,');
  if (!ID_RE.test(secret.id)) throw bad(`invalid secret id ${JSON.stringify(secret.id)}`);
  return `${s},key-secret=${secret.id}`;
}

function bad(message: string): QemuImgError {
  return new QemuImgError({ kind: 'invalid-argument', command: '', message });
}
