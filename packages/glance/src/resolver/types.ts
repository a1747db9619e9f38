/** The resolver's vocabulary: locations, targets, handler verdicts, plans. */
import type { GlanceImage } from '../types.js';
import type { ParsedLocation } from '../url.js';

/** Where a candidate location came from. */
export type LocationSource = 'locations' | 'locations-api' | 'direct_url' | 'glance';

/** A candidate location of an image, parsed. */
export interface Location {
  /** The URL as Glance reported it. */
  url: string;
  /** The strictly parsed URL. */
  parsed: ParsedLocation;
  /** The location's metadata (`store` names the Glance store on multi-store deployments). */
  metadata: Record<string, unknown>;
  source: LocationSource;
  /** Store id from `metadata.store`, when present. */
  store?: string;
}

/** Image backend on the compute node. */
export type BackendKind = 'rbd' | 'qcow2' | 'lvm';

/** A Ceph cluster this compute node can reach. */
export interface ReachableCluster {
  fsid: string;
  /** Pools this node's cephx user can read. */
  pools: string[];
}

/** What the compute node can do: everything a handler needs to judge a location. */
export interface ResolveTarget {
  /** The node's image backend. */
  backend: BackendKind;
  /** The local Ceph cluster (RBD backend): clones are possible only from it. */
  ceph?: ReachableCluster;
  /** Other clusters whose images can be copied (read) from. */
  remoteClusters?: ReachableCluster[];
  /** Directories `file://` locations may be read from (empty or absent: none). */
  fileDirs?: string[];
  /** Glance store ids in order of preference (ties in cost go to the earlier store). */
  preferredStores?: string[];
  /** The Glance store backed by the local cluster (target of an optional copy-image). */
  localStore?: string;
  /** Whether plain `http://` (not https) locations may be used. Default true. */
  allowHttp?: boolean;
}

/** How the bytes get to the node. */
export type PlanMethod = 'clone' | 'copy' | 'download' | 'convert-import';

/** A handler's verdict on one location. */
export type Assessment =
  | { accept: true; cost: number; method: PlanMethod; detail?: string }
  | { accept: false; reason: string };

/** Everything a handler sees when it judges a location. */
export interface AssessContext {
  image: GlanceImage;
  target: ResolveTarget;
  signal?: AbortSignal;
}

/**
 * A pluggable image handler: it knows some URL schemes and says whether (and at what cost) it can
 * bring a location's bytes to the target. Handlers must not throw for ordinary refusals: they
 * return `{ accept: false, reason }`.
 */
export interface ImageHandler {
  /** Short unique name, e.g. `rbd-clone`. */
  readonly name: string;
  /** URL schemes it understands (`rbd`, `http`, `https`, `file`, `glance`...). */
  readonly schemes: readonly string[];
  assess(location: Location, ctx: AssessContext): Promise<Assessment>;
}

/** An accepted option. */
export interface PlanOption {
  handler: string;
  /** The location URL (credentials redacted). */
  location: string;
  source: LocationSource;
  store?: string;
  method: PlanMethod;
  cost: number;
  detail?: string;
  parsed: ParsedLocation;
}

/** A refused option and why. */
export interface DeclinedOption {
  handler: string;
  location: string;
  source: LocationSource;
  reason: string;
}

/** The resolver's answer: the chosen option, the ranked alternatives, and every refusal. */
export interface Plan {
  imageId: string;
  image: GlanceImage;
  target: ResolveTarget;
  /** The cheapest option. */
  chosen: PlanOption;
  /** Every accepted option, best first (`options[0]` is `chosen`). */
  options: PlanOption[];
  /** Every declined (handler, location) pair with its reason. */
  declined: DeclinedOption[];
  /** Set when the resolver asked Glance to copy the image into the local store first. */
  copiedToStore?: string;
}
