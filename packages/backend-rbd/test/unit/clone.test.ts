// The clone decision as a pure function, tabled after Nova's `is_cloneable` tests
// (nova/tests/unit/virt/libvirt/test_imagebackend.py, storage/test_rbd.py): good location, bad
// locations, another cluster, non-raw formats, several locations; then the clone format.
import { describe, expect, it } from 'vitest';
import { cloneFormatFor, cloneFormatPolicy, decideClone, localRbdLocations } from '../../src/clone.js';

const FSID = 'acada594-e091-4f05-9d45-e3735cb2db40';
const OTHER = '33630410-6d93-4d66-8e42-3b953cf194aa';
const here = (image: string, snap = 'snap') => `rbd://${FSID}/images/${image}/${snap}`;
const there = (image: string) => `rbd://${OTHER}/images/${image}/snap`;
const img = (diskFormat: string, ...urls: string[]) => ({
  diskFormat,
  locations: urls.map((url) => ({ url, metadata: {} })),
});

describe('decideClone (is_cloneable)', () => {
  const table: {
    name: string;
    image: ReturnType<typeof img>;
    force?: boolean;
    clone?: string[];
    reason?: RegExp;
    rbdLocation?: string;
  }[] = [
    { name: 'cloneable: raw, rbd location in this cluster', image: img('raw', here('a')), clone: [here('a')] },
    { name: 'format is case-insensitive', image: img('RAW', here('a')), clone: [here('a')] },
    { name: 'no locations at all', image: img('raw'), reason: /no rbd:\/\/ location/ },
    { name: 'bad location: not rbd://', image: img('raw', 'http://glance/images/a'), reason: /no rbd:\/\/ location/ },
    { name: 'bad location: legacy one-part rbd://image', image: img('raw', 'rbd://a'), reason: /no rbd:\/\/ location/ },
    { name: 'bad location: three parts', image: img('raw', `rbd://${FSID}/images/a`), reason: /no rbd:\/\/ location/ },
    { name: 'bad location: five parts', image: img('raw', `${here('a')}/extra`), reason: /no rbd:\/\/ location/ },
    {
      name: 'different fsid',
      image: img('raw', there('a')),
      reason: new RegExp(`another cluster \\(fsid ${OTHER}, this cluster ${FSID}\\)`),
      rbdLocation: there('a'),
    },
    ...['qcow2', 'vmdk', 'vdi', 'vhd', 'iso', 'ami', 'aki', 'ari'].map((f) => ({
      name: `bad format ${f}`,
      image: img(f, here('a')),
      reason: new RegExp(`image is ${f}, not raw`),
      rbdLocation: here('a'),
    })),
    { name: 'unknown format', image: img('', here('a')), reason: /of unknown format, not raw/, rbdLocation: here('a') },
    {
      name: 'forceImport: never cloned',
      image: img('raw', here('a')),
      force: true,
      reason: /^forceImport/,
      rbdLocation: here('a'),
    },
    {
      name: 'several locations: every local one in the given order, others left out',
      image: img('raw', 'http://glance/x', there('a'), here('b'), here('c', 's2')),
      clone: [here('b'), here('c', 's2')],
    },
    {
      name: 'import names a local rbd location before a foreign one',
      image: img('qcow2', there('a'), here('b')),
      reason: /not raw/,
      rbdLocation: here('b'),
    },
  ];
  for (const t of table) {
    it(t.name, () => {
      const d = decideClone(t.image, FSID, t.force === true);
      if (t.clone) {
        expect(d.kind).toBe('clone');
        if (d.kind === 'clone') expect(d.candidates.map((c) => c.location)).toEqual(t.clone);
      } else {
        expect(d).toMatchObject({ kind: 'import', reason: expect.stringMatching(t.reason!) });
        if (d.kind === 'import') expect(d.rbdLocation).toBe(t.rbdLocation);
      }
    });
  }

  it('candidates carry the parsed parts', () => {
    expect(localRbdLocations(img('raw', here('a', 's1')), FSID)).toEqual([
      { location: here('a', 's1'), url: { fsid: FSID, pool: 'images', image: 'a', snapshot: 's1' } },
    ]);
  });
});

describe('clone format', () => {
  it('configured formats win; auto follows require_min_compat_client', () => {
    expect(cloneFormatPolicy(1, 'reef')).toEqual({ format: 1, why: 'configured' });
    expect(cloneFormatPolicy(2, undefined)).toEqual({ format: 2, why: 'configured' });
    expect(cloneFormatPolicy('auto', 'mimic')).toEqual({ format: 2, why: 'require_min_compat_client mimic >= mimic' });
    expect(cloneFormatPolicy('auto', 'luminous')).toEqual({
      format: 1,
      why: 'require_min_compat_client luminous < mimic',
    });
    expect(cloneFormatPolicy('auto', undefined)).toEqual({
      format: undefined,
      why: 'require_min_compat_client unknown',
    });
  });

  const table: [
    policy: 1 | 2 | undefined,
    protectedParent: boolean,
    expected: { kind: string; format?: number; why?: RegExp; reason?: RegExp },
  ][] = [
    [2, false, { kind: 'clone', format: 2, why: /^p$/ }],
    [2, true, { kind: 'clone', format: 2, why: /^p$/ }],
    [1, true, { kind: 'clone', format: 1, why: /^p; parent snapshot protected$/ }],
    [
      1,
      false,
      {
        kind: 'import',
        reason: /clone format 2 not allowed \(p\) and parent snapshot pool\/img@snap is not protected/,
      },
    ],
    [undefined, true, { kind: 'clone', format: 1, why: /parent snapshot protected$/ }],
    [undefined, false, { kind: 'clone', format: 2, why: /parent snapshot unprotected$/ }],
  ];
  for (const [format, prot, expected] of table) {
    it(`policy ${format ?? 'unknown'}, parent ${prot ? 'protected' : 'unprotected'}: ${expected.kind}${expected.format ? ` v${expected.format}` : ''}`, () => {
      const got = cloneFormatFor({ format, why: 'p' }, prot, 'pool/img@snap');
      expect(got.kind).toBe(expected.kind);
      if (got.kind === 'clone') {
        expect(got.format).toBe(expected.format);
        expect(got.why).toMatch(expected.why!);
      } else expect(got.reason).toMatch(expected.reason!);
    });
  }
});
