// The one rbd:// location parser and formatter (issue 16.2, 16.3, 17.3): the table of accepted and
// refused forms, the formatter's refusals and a parse(format(x)) round trip.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  InvalidRbdLocationError,
  formatRbdLocation,
  isImageBackendError,
  parseRbdLocation,
  type ParsedRbdLocation,
  type RbdLocationPart,
  type RbdLocationProblem,
} from '@ephemera/image-backend';

const FSID = 'acada594-e091-4f05-9d45-e3735cb2db40';
const four = (pool: string, image: string, snapshot: string, fsid = FSID): ParsedRbdLocation => ({
  kind: 'rbd',
  fsid,
  pool,
  image,
  snapshot,
});

type Refused = { problem: RbdLocationProblem; part?: RbdLocationPart };
// [input, what it gives, why (glance_store = G, Nova = N)].
const TABLE: [string, ParsedRbdLocation | Refused, string][] = [
  // Accepted
  [`rbd://${FSID}/images/img/snap`, four('images', 'img', 'snap'), 'the form glance_store writes'],
  [
    `rbd://${FSID.toUpperCase()}/images/img/snap`,
    four('images', 'img', 'snap'),
    'fsid lower-cased (ceph prints it lower-case)',
  ],
  [
    `rbd://${FSID}/po%20ol/img/snap`,
    four('po ol', 'img', 'snap'),
    'each part unquoted (G, N); Ceph names may hold spaces',
  ],
  [`rbd://${FSID}/my%2Dpool/a%3Ab/s%40nap`, four('my-pool', 'a:b', 's@nap'), "'@' only matters in pool and image"],
  [
    `rbd://${FSID}/images/imagé/snap`,
    four('images', 'imagé', 'snap'),
    'raw non-ASCII as in an IRI (G and N on Python 3 accept it)',
  ],
  [`rbd://${FSID}/images/imag%C3%A9/snap`, four('images', 'imagé', 'snap'), 'the same image, percent-encoded'],
  [`rbd://${FSID}/images/a%25b/snap`, four('images', 'a%b', 'snap'), 'decoded once'],
  [
    `rbd://${FSID}/images/%252e%252F/snap`,
    four('images', '%2e%2F', 'snap'),
    'decoded once (G, N): nothing decodes the name again',
  ],
  ['rbd://legacy-image', { kind: 'rbd-legacy', image: 'legacy-image' }, 'legacy one-part form (G)'],
  ['rbd://my%20image', { kind: 'rbd-legacy', image: 'my%20image' }, 'legacy form is not unquoted (G)'],
  ['rbd://a%zz', { kind: 'rbd-legacy', image: 'a%zz' }, 'legacy form is not decoded, so no percent check'],
  // Refused: scheme, size, characters
  ['', { problem: 'empty' }, ''],
  [`RBD://${FSID}/images/img/snap`, { problem: 'bad-scheme' }, 'case-sensitive prefix (G, N)'],
  [`Rbd://legacy`, { problem: 'bad-scheme' }, 'case-sensitive prefix (G, N)'],
  [`http://${FSID}/images/img/snap`, { problem: 'bad-scheme' }, ''],
  [`rbd:${FSID}/images/img/snap`, { problem: 'bad-scheme' }, ''],
  [`rbd://${FSID}/images/${'x'.repeat(4100)}/snap`, { problem: 'too-long' }, ''],
  [`rbd://${FSID}/images/im g/snap`, { problem: 'illegal-char' }, 'a raw space is not a URL character'],
  [`rbd://${FSID}/images/im\\g/snap`, { problem: 'illegal-char' }, ''],
  [`rbd://${FSID}/images/im\ud800g/snap`, { problem: 'illegal-char' }, 'a lone surrogate has no UTF-8 form'],
  [`rbd://${FSID}/images/img\u0000/snap`, { problem: 'nul' }, ''],
  [`rbd://${FSID}/images/img\u0085/snap`, { problem: 'control-char' }, 'C1 controls too'],
  [`rbd://${FSID}/images/img/snap?x=1`, { problem: 'query-or-fragment' }, ''],
  [`rbd://${FSID}/images/img/snap#f`, { problem: 'query-or-fragment' }, ''],
  // Refused: part count and empty parts (G, N)
  ['rbd://', { problem: 'blank-part', part: 'image' }, 'empty components (G, N)'],
  [`rbd://${FSID}/images/img`, { problem: 'part-count' }, 'exactly 1 or 4 components (G, N)'],
  [`rbd://${FSID}/images/img/snap/extra`, { problem: 'part-count' }, ''],
  [`rbd://${FSID}/images/img/snap/`, { problem: 'part-count' }, ''],
  [`rbd://${FSID}//img/snap`, { problem: 'blank-part', part: 'pool' }, 'empty components (G, N)'],
  [`rbd://${FSID}/images/img/`, { problem: 'blank-part', part: 'snapshot' }, ''],
  // Refused: decoding
  [
    `rbd://${FSID}/images/img%zz/snap`,
    { problem: 'bad-percent-encoding', part: 'image' },
    "Python keeps a stray '%'; no Ceph name comes out of it",
  ],
  [
    `rbd://${FSID}/images/img%c3/snap`,
    { problem: 'bad-percent-encoding', part: 'image' },
    'not UTF-8 (Python would put U+FFFD)',
  ],
  [`rbd://${FSID}/images/%20/snap`, { problem: 'blank-part', part: 'image' }, 'blank after decoding'],
  [
    `rbd://${FSID}/images/img%00/snap`,
    { problem: 'nul', part: 'image' },
    'a NUL ends a C string: librbd would see another name',
  ],
  [`rbd://${FSID}/images/img%0a/snap`, { problem: 'control-char', part: 'image' }, ''],
  [`rbd://${FSID}/images/img%C2%85/snap`, { problem: 'control-char', part: 'image' }, ''],
  [
    `rbd://${FSID}/po%2Fol/img/snap`,
    { problem: 'separator-in-part', part: 'pool' },
    "'/' separates pool and image everywhere",
  ],
  [`rbd://${FSID}/images/img/sn%2Fap`, { problem: 'separator-in-part', part: 'snapshot' }, ''],
  [
    `rbd://${FSID}/po%40ol/img/snap`,
    { problem: 'separator-in-part', part: 'pool' },
    "'@' separates image and snapshot",
  ],
  [`rbd://${FSID}/images/a%40b/snap`, { problem: 'separator-in-part', part: 'image' }, ''],
  [
    `rbd://${FSID}/images/a:b@c/snap`,
    { problem: 'separator-in-part', part: 'image' },
    "raw '@' in the image, same as %40",
  ],
  [`rbd://${FSID}/images/%2e%2e/snap`, { problem: 'dot-segment', part: 'image' }, ''],
  [`rbd://${FSID}/../img/snap`, { problem: 'dot-segment', part: 'pool' }, ''],
  ['rbd://..', { problem: 'dot-segment', part: 'image' }, ''],
  ['rbd://not-a-uuid/images/img/snap', { problem: 'bad-fsid', part: 'fsid' }, 'a fsid is a UUID'],
];

