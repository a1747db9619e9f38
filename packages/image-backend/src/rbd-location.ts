/**
 * The one parser and formatter of Glance rbd-store locations, shared by `@ephemera/glance` (what
 * the plan says) and `@ephemera/backend-rbd` (what the backend does), so the two cannot disagree.
 *
 * Semantics follow glance_store's `rbd.StoreLocation.parse_uri` and Nova's
 * `RBDDriver.parse_url`:
 * - the scheme is `rbd://`, case-sensitive (`RBD://` is refused, as upstream does);
 * - `rbd://fsid/pool/image/snapshot`: four parts, each percent-decoded once;
 * - `rbd://image`: the legacy one-part form, NOT percent-decoded (glance_store takes it as is);
 * - any other number of parts, or an empty part, is refused.
 *
 * Stricter than upstream where a name could never work or would be ambiguous (see the table in
 * `test/unit/rbd-location.test.ts`): malformed `%`, NUL and control characters, `.`/`..`,
 * a decoded `/` in any part or `@` in pool or image, blank parts, `?`/`#`, raw ASCII characters
 * RFC 3986 does not allow, a fsid that is not a UUID. Decoding happens once, as upstream: `%252F`
 * is the name `%2F` (nothing decodes it again; librbd takes names as bytes).
 * Raw non-ASCII characters are accepted (as an IRI allows) and mean their UTF-8 encoding:
 * Nova and glance_store on Python 3 accept them (`str(uri)` no longer fails there), and librbd
 * and RADOS names are byte strings, so `imagé` and `imag%C3%A9` name the same image.
 */
import { InvalidArgumentError } from './errors.js';

/** The four parts of `rbd://fsid/pool/image/snapshot`, decoded. */
export interface RbdLocationParts {
  /** Ceph cluster fsid (a UUID; lower-cased by the parser). */
  fsid: string;
  pool: string;
  image: string;
  snapshot: string;
}

/** Result of {@link parseRbdLocation}: the cloneable four-part form or the legacy one-part form. */
export type ParsedRbdLocation = ({ kind: 'rbd' } & RbdLocationParts) | { kind: 'rbd-legacy'; image: string };

/** Which part of a location an {@link InvalidRbdLocationError} is about. */
export type RbdLocationPart = 'fsid' | 'pool' | 'image' | 'snapshot';

/** What is wrong with a location (stable strings; `@ephemera/glance` reports the same ones). */
export type RbdLocationProblem =
  | 'empty'
  | 'too-long'
  | 'bad-scheme'
  | 'nul'
  | 'control-char'
  | 'illegal-char'
  | 'bad-percent-encoding'
  | 'query-or-fragment'
  | 'part-count'
  | 'missing-part'
  | 'blank-part'
  | 'dot-segment'
  | 'separator-in-part'
  | 'bad-fsid';

/** Longest location accepted or written. */
export const MAX_RBD_LOCATION_LENGTH = 4096;

