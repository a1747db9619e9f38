/**
 * Strict parsing of image location URLs (`rbd://`, `file://`, `http(s)://`, `glance://`).
 *
 * Rules, for every scheme: no NUL or control characters (raw or percent-decoded), only RFC 3986
 * characters in the raw URL, every `%` followed by two hex digits and decoding to valid UTF-8,
 * no double encoding (`%252e`), no `.` or `..` path parts, no blank parts where a part is required.
 * A bad URL raises {@link LocationParseError} naming the problem; nothing else is ever thrown.
 *
 * `rbd://` locations go to `@ephemera/image-backend`'s `parseRbdLocation`, the parser
 * backend-rbd uses too (so a plan and the backend read a location alike): case-sensitive scheme,
 * four parts each decoded once (so `%252e` is the name `%2e` there, no double-encoding rule), the
 * legacy one-part form not decoded, raw non-ASCII accepted.
 */
import { InvalidRbdLocationError, isUuid, parseRbdLocation } from '@ephemera/image-backend';
import { LocationParseError, type LocationProblem } from './errors.js';

/** `rbd://fsid/pool/image/snapshot`: a Glance rbd-store location, cloneable. */
export interface RbdLocation {
  kind: 'rbd';
  scheme: 'rbd';
  /** Ceph cluster fsid (lower-case UUID). */
  fsid: string;
  pool: string;
  image: string;
  snapshot: string;
  cloneable: true;
}

/** `rbd://image`: the legacy one-part form (no cluster, pool or snapshot; not percent-decoded): understood, not cloneable. */
export interface RbdLegacyLocation {
  kind: 'rbd-legacy';
  scheme: 'rbd';
  image: string;
  cloneable: false;
}

/** `http(s)://host[:port]/path[?query]`. */
export interface HttpLocation {
  kind: 'http';
  scheme: 'http' | 'https';
  host: string;
  port: number;
  /** Decoded path. */
  path: string;
  /** The normalised URL to fetch. */
  href: string;
}

/** `file:///absolute/path` (host empty or `localhost`). */
export interface FileLocation {
  kind: 'file';
  scheme: 'file';
  /** Decoded absolute path without `.`/`..`/empty parts. */
  path: string;
}

/** `glance://<image-id>`: the synthetic location standing for Glance's own `/v2/images/ID/file`. */
export interface GlanceLocation {
  kind: 'glance';
  scheme: 'glance';
  imageId: string;
}

/** A scheme this parser has no rules for (swift, cinder, s3...): handlers decide. */
export interface OtherLocation {
  kind: 'other';
  scheme: string;
}

/** Result of {@link parseLocationUrl}. */
export type ParsedLocation =
  | RbdLocation
  | RbdLegacyLocation
  | HttpLocation
  | FileLocation
  | GlanceLocation
  | OtherLocation;

/** Longest URL accepted. */
export const MAX_LOCATION_URL_LENGTH = 4096;

