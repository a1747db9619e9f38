import type { RbdUrl } from './locations.js';

/** What a clone needs to know of its parent snapshot, read once per snapshot id. */
export interface ParentSnapshotFacts {
  /** The snapshot's id: librbd never reuses one within an image. */
  snapId: number;
  /** The snapshot's size (fixed for a snapshot id). */
  size: number;
  /** Whether it was protected when read (only picks the clone format when the policy is unknown). */
  isProtected: boolean;
}

/**
 * Facts of parent snapshots by `<pool>/<image>@<snapshot>`, each for one snapshot id. A
 * snapshot's size cannot change for its id, so a clone need not reopen the parent to read it
 * again; a name removed and created again gets a new id, and whatever shows the new id (an open
 * of the parent or of a clone's parent info) replaces the entry. An entry the clone itself
 * contradicts (the snapshot is gone or not protected any more) is forgotten.
 */
export class ParentSnapshotCache {
  readonly #entries = new Map<string, ParentSnapshotFacts>();

  constructor(private readonly maxEntries = 1024) {}

  static key(u: Pick<RbdUrl, 'pool' | 'image' | 'snapshot'>): string {
    return `${u.pool}\0${u.image}\0${u.snapshot}`;
  }

  /** The facts last seen for this snapshot name, or undefined. */
  get(u: Pick<RbdUrl, 'pool' | 'image' | 'snapshot'>): ParentSnapshotFacts | undefined {
    return this.#entries.get(ParentSnapshotCache.key(u));
  }

  /**
   * Records what was read of the snapshot. Returns true when it contradicts the entry (another
   * snapshot id under the same name, so the cached size was of a snapshot that is gone).
   */
  observe(u: Pick<RbdUrl, 'pool' | 'image' | 'snapshot'>, facts: ParentSnapshotFacts): boolean {
    const key = ParentSnapshotCache.key(u);
    const old = this.#entries.get(key);
    this.#entries.delete(key);
    // Oldest first in a Map: drop the oldest when full (a compute node uses a few images at a time).
    if (this.#entries.size >= this.maxEntries) this.#entries.delete(this.#entries.keys().next().value!);
    this.#entries.set(key, { ...facts });
    return old !== undefined && old.snapId !== facts.snapId;
  }

  /** Forgets the snapshot (the clone said it is gone or unusable). */
  forget(u: Pick<RbdUrl, 'pool' | 'image' | 'snapshot'>): void {
    this.#entries.delete(ParentSnapshotCache.key(u));
  }

  get size(): number {
    return this.#entries.size;
  }
}
