import type { CloneFormatPolicy } from './clone.js';
import type { RbdBackendOptions } from './options.js';
import type { ParentSnapshotCache } from './parent-cache.js';
import type { RbdOps } from './rbd-ops.js';

/** What the backend's concerns (clone, import, direct snapshot) share: mechanics and configuration. */
export interface RbdContext {
  ops: RbdOps;
  options: RbdBackendOptions;
  /** The cluster's fsid, lower case. */
  fsid: string;
  /** Parent snapshot facts read once per snapshot id (see `ParentSnapshotCache`). */
  parents: ParentSnapshotCache;
  /** The clone format the cluster allows (read once, see `cloneFormatPolicy`). */
  cloneFormat(): Promise<CloneFormatPolicy>;
}
