// The clone-depth policy's arithmetic and its options (issue 21 item 4).
import { describe, expect, it } from 'vitest';
import { ConfigError, isDriverError, loadConfig } from '@ephemera/driver';
import { cloneDepthAction } from '../../src/flattener.js';

describe('cloneDepthAction', () => {
  const limits = { soft: 4, hard: 8 };
  it('leaves chains up to the soft depth, flattens above it in the background, above the hard depth before returning', () => {
    expect([0, 1, 4].map((d) => cloneDepthAction(d, limits))).toEqual(['none', 'none', 'none']);
    expect([5, 8].map((d) => cloneDepthAction(d, limits))).toEqual(['background', 'background']);
    expect([9, 64].map((d) => cloneDepthAction(d, limits))).toEqual(['before-return', 'before-return']);
  });

  it('with soft == hard there is no background band', () => {
    expect([2, 3].map((d) => cloneDepthAction(d, { soft: 2, hard: 2 }))).toEqual(['none', 'before-return']);
  });

  it('refuses a depth that is not a non-negative integer', () => {
    for (const d of [-1, 1.5, Number.NaN]) {
      let err: unknown;
      try {
        cloneDepthAction(d, limits);
      } catch (e) {
        err = e;
      }
      expect(isDriverError(err, 'INVALID_ARGUMENT'), String(d)).toBe(true);
    }
  });
});

describe('clone-depth and flatten options', () => {
  it('default to Ceph-CSI soft 4 and hard 8, background snapshot flatten, one flatten at a time', () => {
    const r = loadConfig({ env: {} }).config.images.rbd;
    expect(r.cloneDepth).toEqual({ soft: 4, hard: 8 });
    expect(r.snapshotFlatten).toBe('background');
    expect(r.flattenConcurrency).toBe(1);
  });

  it('are read from the environment and from nested input', () => {
    const env = {
      EPHEMERA_IMAGES_RBD_CLONE_DEPTH_SOFT: '2',
      EPHEMERA_IMAGES_RBD_CLONE_DEPTH_HARD: '3',
      EPHEMERA_IMAGES_RBD_SNAPSHOT_FLATTEN: 'sync',
    };
    const r = loadConfig({ env }).config.images.rbd;
    expect(r.cloneDepth).toEqual({ soft: 2, hard: 3 });
    expect(r.snapshotFlatten).toBe('sync');
    const o = loadConfig({ env: {}, overrides: { images: { rbd: { cloneDepth: { hard: 5 } } } } }).config.images.rbd;
    expect(o.cloneDepth).toEqual({ soft: 4, hard: 5 });
  });

  it('refuse a hard depth below the soft one, a depth below 1 and an unknown flatten mode', () => {
    const bad = [
      [{ cloneDepth: { soft: 5, hard: 4 } }, 'images.rbd.cloneDepth.hard'],
      [{ cloneDepth: { soft: 0 } }, 'images.rbd.cloneDepth.soft'],
      [{ snapshotFlatten: 'later' }, 'images.rbd.snapshotFlatten'],
      [{ flattenConcurrency: 0 }, 'images.rbd.flattenConcurrency'],
    ] as const;
    for (const [rbd, key] of bad) {
      let err: unknown;
      try {
        loadConfig({ env: {}, overrides: { images: { rbd } } });
      } catch (e) {
        err = e;
      }
      expect(err, key).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).message, key).toContain(key);
    }
  });
});
