import { isAbsolute, resolve } from 'node:path';
import { QemuImgError } from './errors.js';

/**
 * An RBD image (or snapshot) reached through QEMU's rbd driver. Authentication comes from the
 * ceph.conf at `confPath`, whose `keyring` points at a keyring file: there is deliberately no
 * field for a key, so a key can never end up in qemu-img's argv.
 */
export interface RbdImage {
  pool: string;
  /** RADOS namespace inside the pool (optional). */
  namespace?: string;
  image: string;
  snapshot?: string;
  /** cephx id without `client.`, e.g. `ephemera`. */
  user: string;
  /** ceph.conf with mon_host and a keyring path for `user`. */
  confPath: string;
  /**
   * A keyring *file* for `user` when ceph.conf names none (a path, never a key). Only the `rbd:`
   * URI spelling can carry it (QEMU's rbd driver passes unknown keys to librados).
   */
  keyringPath?: string;
}

/** An RBD location as passed to {@link QemuImg} methods. */
export interface RbdLocation extends RbdImage {
  type: 'rbd';
  /** How to spell it for qemu-img: `rbd:` pseudo-URI (default) or the `json:` pseudo-protocol. */
  syntax?: 'uri' | 'json';
}

/** An HTTP(S) source read by QEMU's curl driver (a source only; the format comes from `-f`). */
export interface HttpLocation {
  type: 'http';
  url: string;
  /** curl driver `readahead` in bytes. */
  readaheadBytes?: number;
  /** curl driver `timeout` in seconds. */
  timeoutSeconds?: number;
}

/**
 * An NBD export on a Unix socket, read by QEMU's nbd client driver (a source only; the format
 * comes from `-f`). What a local server offers qemu-img, as nbdkit does for KubeVirt's CDI: QEMU's
 * curl driver can hang after the last read of a conversion (docs/operations.md).
 */
export interface NbdLocation {
  type: 'nbd';
  /** Absolute path of the server's Unix socket. */
  socketPath: string;
  /** Export name (default: the server's default export, ''). */
  exportName?: string;
}

/**
 * Where an image lives: a local path (file or block device; always made absolute, so a name
 * like `nbd:x` or `-f` can never be taken for a protocol or an option), an RBD image, an
 * HTTP(S) source or an NBD export on a Unix socket.
 */
export type ImageLocation = string | RbdLocation | HttpLocation | NbdLocation;

/** Builds an {@link HttpLocation}. */
export function httpLocation(
  url: string,
  options: { readaheadBytes?: number; timeoutSeconds?: number } = {},
): HttpLocation {
  return { type: 'http', url, ...options };
}

/** Builds an {@link NbdLocation}. */
export function nbdLocation(socketPath: string, exportName?: string): NbdLocation {
  return { type: 'nbd', socketPath, ...(exportName !== undefined ? { exportName } : {}) };
}

/** The `json:` spelling of an NBD export on a Unix socket for QEMU's nbd driver. */
export function nbdJson(n: Omit<NbdLocation, 'type'>): string {
  if (typeof n.socketPath !== 'string' || !isAbsolute(n.socketPath) || !NAME_RE.test(n.socketPath))
    throw bad('NBD socketPath must be an absolute single-line path');
  if (n.exportName !== undefined && (typeof n.exportName !== 'string' || /[\0\n\r]/.test(n.exportName)))
    throw bad('NBD exportName must be a single-line string');
  const file: Record<string, unknown> = { driver: 'nbd', server: { type: 'unix', path: n.socketPath } };
  if (n.exportName) file['export'] = n.exportName;
  return `json:${JSON.stringify({ file })}`;
}

/** The `json:` spelling of an HTTP(S) source for QEMU's curl driver. */
export function httpJson(h: Omit<HttpLocation, 'type'>): string {
  if (typeof h.url !== 'string' || !/^https?:\/\/[^\s]+$/.test(h.url))
    throw bad('HTTP location must be an http:// or https:// URL');
  const file: Record<string, unknown> = { driver: h.url.startsWith('https:') ? 'https' : 'http', url: h.url };
  for (const [k, v] of [
    ['readahead', h.readaheadBytes],
    ['timeout', h.timeoutSeconds],
  ] as const) {
    if (v === undefined) continue;
    if (!Number.isSafeInteger(v) || v <= 0) throw bad(`HTTP ${k} must be a positive integer`);
    file[k] = v;
  }
  return `json:${JSON.stringify({ file })}`;
}

/** Builds an {@link RbdLocation}. */
export function rbdLocation(image: RbdImage, syntax: 'uri' | 'json' = 'uri'): RbdLocation {
  return { ...image, type: 'rbd', syntax };
}

const NAME_RE = /^[^\0\n\r]+$/;

function bad(message: string): QemuImgError {
  return new QemuImgError({ kind: 'invalid-argument', command: '', message });
}

