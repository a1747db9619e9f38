/** Shapes of the Glance v2 API as this client uses them. */

/** Image status as Glance reports it. */
export type ImageStatus =
  | 'queued'
  | 'saving'
  | 'uploading'
  | 'importing'
  | 'active'
  | 'deactivated'
  | 'killed'
  | 'deleted'
  | 'pending_delete';

/** One entry of an image's `locations` list (needs `show_multiple_locations`). */
export interface ImageLocationEntry {
  url: string;
  metadata: Record<string, unknown>;
  /** Present on some Glance versions for multi-store deployments. */
  validation_data?: Record<string, unknown>;
}

/**
 * An image record (`GET /v2/images/ID`). Custom properties appear as extra string keys;
 * `os_glance_*` keys are Glance's reserved import bookkeeping.
 */
export interface GlanceImage {
  id: string;
  name: string | null;
  status: ImageStatus;
  disk_format: string | null;
  container_format: string | null;
  visibility: string;
  size: number | null;
  virtual_size: number | null;
  /** MD5 hex (legacy). */
  checksum: string | null;
  /** Hash algorithm of `os_hash_value` (hashlib name, e.g. `sha512`). */
  os_hash_algo: string | null;
  os_hash_value: string | null;
  protected: boolean;
  min_disk: number;
  min_ram: number;
  owner: string | null;
  tags: string[];
  created_at: string;
  updated_at: string;
  /** Present when `show_multiple_locations = True`. */
  locations?: ImageLocationEntry[];
  /** Present when `show_image_direct_url = True`. */
  direct_url?: string;
  /** Comma-separated store ids holding the image (multi-store). */
  stores?: string;
  /** Comma-separated stores a running import is copying to. */
  os_glance_importing_to_stores?: string;
  /** Comma-separated stores an import failed for. */
  os_glance_failed_import?: string;
  self: string;
  file: string;
  schema: string;
  [property: string]: unknown;
}

/** Body of `POST /v2/images`. Extra keys become custom properties (string values). */
export interface CreateImageRequest {
  /** Client-chosen UUID; the client generates one when absent so that a retried create is safe. */
  id?: string;
  name?: string;
  disk_format?: 'raw' | 'qcow2' | 'vmdk' | 'vdi' | 'iso' | 'ploop' | 'vhd' | 'vhdx' | 'aki' | 'ari' | 'ami' | string;
  container_format?: 'bare' | 'ovf' | 'ova' | 'docker' | 'aki' | 'ari' | 'ami' | 'compressed' | string;
  visibility?: 'public' | 'private' | 'shared' | 'community';
  protected?: boolean;
  min_disk?: number;
  min_ram?: number;
  tags?: string[];
  [property: string]: unknown;
}

/** RFC 6902 operation in Glance's `application/openstack-images-v2.1-json-patch` dialect. */
export type JsonPatchOp = { op: 'add' | 'replace'; path: string; value: unknown } | { op: 'remove'; path: string };

/** Filters of `GET /v2/images` (all optional). */
export interface ListImagesFilter {
  name?: string;
  status?: ImageStatus;
  visibility?: 'public' | 'private' | 'shared' | 'community' | 'all';
  disk_format?: string;
  container_format?: string;
  tag?: string;
  owner?: string;
  /** Page size asked from Glance. */
  limit?: number;
  /** e.g. `created_at:desc`. */
  sort?: string;
  /** Any other property filter, sent as-is. */
  [property: string]: string | number | undefined;
}

/** A store of a multi-store Glance (`GET /v2/info/stores`). */
export interface GlanceStore {
  id: string;
  description?: string;
  default?: boolean;
  read_only?: boolean;
}
