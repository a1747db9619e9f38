// What librbd reports about a snapshot; the snapshot operations are methods of Image.
import type { SnapNamespace } from './native.js';

/** A snapshot of an image. */
export interface SnapshotInfo {
  id: number;
  name: string;
  size: number;
  /** Only user snapshots can be protected. */
  protected: boolean;
  /**
   * `user` for snapshots made with createSnapshot; `trash` for a removed snapshot that clone-v2
   * children still use (librbd deletes it with the last child); `group`/`mirror` otherwise.
   */
  namespace: SnapNamespace;
  /** For a `trash` snapshot: the name it had as a user snapshot (its own name is a UUID). */
  originalName?: string;
}