function validate(t: RbdImage): void {
  if ('key' in t || 'keyring' in t || 'secret' in t) {
    throw bad('RBD locations never carry keys: point confPath at a ceph.conf whose keyring is a file');
  }
  for (const [k, v] of [
    ['pool', t.pool],
    ['image', t.image],
    ['user', t.user],
    ['confPath', t.confPath],
  ] as const) {
    if (typeof v !== 'string' || !NAME_RE.test(v)) throw bad(`RBD ${k} must be a non-empty single-line string`);
  }
  for (const [k, v] of [
    ['namespace', t.namespace],
    ['snapshot', t.snapshot],
    ['keyringPath', t.keyringPath],
  ] as const) {
    if (v !== undefined && (typeof v !== 'string' || !NAME_RE.test(v))) {
      throw bad(`RBD ${k} must be a non-empty single-line string`);
    }
  }
  if (t.user.startsWith('client.')) throw bad('RBD user is the cephx id without the "client." prefix');
}

/** Backslash-escapes the characters QEMU's rbd filename parser treats as separators. */
function escName(s: string): string {
  return s.replace(/[\\:@/]/g, (c) => `\\${c}`);
}
function escValue(s: string): string {
  return s.replace(/[\\:@]/g, (c) => `\\${c}`);
}

/**
 * Renders `rbd:pool[/namespace]/image[@snap]:id=user:conf=path`, escaping `\`, `:`, `@` (and `/`
 * inside names) with a backslash as QEMU's parser expects.
 */
export function rbdUri(t: RbdImage): string {
  validate(t);
  let s = `rbd:${escName(t.pool)}/`;
  if (t.namespace) s += `${escName(t.namespace)}/`;
  s += escName(t.image);
  if (t.snapshot) s += `@${escName(t.snapshot)}`;
  s += `:id=${escValue(t.user)}:conf=${escValue(t.confPath)}`;
  return t.keyringPath ? `${s}:keyring=${escValue(t.keyringPath)}` : s;
}

/**
 * Renders the `json:` pseudo-protocol form for the protocol layer, with the format driver
 * coming from `-f`: `json:{"file":{"driver":"rbd","pool":...,"user":...,"conf":...}}`.
 */
export function rbdJson(t: RbdImage): string {
  validate(t);
  if (t.keyringPath !== undefined) throw bad('an RBD keyringPath needs the rbd: URI spelling');
  const o: Record<string, string> = { driver: 'rbd', pool: t.pool };
  if (t.namespace) o['namespace'] = t.namespace;
  o['image'] = t.image;
  if (t.snapshot) o['snapshot'] = t.snapshot;
  o['user'] = t.user;
  o['conf'] = t.confPath;
  return `json:${JSON.stringify({ file: o })}`;
}

/** The argv spelling of a location. */
export function renderLocation(loc: ImageLocation): string {
  if (typeof loc === 'string') {
    if (loc.length === 0 || loc.includes('\0')) throw bad('image path must be a non-empty string');
    return resolve(loc);
  }
  if (loc && loc.type === 'rbd') return loc.syntax === 'json' ? rbdJson(loc) : rbdUri(loc);
  if (loc && loc.type === 'http') return httpJson(loc);
  if (loc && loc.type === 'nbd') return nbdJson(loc);
  throw bad('unknown image location');
}

/**
 * The argv spelling of a backing file. Relative paths stay relative (qemu resolves them against
 * the overlay's directory) but get a `./` prefix so they cannot read as a protocol or option.
 */
export function renderBacking(loc: ImageLocation): string {
  if (typeof loc === 'string') {
    if (loc.length === 0 || loc.includes('\0')) throw bad('backing path must be a non-empty string');
    if (isAbsolute(loc) || loc.startsWith('./') || loc.startsWith('../')) return loc;
    return `./${loc}`;
  }
  return renderLocation(loc);
}

/** True for a local path location. */
export function isLocal(loc: ImageLocation): loc is string {
  return typeof loc === 'string';
}

function optValue(s: string): string {
  if (/[\0\n]/.test(s)) throw bad('invalid character in an image option');
  return s.replace(/,/g, ',,');
}

/**
 * The `--image-opts` spelling of a location with an explicit format driver, for commands that
 * have no `-f` (e.g. `qemu-img snapshot`): `driver=qcow2,file.driver=file,file.filename=...`.
 */
export function renderImageOpts(loc: ImageLocation, format: string): string {
  if (typeof loc === 'string') {
    return `driver=${optValue(format)},file.driver=file,file.filename=${optValue(renderLocation(loc))}`;
  }
  renderLocation(loc); // validates
  if (loc.type === 'http' || loc.type === 'nbd' || loc.keyringPath !== undefined)
    throw bad('--image-opts spells local and keyring-less RBD images only');
  let s = `driver=${optValue(format)},file.driver=rbd,file.pool=${optValue(loc.pool)}`;
  if (loc.namespace) s += `,file.namespace=${optValue(loc.namespace)}`;
  s += `,file.image=${optValue(loc.image)}`;
  if (loc.snapshot) s += `,file.snapshot=${optValue(loc.snapshot)}`;
  return `${s},file.user=${optValue(loc.user)},file.conf=${optValue(loc.confPath)}`;
}
