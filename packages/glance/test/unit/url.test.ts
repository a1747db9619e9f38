import { posix } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { formatRbdUrl, LocationParseError, parseLocationUrl, type LocationProblem } from '@ephemera/glance';

const FSID = 'acada594-e091-4f05-9d45-e3735cb2db40';

function problemOf(url: string): LocationProblem | 'parsed' {
  try {
    parseLocationUrl(url);
    return 'parsed';
  } catch (err) {
    expect(err).toBeInstanceOf(LocationParseError);
    return (err as LocationParseError).problem;
  }
}

describe('parseLocationUrl: good URLs', () => {
  it('parses a Glance rbd-store URL with per-part percent-decoding', () => {
    expect(parseLocationUrl(`rbd://${FSID.toUpperCase()}/images/my%20image%2Bx/snap`)).toEqual(
      expect.objectContaining({ kind: 'rbd', fsid: FSID, pool: 'images', image: 'my image+x', snapshot: 'snap' }),
    );
  });
  it('parses what formatRbdUrl writes', () => {
    const ref = { fsid: FSID, pool: 'images', image: 'a b%c', snapshot: 'snap@1' };
    expect(parseLocationUrl(formatRbdUrl(ref))).toMatchObject({ kind: 'rbd', ...ref });
  });
  it('understands the legacy one-part form but marks it not cloneable', () => {
    expect(parseLocationUrl('rbd://legacy-image')).toEqual({
      kind: 'rbd-legacy',
      scheme: 'rbd',
      image: 'legacy-image',
      cloneable: false,
    });
  });
  it('parses file, http(s), glance and unknown schemes', () => {
    expect(parseLocationUrl('file:///var/lib/glance/images/x%20y')).toEqual({
      kind: 'file',
      scheme: 'file',
      path: '/var/lib/glance/images/x y',
    });
    expect(parseLocationUrl('file://localhost/a/b')).toMatchObject({ path: '/a/b' });
    expect(parseLocationUrl('https://example.org:8443/img/a.raw?sig=a%2Fb')).toMatchObject({
      kind: 'http',
      scheme: 'https',
      host: 'example.org',
      port: 8443,
      path: '/img/a.raw',
    });
    expect(parseLocationUrl('HTTP://h/x')).toMatchObject({ scheme: 'http', port: 80 });
    expect(parseLocationUrl(`glance://${FSID}`)).toEqual({ kind: 'glance', scheme: 'glance', imageId: FSID });
    expect(parseLocationUrl('swift+https://tenant:key@swift/v1/c/o')).toEqual({ kind: 'other', scheme: 'swift+https' });
  });
});

describe('parseLocationUrl: bad URLs give a typed error naming the problem', () => {
  const cases: [string, LocationProblem][] = [
    ['', 'empty'],
    ['rbd', 'bad-scheme'],
    ['rbd:/x', 'bad-scheme'],
    ['rbd://', 'blank-part'],
    [`rbd://${FSID}/images/img`, 'part-count'],
    [`rbd://${FSID}/images/img/snap/extra`, 'part-count'],
    [`rbd://${FSID}/images/img/snap/`, 'part-count'],
    [`rbd://${FSID}//img/snap`, 'blank-part'],
    [`rbd://${FSID}/images/%20/snap`, 'blank-part'],
    [`rbd://${FSID}/images/img/`, 'blank-part'],
    [`rbd://not-a-uuid/images/img/snap`, 'bad-fsid'],
    [`rbd://${FSID}/images/%2e%2e/snap`, 'dot-segment'],
    [`rbd://${FSID}/../img/snap`, 'dot-segment'],
    [`rbd://${FSID}/images/img%00/snap`, 'nul'],
    [`rbd://${FSID}/images/img%0a/snap`, 'control-char'],
    [`rbd://${FSID}/images/img\u0000/snap`, 'nul'],
    [`rbd://${FSID}/images/img\u0007/snap`, 'control-char'],
    [`rbd://${FSID}/images/im g/snap`, 'illegal-char'],
    [`rbd://${FSID}/images/im\\g/snap`, 'illegal-char'],
    [`rbd://${FSID}/images/img%zz/snap`, 'bad-percent-encoding'],
    [`rbd://${FSID}/images/img%c3/snap`, 'bad-percent-encoding'],
    [`rbd://${FSID}/po%40ol/img/snap`, 'separator-in-part'],
    [`rbd://${FSID}/images/img/sn%2Fap`, 'separator-in-part'],
    [`rbd://${FSID}/images/img/snap?x=1`, 'query-or-fragment'],
    ['file://remote/etc/passwd', 'bad-host'],
    ['file:///var/lib/../../etc/shadow', 'dot-segment'],
    ['file:///var/lib/%2e%2e/etc', 'dot-segment'],
    ['file:///var//lib', 'blank-part'],
    ['file:///var/lib/', 'blank-part'],
    ['file:///a%2F..%2Fb', 'separator-in-part'],
    ['http://h/a/../b', 'dot-segment'],
    ['http://h/a/%2E/b', 'dot-segment'],
    ['http://user:pw@h/a', 'credentials'],
    ['http:///a', 'bad-host'],
    ['http://h/a#frag', 'query-or-fragment'],
    ['http://[zz]/a', 'bad-host'],
    ['glance://x', 'part-count'],
    ['x'.repeat(5000), 'too-long'],
  ];
  it.each(cases)('%j -> %s', (url, problem) => {
    expect(problemOf(url)).toBe(problem);
  });
  it('redacts credentials and escapes control characters in the message', () => {
    try {
      parseLocationUrl('http://user:secret@h/a\u0001');
      expect.unreachable();
    } catch (err) {
      expect((err as Error).message).not.toContain('secret');
      expect((err as Error).message).toContain('\\x01');
    }
  });
});

