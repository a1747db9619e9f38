// The parent snapshot cache: a hit returns what was read; another snapshot id under the same name
// replaces the entry (and says so); a contradicted entry is forgotten; the oldest goes when full.
import { describe, expect, it } from 'vitest';
import { ParentSnapshotCache } from '../../src/parent-cache.js';

const u = (image: string, snapshot = 'snap', pool = 'images') => ({ pool, image, snapshot });

describe('ParentSnapshotCache', () => {
  it('hits: the facts read once are returned for the same pool, image and snapshot only', () => {
    const c = new ParentSnapshotCache();
    expect(c.get(u('a'))).toBeUndefined();
    expect(c.observe(u('a'), { snapId: 4, size: 1024, isProtected: true })).toBe(false);
    expect(c.get(u('a'))).toEqual({ snapId: 4, size: 1024, isProtected: true });
    expect(c.get(u('a', 'other'))).toBeUndefined();
    expect(c.get(u('a', 'snap', 'vms'))).toBeUndefined();
    expect(c.get(u('b'))).toBeUndefined();
    // The same id seen again is no contradiction.
    expect(c.observe(u('a'), { snapId: 4, size: 1024, isProtected: true })).toBe(false);
    expect(c.size).toBe(1);
  });

  it('invalidates on a new snapshot id: the name was reused for another snapshot, its size replaces the old one', () => {
    const c = new ParentSnapshotCache();
    c.observe(u('a'), { snapId: 4, size: 1024, isProtected: true });
    expect(c.observe(u('a'), { snapId: 9, size: 4096, isProtected: false })).toBe(true);
    expect(c.get(u('a'))).toEqual({ snapId: 9, size: 4096, isProtected: false });
  });

  it('forgets an entry the clone contradicted', () => {
    const c = new ParentSnapshotCache();
    c.observe(u('a'), { snapId: 4, size: 1024, isProtected: true });
    c.observe(u('b'), { snapId: 5, size: 2048, isProtected: true });
    c.forget(u('a'));
    expect(c.get(u('a'))).toBeUndefined();
    expect(c.get(u('b'))?.snapId).toBe(5);
  });

  it('keeps at most maxEntries, dropping the least recently recorded', () => {
    const c = new ParentSnapshotCache(2);
    c.observe(u('a'), { snapId: 1, size: 1, isProtected: true });
    c.observe(u('b'), { snapId: 2, size: 2, isProtected: true });
    c.observe(u('a'), { snapId: 1, size: 1, isProtected: true }); // a is now the newest
    c.observe(u('c'), { snapId: 3, size: 3, isProtected: true });
    expect(c.get(u('b'))).toBeUndefined();
    expect(c.get(u('a'))?.snapId).toBe(1);
    expect(c.get(u('c'))?.snapId).toBe(3);
    expect(c.size).toBe(2);
  });

  it("does not share the caller's object: a later change of it does not alter the entry", () => {
    const c = new ParentSnapshotCache();
    const facts = { snapId: 4, size: 1024, isProtected: true };
    c.observe(u('a'), facts);
    facts.size = 1;
    expect(c.get(u('a'))?.size).toBe(1024);
  });
});
