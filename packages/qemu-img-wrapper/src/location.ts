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
}

/** An RBD location as passed to {@link QemuImg} methods. */
export interface RbdLocation extends RbdImage {
  type: 'rbd';
  /** How to spell it for qemu-img: `rbd:` pseudo-URI (default) or the `json:` pseudo-protocol. */
  syntax?: 'uri' | 'json';
}

/**
 * Where an image lives: a local path (file or block device; always made absolute, so a name
 * like `nbd:x` or `-f` can never be taken for a protocol or an option) or an RBD image.
 */
export type ImageLocation = string | RbdLocation;

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
  return `${s}:id=${escValue(t.user)}:conf=${escValue(t.confPath)}`;
}

/**
 * Renders the `json:` pseudo-protocol form for the protocol layer, with the format driver
 * coming from `-f`: `json:{"file":{"driver":"rbd","pool":...,"user":...,"conf":...}}`.
 */
export function rbdJson(t: RbdImage): string {
  validate(t);
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
  let s = `driver=${optValue(format)},file.driver=rbd,file.pool=${optValue(loc.pool)}`;
  if (loc.namespace) s += `,file.namespace=${optValue(loc.namespace)}`;
  s += `,file.image=${optValue(loc.image)}`;
  if (loc.snapshot) s += `,file.snapshot=${optValue(loc.snapshot)}`;
  return `${s},file.user=${optValue(loc.user)},file.conf=${optValue(loc.confPath)}`;
}