// Property-based: hostile inputs never crash the parser and never yield a traversal.
const hostileChar = fc.constantFrom(
  '/',
  '.',
  '..',
  '%',
  '%2e',
  '%2E',
  '%2f',
  '%2F',
  '%00',
  '%0a',
  '%25',
  '%252e',
  '%c3',
  '%zz',
  '\u0000',
  '\n',
  '\u007f',
  '\u0085',
  '@',
  '?',
  '#',
  '\\',
  ' ',
  ':',
  'a',
  'b',
  '0',
  '-',
  '_',
  '~',
  'é',
  '%C3%A9',
  '%40',
  '%2e%2e',
);
const hostileString = fc.array(hostileChar, { maxLength: 12 }).map((a) => a.join(''));
const scheme = fc.constantFrom(
  'rbd://',
  'file://',
  'file:///',
  'http://',
  'https://',
  'RBD://',
  'glance://',
  'ftp://',
  '',
);
const part = fc.oneof(hostileString, fc.string({ maxLength: 8 }), fc.constant(FSID), fc.constant(''));
const hostileUrl = fc.oneof(
  fc.tuple(scheme, fc.array(part, { maxLength: 6 })).map(([s, parts]) => s + parts.join('/')),
  fc.string({ maxLength: 64 }),
  fc.tuple(scheme, fc.string({ maxLength: 40, unit: 'binary' })).map(([s, r]) => s + r),
);

function noTraversal(decoded: string): boolean {
  return !decoded.split('/').some((seg) => seg === '..' || seg === '.');
}