function outcome(url: string): ParsedRbdLocation | Refused {
  try {
    return parseRbdLocation(url);
  } catch (err) {
    expect(err).toBeInstanceOf(InvalidRbdLocationError);
    expect(isImageBackendError(err, 'INVALID_ARGUMENT')).toBe(true);
    const e = err as InvalidRbdLocationError;
    return e.part === undefined ? { problem: e.problem } : { problem: e.problem, part: e.part };
  }
}

describe('parseRbdLocation: the table of accepted and refused forms', () => {
  it.each(TABLE)('%j', (url, expected) => {
    expect(outcome(url)).toEqual(expected);
  });

  it('shows the location with controls escaped in the message', () => {
    expect(() => parseRbdLocation(`rbd://${FSID}/images/img\u0001/snap`)).toThrow(/img\\x01\/snap: control-char/);
  });
});

describe('formatRbdLocation', () => {
  const ok = { fsid: FSID, pool: 'images', image: 'img', snapshot: 'snap' };

  it('writes what glance_store writes (every part quoted, nothing safe)', () => {
    expect(formatRbdLocation(ok)).toBe(`rbd://${FSID}/images/img/snap`);
    expect(formatRbdLocation({ ...ok, pool: 'po ol', image: "a:b!'()*é%2F", snapshot: 's@1' })).toBe(
      `rbd://${FSID}/po%20ol/a%3Ab%21%27%28%29%2A%C3%A9%252F/s%401`,
    );
  });

  it.each([
    ['fsid', undefined, 'missing-part'],
    ['fsid', null, 'missing-part'],
    ['pool', 7, 'missing-part'],
    ['image', '', 'blank-part'],
    ['snapshot', ' ', 'blank-part'],
    ['fsid', 'f', 'bad-fsid'],
    ['pool', 'a/b', 'separator-in-part'],
    ['image', 'a@b', 'separator-in-part'],
    ['image', '..', 'dot-segment'],
    ['image', 'a\u0000', 'nul'],
    ['snapshot', 'a\n', 'control-char'],
    ['image', 'a\ud800', 'illegal-char'],
  ] as const)('refuses %s = %j (%s)', (part, value, problem) => {
    let thrown: unknown;
    try {
      formatRbdLocation({ ...ok, [part]: value } as never);
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(InvalidRbdLocationError);
    expect(thrown).toMatchObject({ code: 'INVALID_ARGUMENT', problem, part });
  });

  it('refuses a missing object and a result longer than the parser takes', () => {
    expect(() => formatRbdLocation(undefined as never)).toThrow(expect.objectContaining({ problem: 'missing-part' }));
    expect(() => formatRbdLocation({ ...ok, image: 'x'.repeat(5000) })).toThrow(
      expect.objectContaining({ problem: 'too-long' }),
    );
  });

  it('parse(format(parts)) gives the parts back; format never writes what parse refuses (property)', () => {
    fc.assert(
      fc.property(
        fc.uuid(),
        fc.string({ maxLength: 30, unit: 'grapheme' }),
        fc.string({ maxLength: 30, unit: 'grapheme' }),
        fc.string({ maxLength: 30, unit: 'binary' }),
        (fsid, pool, image, snapshot) => {
          let url: string;
          try {
            url = formatRbdLocation({ fsid, pool, image, snapshot });
          } catch (err) {
            return err instanceof InvalidRbdLocationError;
          }
          expect(parseRbdLocation(url)).toEqual({ kind: 'rbd', fsid: fsid.toLowerCase(), pool, image, snapshot });
          return true;
        },
      ),
      { numRuns: 3000 },
    );
  });

  it('formats every name a Ceph pool, image or snapshot could sensibly have (property)', () => {
    const name = fc
      .string({ minLength: 1, maxLength: 30, unit: 'grapheme' })
      // eslint-disable-next-line no-control-regex
      .filter((s) => s.trim() !== '' && s !== '.' && s !== '..' && !/[\u0000-\u001f\u007f-\u009f/@]/.test(s));
    fc.assert(
      fc.property(fc.uuid(), name, name, name, (fsid, pool, image, snapshot) => {
        expect(parseRbdLocation(formatRbdLocation({ fsid, pool, image, snapshot }))).toEqual({
          kind: 'rbd',
          fsid: fsid.toLowerCase(),
          pool,
          image,
          snapshot,
        });
      }),
      { numRuns: 2000 },
    );
  });
});
