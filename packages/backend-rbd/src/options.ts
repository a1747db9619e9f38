import { BackendUnavailableError, InvalidArgumentError, isUuid, type NetworkHost } from '@ephemera/image-backend';
import { NAME } from './errors.js';
import { validateGoldenOptions, type GoldenImageOptions } from './golden.js';
import { parseMonHost, readMonHost } from './locations.js';

/** Credentials for writing direct snapshots into the images pool (Glance's pool). */
export interface DirectSnapshotTarget {
  /** Pool Glance reads from (Glance's `rbd_store_pool`), e.g. `images`. */
  pool: string;
  /** cephx id with write access to that pool (e.g. `glance`), without `client.`. */
  clientId: string;
  /** A ceph.conf for that client (mon_host; may name its keyring). */
  confPath: string;
  /** That client's keyring *file* (overrides the conf's). Never a key. */
  keyringPath?: string;
}

/**
 * Configuration of {@link RbdBackend}, after Nova's `[libvirt] images_rbd_*`, `rbd_user`,
 * `rbd_secret_uuid`, `[glance] rbd_connect_timeout` and
 * `[workarounds] never_download_image_if_on_rbd`.
 */
export interface RbdBackendOptions {
  /** Pool of the instance disks (Nova `images_rbd_pool`), e.g. `vms`. */
  pool: string;
  /** ceph.conf (Nova `images_rbd_ceph_conf`): mon_host and, usually, the keyring path. */
  confPath: string;
  /**
   * cephx id without `client.` (Nova `rbd_user`). Default `admin`. Give it together with
   * `secretUuid` or not at all (one without the other is refused with `InvalidArgumentError`).
   */
  clientId?: string;
  /** Keyring *file* of that client (overrides the conf's `keyring`). Never a key. */
  keyringPath?: string;
  /**
   * UUID of the libvirt secret (usage `ceph`) holding `clientId`'s key (Nova `rbd_secret_uuid`):
   * `diskSource` then carries `auth`. Required with `clientId`, refused without it; with neither,
   * disks carry no `auth` and QEMU must find a key on its own (or the cluster has no cephx).
   */
  secretUuid?: string;
  /** Connect and per-operation timeout of the cluster connection (ms). Default 10 000. */
  connectTimeoutMs?: number;
  /**
   * Refuse to download an image that has an `rbd://` location but cannot be cloned (another
   * cluster, non-raw, unprotected parent...), as Nova's `never_download_image_if_on_rbd`: the
   * create fails with `InvalidArgumentError` (argument `image`) saying why instead of silently
   * copying it. An explicit `forceImport` still imports. Default false.
   */
  neverDownloadIfOnRbd?: boolean;
  /**
   * Clone format: `2` (no protected snapshot needed), `1` (the parent snapshot must be
   * protected), or `auto` (default): format 2 when the cluster's `require_min_compat_client` is
   * mimic or newer (read once on the connection as this client, in the background at create), else format 1.
   */
  cloneFormat?: 'auto' | 1 | 2;
  /** Write size of streamed raw imports (bytes; all-zero blocks skipped). Default: the new image's object size (4 MiB unless the cluster says otherwise). */
  importBlockBytes?: number;
  /**
   * aio writes in flight during a streamed import (and a snapshot copy). Default 8: 4 and 8 beat
   * 16 here (`rbd import` keeps 10). Bounds the memory held by writes: this many blocks.
   */
  importInFlight?: number;
  /** Default `busyTimeoutMs` of `remove` (ms). Default 30 000 (a killed QEMU's watch lingers ~30 s). */
  busyTimeoutMs?: number;
  /**
   * Where `directSnapshot` writes (Glance's pool, with a client that may write there). Without
   * it the `directSnapshot` capability is false and the call throws
   * `UnsupportedOperationError('directSnapshot')`.
   */
  directSnapshot?: DirectSnapshotTarget;
  /**
   * Non-raw images with an `rbd://` location in this cluster are converted by qemu-img reading
   * that snapshot by random access (any qcow2 layout) from a loopback server that opens it
   * read-only through the binding (read caps suffice) and hashes the bytes qemu-img reads, in
   * file order, to verify the declared hash: the snapshot is read once. Default true; false
   * always converts from `SourceImage.open()`.
   */
  convertFromRbd?: boolean;
  /** Monitors for `diskSource` (default: every monitor of the conf's `mon_host`, v1 addresses). */
  monitors?: readonly NetworkHost[];
  /** qemu-img binary for non-raw imports (default `qemu-img`). */
  qemuImgBinary?: string;
  /** Timeout of one qemu-img convert (ms). Default 3 600 000. */
  convertTimeoutMs?: number;
  /**
   * Memory the non-raw import keeps to serve qemu-img's reads from the stream: the first
   * `headBytes` and a sliding window of `windowBytes`. Defaults 8 MiB and 64 MiB. From an RBD
   * snapshot, `windowBytes` bounds the bytes qemu-img read ahead that wait for the hash.
   */
  convertStream?: { headBytes?: number; windowBytes?: number };
  /**
   * Golden images (no Nova equivalent: Nova downloads and converts per instance). When set, an
   * image the backend cannot clone (not raw, or not on RBD in this cluster) is imported or
   * converted once into a cached raw image `<pool>/ephemera-golden-<image id>` with a protected
   * snapshot `snap`, verified against Glance's checksum while it streams, and every instance is
   * a clone of it. One process in the whole cluster builds it (a RADOS lock with a lease); the
   * others wait and clone. It is used only while the image's checksum is the one it was built
   * from. `forceImport` still imports per instance. Absent: off.
   */
  goldenImages?: GoldenImageOptions;
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

/** Validates options; throws `InvalidArgumentError` naming the bad one. */
export function validateOptions(o: RbdBackendOptions): void {
  if (!o || typeof o !== 'object') throw new InvalidArgumentError('options', 'expected an object');
  if (typeof o.pool !== 'string' || !NAME_RE.test(o.pool))
    throw new InvalidArgumentError('pool', 'expected a pool name');
  if (typeof o.confPath !== 'string' || !o.confPath.startsWith('/'))
    throw new InvalidArgumentError('confPath', 'expected an absolute path');
  if (
    o.clientId !== undefined &&
    (typeof o.clientId !== 'string' || !/^[A-Za-z0-9_.-]+$/.test(o.clientId) || o.clientId.startsWith('client.'))
  )
    throw new InvalidArgumentError('clientId', 'expected a cephx id without the client. prefix');
  if (o.keyringPath !== undefined && (typeof o.keyringPath !== 'string' || !o.keyringPath.startsWith('/')))
    throw new InvalidArgumentError('keyringPath', 'expected an absolute path to a keyring file');
  if (o.secretUuid !== undefined && !isUuid(o.secretUuid))
    throw new InvalidArgumentError('secretUuid', 'expected a UUID');
  // The disk's <auth> is clientId + secretUuid: with only one of them QEMU either gets no <auth> at
  // all or uses the secret as client.admin. Both are half-done cephx configuration: say so now.
  if (o.clientId !== undefined && o.secretUuid === undefined)
    throw new InvalidArgumentError(
      'secretUuid',
      `clientId '${o.clientId}' is set without secretUuid: disks would carry no <auth>; give the UUID of the libvirt ceph secret holding client.${o.clientId}'s key`,
    );
  if (o.secretUuid !== undefined && o.clientId === undefined)
    throw new InvalidArgumentError(
      'clientId',
      'secretUuid is set without clientId: the secret would be used as client.admin; name the cephx user whose key it holds',
    );
  for (const k of [
    'connectTimeoutMs',
    'importBlockBytes',
    'importInFlight',
    'busyTimeoutMs',
    'convertTimeoutMs',
  ] as const) {
    const v = o[k];
    if (v !== undefined && (!Number.isSafeInteger(v) || v <= 0))
      throw new InvalidArgumentError(k, 'expected a positive integer');
  }
  if (o.importBlockBytes !== undefined && (o.importBlockBytes % 4096 !== 0 || o.importBlockBytes > 64 * 1024 * 1024))
    throw new InvalidArgumentError('importBlockBytes', 'expected a multiple of 4096 up to 64 MiB');
  if (o.importInFlight !== undefined && o.importInFlight > 256)
    throw new InvalidArgumentError('importInFlight', 'at most 256');
  if (o.cloneFormat !== undefined && o.cloneFormat !== 'auto' && o.cloneFormat !== 1 && o.cloneFormat !== 2)
    throw new InvalidArgumentError('cloneFormat', "expected 'auto', 1 or 2");
  const ds = o.directSnapshot;
  if (ds !== undefined) {
    if (typeof ds.pool !== 'string' || !NAME_RE.test(ds.pool))
      throw new InvalidArgumentError('directSnapshot.pool', 'expected a pool name');
    if (typeof ds.clientId !== 'string' || !/^[A-Za-z0-9_.-]+$/.test(ds.clientId) || ds.clientId.startsWith('client.'))
      throw new InvalidArgumentError('directSnapshot.clientId', 'expected a cephx id without the client. prefix');
    if (typeof ds.confPath !== 'string' || !ds.confPath.startsWith('/'))
      throw new InvalidArgumentError('directSnapshot.confPath', 'expected an absolute path');
    if (ds.keyringPath !== undefined && (typeof ds.keyringPath !== 'string' || !ds.keyringPath.startsWith('/')))
      throw new InvalidArgumentError('directSnapshot.keyringPath', 'expected an absolute path');
  }
  validateGoldenOptions(o.goldenImages, NAME_RE);
  if (o.monitors !== undefined) {
    if (!Array.isArray(o.monitors) || o.monitors.length === 0)
      throw new InvalidArgumentError('monitors', 'expected at least one monitor');
    for (const m of o.monitors) {
      if (
        !m ||
        typeof m.host !== 'string' ||
        !/^[A-Za-z0-9.:-]+$/.test(m.host) ||
        !Number.isInteger(m.port) ||
        m.port <= 0 ||
        m.port > 65535
      )
        throw new InvalidArgumentError('monitors', `bad monitor ${JSON.stringify(m)}`);
    }
  }
}

/** Ceph releases in order (for `require_min_compat_client`). */
export const CEPH_RELEASES = [
  'argonaut',
  'bobtail',
  'cuttlefish',
  'dumpling',
  'emperor',
  'firefly',
  'giant',
  'hammer',
  'infernalis',
  'jewel',
  'kraken',
  'luminous',
  'mimic',
  'nautilus',
  'octopus',
  'pacific',
  'quincy',
  'reef',
  'squid',
  'tentacle',
] as const;

/** Whether clone format 2 is allowed by a `require_min_compat_client` value (mimic or newer). */
export function allowsCloneV2(minCompatClient: string): boolean {
  const i = CEPH_RELEASES.indexOf(minCompatClient.trim().toLowerCase() as (typeof CEPH_RELEASES)[number]);
  return i >= CEPH_RELEASES.indexOf('mimic');
}

/**
 * librbd options of the backend's own connection (never QEMU's): without its writearound cache
 * and with zero-copy writes, `rbd_aio_write` references our block instead of copying it (the
 * binding pins the buffer until the completion, which librbd delays until it lets go of the
 * memory). Halves the import's CPU per byte; every write we issue awaits completion or flush.
 */
export const IMPORT_WRITE_PATH: Readonly<Record<string, string>> = Object.freeze({
  rbd_cache: 'false',
  rbd_disable_zero_copy_writes: 'false',
});

/** The monitors `diskSource` names: the configured ones, else `mon_host` of ceph.conf. */
export async function resolveMonitors(options: RbdBackendOptions): Promise<NetworkHost[]> {
  if (options.monitors) return [...options.monitors];
  let monHost: string | undefined;
  try {
    monHost = await readMonHost(options.confPath);
  } catch (e) {
    throw new BackendUnavailableError(`cannot read ceph.conf ${options.confPath}: ${(e as Error).message}`, {
      backend: NAME,
      cause: e,
    });
  }
  const monitors = monHost ? parseMonHost(monHost) : [];
  if (monitors.length === 0)
    throw new InvalidArgumentError('monitors', `no mon_host in ${options.confPath}: give monitors explicitly`, {
      backend: NAME,
    });
  return monitors;
}
