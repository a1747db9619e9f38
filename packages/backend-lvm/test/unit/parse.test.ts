// Pure logic: LVM report parsing, stderr classification, extent arithmetic.
import { describe, expect, it } from 'vitest';
import { filterNoise } from '../../src/exec.js';
import { assertLvName, classifyLvmStderr, parsePeRanges, parseReport, type LvInfo } from '../../src/lvm.js';
import { extentRange, UnmappableError } from '../../src/mapping.js';

describe('LVM report parsing', () => {
  it('reads rows of a JSON report section', () => {
    const out = `{"report":[{"vg":[{"vg_name":"v","vg_extent_size":"4194304"}]}]}`;
    expect(parseReport(out, 'vg')).toEqual([{ vg_name: 'v', vg_extent_size: '4194304' }]);
    expect(parseReport(out, 'lv')).toEqual([]);
    expect(() => parseReport('not json', 'vg')).toThrow(/unparseable/);
  });

  it('parses seg_pe_ranges', () => {
    expect(parsePeRanges('/dev/loop0:5-7')).toEqual([{ pv: '/dev/loop0', firstExtent: 5, lastExtent: 7 }]);
    expect(parsePeRanges('/dev/sdb:0-0 /dev/sdc:10-19')).toHaveLength(2);
    expect(() => parsePeRanges('garbage')).toThrow();
  });

  it('classifies lvm2 failures', () => {
    expect(classifyLvmStderr('Logical Volume "a_disk" already exists in volume group "vg"')).toBe('lv-exists');
    expect(classifyLvmStderr('Volume group "vg" has insufficient free space (55 extents): 500 required.')).toBe(
      'insufficient-space',
    );
    expect(
      classifyLvmStderr('Insufficient suitable contiguous allocatable extents for logical volume a: 5 more required'),
    ).toBe('insufficient-contiguous-space');
    expect(classifyLvmStderr('Failed to find logical volume "vg/x"')).toBe('lv-not-found');
    expect(classifyLvmStderr('Volume group "nosuch" not found\nCannot process volume group nosuch')).toBe(
      'vg-not-found',
    );
    expect(classifyLvmStderr('something else')).toBe('failed');
  });

  it('drops the no-dm warnings from stderr', () => {
    expect(
      filterNoise(
        '  WARNING: Activation disabled. No device-mapper interaction will be attempted.\n  WARNING: Logical volume vg/a not zeroed.\n  real error\n',
      ),
    ).toBe('real error');
  });

  it('validates LV names', () => {
    expect(() => assertLvName('6f1c0f9e-1111-2222-3333-444455556666_disk.local')).not.toThrow();
    for (const bad of ['', '-x', 'a b', 'a/b', '..', 'snapshot1', 'x'.repeat(128)])
      expect(() => assertLvName(bad)).toThrow();
  });
});

describe('extent mapping arithmetic', () => {
  const lv = (over: Partial<LvInfo>): LvInfo => ({
    name: 'u_disk',
    sizeBytes: 3 * 4 * 2 ** 20,
    attr: '-wc-XX----',
    tags: [],
    segmentCount: 1,
    segments: [{ pv: '/dev/loop3', firstExtent: 5, lastExtent: 7 }],
    path: '/dev/vg/u_disk',
    active: false,
    ...over,
  });
  const pvs = [{ name: '/dev/loop3', vg: 'vg', peStart: 1_048_576, sizeBytes: 0, freeBytes: 0 }];

  it('offset = pe_start + first_extent * extent_size', () => {
    expect(extentRange(lv({}), pvs, 4 * 2 ** 20)).toEqual({
      pv: '/dev/loop3',
      offset: 1_048_576 + 5 * 4 * 2 ** 20,
      bytes: 12 * 2 ** 20,
    });
  });

  it('refuses multi-segment LVs', () => {
    expect(() =>
      extentRange(
        lv({
          segmentCount: 2,
          segments: [
            { pv: '/dev/loop3', firstExtent: 0, lastExtent: 0 },
            { pv: '/dev/loop3', firstExtent: 4, lastExtent: 5 },
          ],
        }),
        pvs,
        4 * 2 ** 20,
      ),
    ).toThrow(UnmappableError);
  });
});