describe('parseLocationUrl: property-based hostile input', () => {
  it('either parses or throws LocationParseError, never anything else', () => {
    fc.assert(
      fc.property(hostileUrl, (url) => {
        try {
          parseLocationUrl(url);
        } catch (err) {
          return err instanceof LocationParseError && typeof err.problem === 'string';
        }
        return true;
      }),
      { numRuns: 5000 },
    );
  });

  it('a parsed URL never carries NUL, control characters or a traversal', () => {
    fc.assert(
      fc.property(hostileUrl, (url) => {
        let p;
        try {
          p = parseLocationUrl(url);
        } catch {
          return true;
        }
        // eslint-disable-next-line no-control-regex
        const clean = (s: string): boolean => !/[\u0000-\u001f\u007f-\u009f]/.test(s);
        switch (p.kind) {
          case 'rbd':
            return (
              [p.fsid, p.pool, p.image, p.snapshot].every(
                (s) => s.trim() !== '' && clean(s) && !s.includes('/') && s !== '..' && s !== '.',
              ) &&
              !p.pool.includes('@') &&
              !p.image.includes('@')
            );
          case 'rbd-legacy':
            return clean(p.image) && !p.image.includes('/') && p.image !== '..';
          case 'file':
            return clean(p.path) && p.path.startsWith('/') && posix.normalize(p.path) === p.path && noTraversal(p.path);
          case 'http':
            return clean(p.path) && noTraversal(p.path) && noTraversal(decodeURIComponent(new URL(p.href).pathname));
          default:
            return true;
        }
      }),
      { numRuns: 5000 },
    );
  });

  it('round-trips any rbd reference through formatRbdUrl', () => {
    const name = fc
      .string({ minLength: 1, maxLength: 20, unit: 'grapheme' })
      // eslint-disable-next-line no-control-regex
      .filter((s) => s.trim() !== '' && s !== '.' && s !== '..' && !/[\u0000-\u001f\u007f-\u009f/@]/.test(s));
    fc.assert(
      fc.property(fc.uuid(), name, name, name, (fsid, pool, image, snapshot) => {
        const p = parseLocationUrl(formatRbdUrl({ fsid, pool, image, snapshot }));
        return (
          p.kind === 'rbd' &&
          p.fsid === fsid.toLowerCase() &&
          p.pool === pool &&
          p.image === image &&
          p.snapshot === snapshot
        );
      }),
      { numRuns: 2000 },
    );
  });

  it('four clean parts always parse; any blank part or wrong count never parses as cloneable', () => {
    fc.assert(
      fc.property(
        fc.array(fc.constantFrom('', 'a', 'images', FSID, 'snap'), { minLength: 0, maxLength: 7 }),
        (parts) => {
          const url = `rbd://${parts.join('/')}`;
          const r = problemOf(url);
          const shouldParse =
            (parts.length === 4 && parts.every((x) => x !== '') && parts[0] === FSID) ||
            (parts.length === 1 && parts[0] !== '');
          return shouldParse ? r === 'parsed' : r !== 'parsed';
        },
      ),
      { numRuns: 2000 },
    );
  });
});

// Issue 16.2/16.3: glance's parser and backend-rbd's must agree (one shared parser in
// @ephemera/image-backend); backend-rbd's pure.test.ts checks the same examples.
describe('rbd:// locations: the forms glance and backend-rbd used to disagree on', () => {
  it('refuses an upper-case scheme (case-sensitive, as glance_store and Nova)', () => {
    expect(problemOf(`RBD://${FSID}/images/img/snap`)).toBe('bad-scheme');
    expect(problemOf(`Rbd://legacy`)).toBe('bad-scheme');
  });
  it('accepts a percent-encoded space and raw or encoded non-ASCII characters in a part', () => {
    expect(parseLocationUrl(`rbd://${FSID}/po%20ol/img/snap`)).toMatchObject({
      kind: 'rbd',
      pool: 'po ol',
      image: 'img',
    });
    expect(parseLocationUrl(`rbd://${FSID}/images/imagé/snap`)).toMatchObject({ kind: 'rbd', image: 'imagé' });
    expect(parseLocationUrl(`rbd://${FSID}/images/imag%C3%A9/snap`)).toMatchObject({ kind: 'rbd', image: 'imagé' });
  });
  it('decodes each part of the four-part form exactly once, as glance_store and Nova do', () => {
    expect(parseLocationUrl(`rbd://${FSID}/images/%252e%252e/snap`)).toMatchObject({ kind: 'rbd', image: '%2e%2e' });
  });
  it('does not percent-decode the legacy one-part form (glance_store does not)', () => {
    expect(parseLocationUrl('rbd://my%20image')).toEqual({
      kind: 'rbd-legacy',
      scheme: 'rbd',
      image: 'my%20image',
      cloneable: false,
    });
  });
  it('formatRbdUrl refuses missing, empty and non-string parts with a typed error', () => {
    const ok = { fsid: FSID, pool: 'images', image: 'img', snapshot: 'snap' };
    for (const [part, value, problem] of [
      ['fsid', undefined, 'missing-part'],
      ['pool', null, 'missing-part'],
      ['image', 42, 'missing-part'],
      ['snapshot', '', 'blank-part'],
    ] as const) {
      expect(() => formatRbdUrl({ ...ok, [part]: value } as never), `${part}=${String(value)}`).toThrow(
        expect.objectContaining({ code: 'INVALID_ARGUMENT', problem, part }),
      );
    }
  });
});
