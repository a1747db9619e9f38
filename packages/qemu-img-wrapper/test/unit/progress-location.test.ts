import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import { ProgressParser, QemuImgError, rbdJson, rbdLocation, rbdUri } from '@ephemera/qemu-img-wrapper';

describe('ProgressParser', () => {
  const render = (values: number[]): string => values.map((v) => `    (${v.toFixed(2)}/100%)\r`).join('');

  test('parses qemu-img output and ends at 100', () => {
    const p = new ProgressParser();
    expect(p.feed('    (0.00/100%)\r    (3.12/100%)\r    (6.2')).toEqual([0, 3.12]);
    expect(p.feed('5/100%)\r')).toEqual([6.25]);
    expect(p.feed('    (6.25/100%)\r    (1.00/100%)\r')).toEqual([]); // never goes back
    expect(p.finish()).toEqual([100]);
    expect(p.finish()).toEqual([]);
  });

  test('property: any chunking yields the same increasing sequence, ending at 100', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.integer({ min: 0, max: 10000 }).map((n) => n / 100),
          { maxLength: 60 },
        ),
        fc.array(fc.integer({ min: 1, max: 40 }), { minLength: 1, maxLength: 10 }),
        fc.string({ maxLength: 20 }),
        (values, cuts, noise) => {
          const text = noise.replace(/[()]/g, '') + render(values);
          const whole = new ProgressParser();
          const expected = [...whole.feed(text), ...whole.finish()];
          const p = new ProgressParser();
          const got: number[] = [];
          let off = 0;
          for (let i = 0; off < text.length; i++) {
            const n = cuts[i % cuts.length]!;
            got.push(...p.feed(text.slice(off, off + n)));
            off += n;
          }
          got.push(...p.finish());
          expect(got).toEqual(expected);
          for (let i = 1; i < got.length; i++) expect(got[i]!).toBeGreaterThan(got[i - 1]!);
          expect(got.at(-1)).toBe(100);
          for (const v of got) expect(v >= 0 && v <= 100).toBe(true);
        },
      ),
      { numRuns: 1000 },
    );
  });
});

describe('RBD locations', () => {
  const base = { pool: 'vms', image: 'disk', user: 'ephemera', confPath: '/etc/ceph/ceph.conf' };

  test('rbd: pseudo-URI', () => {
    expect(rbdUri(base)).toBe('rbd:vms/disk:id=ephemera:conf=/etc/ceph/ceph.conf');
    expect(rbdUri({ ...base, snapshot: 'snap', namespace: 'ns' })).toBe(
      'rbd:vms/ns/disk@snap:id=ephemera:conf=/etc/ceph/ceph.conf',
    );
  });

  test('escapes : @ / and backslash', () => {
    expect(rbdUri({ ...base, image: 'a:b@c/d\\e', snapshot: 's:1', confPath: '/x:y/c@f.conf' })).toBe(
      'rbd:vms/a\\:b\\@c\\/d\\\\e@s\\:1:id=ephemera:conf=/x\\:y/c\\@f.conf',
    );
  });

  test('json: pseudo-protocol', () => {
    expect(rbdJson({ ...base, snapshot: 's' })).toBe(
      'json:{"file":{"driver":"rbd","pool":"vms","image":"disk","snapshot":"s","user":"ephemera","conf":"/etc/ceph/ceph.conf"}}',
    );
    expect(rbdLocation(base, 'json')).toMatchObject({ type: 'rbd', syntax: 'json' });
  });

  test('never carries keys; rejects bad names', () => {
    expect(() => rbdUri({ ...base, key: 'AQB...' } as never)).toThrow(QemuImgError);
    expect(() => rbdUri({ ...base, user: 'client.ephemera' })).toThrow(/client\./);
    expect(() => rbdUri({ ...base, image: '' })).toThrow(QemuImgError);
    expect(() => rbdUri({ ...base, pool: 'a\nb' })).toThrow(QemuImgError);
  });
});
