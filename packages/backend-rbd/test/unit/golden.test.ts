// Golden image names, checksums and options as pure functions: what gc may take for one of its
// images (and what it must never touch), and which checksum a golden image is tied to.
import { describe, expect, it } from 'vitest';
import { expectImageBackendError } from '@ephemera/image-backend';
import { goldenChecksum, goldenName, goldenRefusal, parseGoldenName } from '../../src/golden.js';
import { validateOptions } from '../../src/options.js';

const ID = '3f0c7b52-9a47-4f6e-b8f4-0d2b8a4c1e21';

describe('golden image names', () => {
  it('names a golden image from the Glance id and refuses ids that cannot name an RBD image', () => {
    expect(goldenName(ID)).toBe(`ephemera-golden-${ID}`);
    for (const bad of ['', '../x', 'a/b', 'a b', 'a@snap', '.hidden', 'x'.repeat(101)])
      expect(goldenName(bad)).toBe(undefined);
  });

  it('parses golden, building and stale names and nothing else (instance disks, foreign images)', () => {
    expect(parseGoldenName(`ephemera-golden-${ID}`)).toEqual({ imageId: ID, kind: 'golden' });
    expect(parseGoldenName(`ephemera-golden-${ID}.building-1a2b3c4d`)).toEqual({ imageId: ID, kind: 'building' });
    expect(parseGoldenName(`ephemera-golden-${ID}.stale-1796208529532`)).toEqual({ imageId: ID, kind: 'stale' });
    for (const other of [
      `${ID}_disk`,
      `golden-${ID}`,
      `ephemera-golden-${ID}.lock`,
      `ephemera-golden-${ID}.other`,
      'ephemera-golden-.building-x',
      'ephemera-golden-',
    ])
      expect(parseGoldenName(other)).toBe(undefined);
  });
});

describe('golden image checksum', () => {
  it('is the multihash when Glance gives one, else the md5, lower case; none without either', () => {
    expect(goldenChecksum({ osHashAlgo: 'SHA512', osHashValue: 'ABC', checksum: 'def' })).toBe('sha512:abc');
    expect(goldenChecksum({ osHashAlgo: null, osHashValue: null, checksum: 'DEF' })).toBe('md5:def');
    expect(goldenChecksum({})).toBe(undefined);
    const base = {
      id: ID,
      size: 1,
      diskFormat: 'qcow2',
      locations: [],
      open: async () => new ReadableStream<Uint8Array>(),
    };
    expect(goldenRefusal({ ...base, checksum: 'a' })).toBe(undefined);
    expect(goldenRefusal(base)).toMatch(/no checksum/);
    expect(goldenRefusal({ ...base, id: 'a/b', checksum: 'a' })).toMatch(/cannot name an RBD image/);
  });
});

describe('goldenImages options', () => {
  const ok = { pool: 'vms', confPath: '/etc/ceph/ceph.conf' };
  it('accepts the defaults and valid values, refuses bad ones naming the field', async () => {
    validateOptions({ ...ok, goldenImages: {} });
    validateOptions({ ...ok, goldenImages: { pool: 'golden', leaseMs: 3_000, waitTimeoutMs: 1, pollMs: 1 } });
    const bad: [unknown, string][] = [
      [{ pool: 'a/b' }, 'goldenImages.pool'],
      [{ leaseMs: 1_000 }, 'goldenImages.leaseMs'],
      [{ waitTimeoutMs: 0 }, 'goldenImages.waitTimeoutMs'],
      [{ pollMs: 1.5 }, 'goldenImages.pollMs'],
      ['yes', 'goldenImages'],
    ];
    for (const [g, field] of bad) {
      const e = await expectImageBackendError(
        (async () => validateOptions({ ...ok, goldenImages: g as never }))(),
        'INVALID_ARGUMENT',
      );
      expect((e as { argument?: string }).argument ?? e.message).toContain(field);
    }
  });
});