const SCHEME_RE = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//;
// RFC 3986 unreserved + gen-delims + sub-delims + '%'.
const RAW_ALLOWED_RE = /^[A-Za-z0-9\-._~:/?#[\]@!$&'()*+,;=%]*$/;
// eslint-disable-next-line no-control-regex
const CONTROL_RE = /[\u0000-\u001f\u007f-\u009f]/;

function fail(url: string, problem: LocationProblem, detail: string, part?: string): never {
  throw new LocationParseError(url, problem, detail, part);
}

function checkChars(url: string, value: string, part: string | undefined, decoded: boolean): void {
  if (value.includes('\u0000')) fail(url, 'nul', `${decoded ? 'decodes to' : 'contains'} a NUL character`, part);
  if (CONTROL_RE.test(value))
    fail(url, 'control-char', `${decoded ? 'decodes to' : 'contains'} a control character`, part);
}

/** Percent-decode one part strictly. */
function decodePart(url: string, raw: string, part: string, pathLike = true): string {
  for (let i = raw.indexOf('%'); i !== -1; i = raw.indexOf('%', i + 1)) {
    if (!/^[0-9A-Fa-f]{2}$/.test(raw.slice(i + 1, i + 3)))
      fail(url, 'bad-percent-encoding', `'%' not followed by two hex digits`, part);
  }
  let decoded: string;
  try {
    decoded = decodeURIComponent(raw);
  } catch {
    fail(url, 'bad-percent-encoding', 'percent-encoding is not valid UTF-8', part);
  }
  checkChars(url, decoded, part, true);
  if (!pathLike) return decoded;
  if (decoded !== raw && /%[0-9A-Fa-f]{2}/.test(decoded))
    fail(url, 'double-encoding', 'is percent-encoded twice', part);
  if (decoded === '.' || decoded === '..') fail(url, 'dot-segment', `'${decoded}' is not allowed`, part);
  return decoded;
}

/** The shared rbd:// parser, its refusal re-raised as this package's {@link LocationParseError}. */
function parseRbd(url: string): RbdLocation | RbdLegacyLocation {
  let p;
  try {
    p = parseRbdLocation(url);
  } catch (err) {
    if (err instanceof InvalidRbdLocationError) fail(url, err.problem, err.detail, err.part);
    throw err;
  }
  return p.kind === 'rbd'
    ? { kind: 'rbd', scheme: 'rbd', fsid: p.fsid, pool: p.pool, image: p.image, snapshot: p.snapshot, cloneable: true }
    : { kind: 'rbd-legacy', scheme: 'rbd', image: p.image, cloneable: false };
}

function parseFile(url: string, rest: string): FileLocation {
  if (/[?#]/.test(rest)) fail(url, 'query-or-fragment', 'file URLs have no query or fragment');
  const slash = rest.indexOf('/');
  const host = slash === -1 ? rest : rest.slice(0, slash);
  if (host !== '' && host.toLowerCase() !== 'localhost') fail(url, 'bad-host', `host '${host}' is not local`, 'host');
  if (slash === -1) fail(url, 'not-absolute', 'has no absolute path', 'path');
  const segments = rest.slice(slash + 1).split('/');
  const out: string[] = [];
  for (const seg of segments) {
    if (seg === '') fail(url, 'blank-part', 'has an empty path segment', 'path');
    const d = decodePart(url, seg, 'path');
    if (d.includes('/')) fail(url, 'separator-in-part', "a path segment decodes to '/'", 'path');
    out.push(d);
  }
  return { kind: 'file', scheme: 'file', path: `/${out.join('/')}` };
}

function parseHttp(url: string, scheme: 'http' | 'https', rest: string): HttpLocation {
  if (rest.includes('#')) fail(url, 'query-or-fragment', 'has a fragment');
  const end = rest.search(/[/?]/);
  const authority = end === -1 ? rest : rest.slice(0, end);
  if (authority.includes('@')) fail(url, 'credentials', 'credentials in the URL are not accepted', 'host');
  if (authority === '' || authority.startsWith(':')) fail(url, 'bad-host', 'has no host', 'host');
  const afterAuthority = end === -1 ? '' : rest.slice(end);
  const q = afterAuthority.indexOf('?');
  const rawPath = q === -1 ? afterAuthority : afterAuthority.slice(0, q);
  const query = q === -1 ? '' : afterAuthority.slice(q + 1);
  const parts: string[] = [];
  if (rawPath !== '') {
    for (const seg of rawPath.slice(1).split('/')) {
      const d = decodePart(url, seg, 'path');
      if (d.includes('/')) fail(url, 'separator-in-part', "a path segment decodes to '/'", 'path');
      parts.push(d);
    }
  }
  if (query !== '') decodePart(url, query.replace(/\+/g, ' '), 'query', false);
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    fail(url, 'bad-host', `'${authority}' is not a valid host[:port]`, 'host');
  }
  if (parsed.hostname === '') fail(url, 'bad-host', 'has no host', 'host');
  const port = parsed.port === '' ? (scheme === 'https' ? 443 : 80) : Number(parsed.port);
  return { kind: 'http', scheme, host: parsed.hostname, port, path: `/${parts.join('/')}`, href: parsed.href };
}

/**
 * Parse a location URL strictly. Throws {@link LocationParseError} (and nothing else) for bad input.
 *
 * @example parseLocationUrl('rbd://0f6e.../images/IMAGE/snap') // { kind: 'rbd', fsid, pool, image, snapshot }
 */
export function parseLocationUrl(url: string): ParsedLocation {
  if (typeof url !== 'string' || url.length === 0) fail(String(url ?? ''), 'empty', 'is empty');
  if (url.length > MAX_LOCATION_URL_LENGTH)
    fail(url, 'too-long', `is longer than ${MAX_LOCATION_URL_LENGTH} characters`);
  checkChars(url, url, undefined, false);
  const m = SCHEME_RE.exec(url);
  if (!m) fail(url, 'bad-scheme', "does not start with 'scheme://'");
  const scheme = m[1]!.toLowerCase();
  // The shared parser has its own character rules and refuses `RBD://` (case-sensitive scheme).
  if (scheme === 'rbd') return parseRbd(url);
  const rest = url.slice(m[0].length);
  const known = ['rbd', 'file', 'http', 'https', 'glance'].includes(scheme);
  if (!known) return { kind: 'other', scheme };
  if (!RAW_ALLOWED_RE.test(rest)) {
    const bad = [...rest].find((c) => !RAW_ALLOWED_RE.test(c)) ?? '?';
    fail(url, 'illegal-char', `character ${JSON.stringify(bad)} must be percent-encoded`);
  }
  switch (scheme) {
    case 'file':
      return parseFile(url, rest);
    case 'glance': {
      if (!isUuid(rest)) fail(url, 'part-count', 'expected glance://<image uuid>', 'image');
      return { kind: 'glance', scheme: 'glance', imageId: rest.toLowerCase() };
    }
    default:
      return parseHttp(url, scheme as 'http' | 'https', rest);
  }
}

/**
 * Build `rbd://fsid/pool/image/snapshot` with every part percent-encoded (the inverse of the
 * parser); refuses missing or unparseable parts with `InvalidRbdLocationError`.
 */
export { formatRbdLocation as formatRbdUrl } from '@ephemera/image-backend';

/** The synthetic location URL for Glance's own download endpoint. */
export function glanceLocationUrl(imageId: string): string {
  return `glance://${imageId}`;
}