const PREFIX = 'rbd://';
const PARTS: readonly RbdLocationPart[] = ['fsid', 'pool', 'image', 'snapshot'];
const UUID_RE = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;
// eslint-disable-next-line no-control-regex
const CONTROL_RE = /[\u0000-\u001f\u007f-\u009f]/;
// A UTF-16 code unit that is half of a pair without its other half: not encodable as UTF-8.
const LONE_SURROGATE_RE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
// RFC 3986 unreserved, sub-delims, ':' '@' '[' ']' and '%' (what glance accepted raw); '/' splits.
const RAW_ASCII_RE = /^[A-Za-z0-9\-._~!$&'()*+,;=:@[\]%]$/;

/** A location as safe to show in a message: controls escaped, at most 300 characters. */
function shown(url: string): string {
  // eslint-disable-next-line no-control-regex
  const s = url.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
  return s.length > 300 ? `${s.slice(0, 300)}...` : s;
}

/**
 * A location (or the parts given to {@link formatRbdLocation}) was refused. `code` is
 * `INVALID_ARGUMENT` (argument `location`); `problem` says what is wrong, `part` where.
 * Locations carry no secrets, but the message shows at most 300 characters, controls escaped.
 */
export class InvalidRbdLocationError extends InvalidArgumentError {
  readonly problem: RbdLocationProblem;
  readonly part: RbdLocationPart | undefined;
  /** The refused location as shown in the message (empty when formatting). */
  readonly location: string;
  /** What is wrong, without the location (for callers that word their own message). */
  readonly detail: string;

  constructor(location: string, problem: RbdLocationProblem, detail: string, part?: RbdLocationPart) {
    const where = location === '' ? '' : ` ${shown(location)}`;
    super('location', `bad rbd location${where}: ${problem}${part ? ` in ${part}` : ''}: ${detail}`);
    this.problem = problem;
    this.part = part;
    this.location = shown(location);
    this.detail = detail;
  }
}

/**
 * The checks a decoded part must pass, shared by the parser and the formatter so that the
 * formatter never writes a location the parser refuses.
 */
function checkPart(url: string, value: string, part: RbdLocationPart): void {
  const fail = (problem: RbdLocationProblem, detail: string): never => {
    throw new InvalidRbdLocationError(url, problem, detail, part);
  };
  if (value.includes('\u0000')) fail('nul', 'contains a NUL character');
  if (CONTROL_RE.test(value)) fail('control-char', 'contains a control character');
  if (LONE_SURROGATE_RE.test(value)) fail('illegal-char', 'contains a lone UTF-16 surrogate (not UTF-8 text)');
  if (value.trim() === '') fail('blank-part', 'is blank');
  if (value === '.' || value === '..') fail('dot-segment', `'${value}' is not a name`);
  if (value.includes('/')) fail('separator-in-part', "contains '/'");
  // '@' separates image and snapshot in `pool/image@snap` (librbd specs, QEMU, libvirt).
  if ((part === 'pool' || part === 'image') && value.includes('@')) fail('separator-in-part', "contains '@'");
  if (part === 'fsid' && !UUID_RE.test(value)) fail('bad-fsid', 'is not a UUID');
}

/** Checks the raw text after `rbd://` (shared by both forms). */
function checkRaw(url: string, rest: string): void {
  const fail = (problem: RbdLocationProblem, detail: string): never => {
    throw new InvalidRbdLocationError(url, problem, detail);
  };
  if (rest.includes('\u0000')) fail('nul', 'contains a NUL character');
  if (CONTROL_RE.test(rest)) fail('control-char', 'contains a control character');
  if (/[?#]/.test(rest)) fail('query-or-fragment', 'rbd locations have no query or fragment');
  if (LONE_SURROGATE_RE.test(rest)) fail('illegal-char', 'contains a lone UTF-16 surrogate');
  for (const c of rest) {
    if (c === '/' || c.charCodeAt(0) > 0x7f) continue;
    if (!RAW_ASCII_RE.test(c)) fail('illegal-char', `character ${JSON.stringify(c)} must be percent-encoded`);
  }
}

/** Percent-decodes one part strictly: every `%` followed by two hex digits, valid UTF-8. */
function decodePart(url: string, raw: string, part: RbdLocationPart): string {
  for (let i = raw.indexOf('%'); i !== -1; i = raw.indexOf('%', i + 1)) {
    if (!/^[0-9A-Fa-f]{2}$/.test(raw.slice(i + 1, i + 3)))
      throw new InvalidRbdLocationError(url, 'bad-percent-encoding', "'%' not followed by two hex digits", part);
  }
  try {
    return decodeURIComponent(raw);
  } catch {
    throw new InvalidRbdLocationError(url, 'bad-percent-encoding', 'percent-encoding is not valid UTF-8', part);
  }
}

/**
 * Parses a Glance rbd-store location. Throws {@link InvalidRbdLocationError} (and nothing else)
 * when it is not one.
 *
 * @example parseRbdLocation('rbd://acada594-.../images/IMAGE/snap')
 *   // { kind: 'rbd', fsid: 'acada594-...', pool: 'images', image: 'IMAGE', snapshot: 'snap' }
 */
export function parseRbdLocation(url: string): ParsedRbdLocation {
  if (typeof url !== 'string' || url.length === 0)
    throw new InvalidRbdLocationError(typeof url === 'string' ? url : '', 'empty', 'is empty');
  if (url.length > MAX_RBD_LOCATION_LENGTH)
    throw new InvalidRbdLocationError(url, 'too-long', `is longer than ${MAX_RBD_LOCATION_LENGTH} characters`);
  if (!url.startsWith(PREFIX))
    throw new InvalidRbdLocationError(url, 'bad-scheme', "does not start with 'rbd://' (the scheme is case-sensitive)");
  const rest = url.slice(PREFIX.length);
  checkRaw(url, rest);
  const pieces = rest.split('/');
  if (pieces.length !== 1 && pieces.length !== 4)
    throw new InvalidRbdLocationError(
      url,
      'part-count',
      `has ${pieces.length} parts; expected rbd://fsid/pool/image/snapshot (or legacy rbd://image)`,
    );
  if (pieces.length === 1) {
    const image = pieces[0]!;
    if (image === '') throw new InvalidRbdLocationError(url, 'blank-part', 'is empty', 'image');
    if (image === '.' || image === '..')
      throw new InvalidRbdLocationError(url, 'dot-segment', `'${image}' is not a name`, 'image');
    return { kind: 'rbd-legacy', image };
  }
  pieces.forEach((p, i) => {
    if (p === '') throw new InvalidRbdLocationError(url, 'blank-part', 'is empty', PARTS[i]);
  });
  const decoded = pieces.map((p, i) => decodePart(url, p, PARTS[i]!));
  for (const [i, d] of decoded.entries()) checkPart(url, d, PARTS[i]!);
  const [fsid, pool, image, snapshot] = decoded as [string, string, string, string];
  return { kind: 'rbd', fsid: fsid.toLowerCase(), pool, image, snapshot };
}

/** Percent-encodes like Python's `urllib.parse.quote(s, '')` (what glance_store writes). */
function quote(s: string): string {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/**
 * Writes `rbd://fsid/pool/image/snapshot` with every part percent-encoded, as glance_store does.
 * Refuses (with {@link InvalidRbdLocationError}) a missing, non-string, blank or otherwise
 * unparseable part, so `parseRbdLocation(formatRbdLocation(p))` always gives `p` back (fsid
 * lower-cased).
 */
export function formatRbdLocation(parts: RbdLocationParts): string {
  if (typeof parts !== 'object' || parts === null)
    throw new InvalidRbdLocationError('', 'missing-part', 'expected { fsid, pool, image, snapshot }');
  const values = PARTS.map((part) => {
    const v: unknown = parts[part];
    if (typeof v !== 'string')
      throw new InvalidRbdLocationError(
        '',
        'missing-part',
        `expected a string, got ${v === null ? 'null' : typeof v}`,
        part,
      );
    checkPart('', v, part);
    return quote(v);
  });
  const url = `${PREFIX}${values.join('/')}`;
  if (url.length > MAX_RBD_LOCATION_LENGTH)
    throw new InvalidRbdLocationError('', 'too-long', `would be longer than ${MAX_RBD_LOCATION_LENGTH} characters`);
  return url;
}
