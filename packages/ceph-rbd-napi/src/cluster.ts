// Connecting to a cluster (librados `rados_t`) and what a connection offers: pools, stats, ioctxs.
import { handleClosed, HandleClosed, invalidArgument } from './errors.js';
import { IoCtx } from './ioctx.js';
import { native, type NativeCluster } from './native.js';
import { checkName } from './validation.js';

/** What a monitor answered to {@link Cluster.monCommand}. */
export interface MonCommandResult {
  /** The command's output (JSON with `format: 'json'`). */
  out: string;
  /** The monitor's status line (e.g. `listed 2 entries`). */
  status: string;
}

/** How to reach the cluster. Secrets are read by librados from `keyringPath`, never passed inline. */
export interface ConnectOptions {
  /** A ceph.conf to read (mon_host, keyring, ...). Without it, `monHost` is required or the default search path is used. */
  confPath?: string;
  /** cephx id without the `client.` prefix (default `admin`). */
  clientId?: string;
  /** Keyring file holding this client's key (overrides the conf's `keyring`). */
  keyringPath?: string;
  /** `mon_host` (overrides the conf's), e.g. `[v2:127.0.0.1:3300,v1:127.0.0.1:6789]`. */
  monHost?: string;
  /**
   * Connect and operation timeout in milliseconds: applied as `client_mount_timeout`,
   * `rados_mon_op_timeout` and `rados_osd_op_timeout`, so an unreachable cluster fails with
   * {@link Timeout} within it and no single cluster operation waits longer.
   */
  timeoutMs: number;
  /** More librados config options (`rados_conf_set`), applied last. Their values never appear in errors. */
  options?: Readonly<Record<string, string>>;
}

/**
 * Connects to a cluster. Rejects with Timeout, PermissionDenied, ImageNotFound (missing conf/keyring)...
 * Implements rados_create2(), rados_conf_set() and rados_connect().
 */
export async function connect(opts: ConnectOptions): Promise<Cluster> {
  const op = 'connect';
  if (opts === null || typeof opts !== 'object') throw invalidArgument(op, '', 'options object required');
  const clientId = opts.clientId ?? 'admin';
  if (typeof clientId !== 'string' || !/^[A-Za-z0-9_.-]+$/.test(clientId) || clientId.startsWith('client.')) {
    throw invalidArgument(op, '', 'clientId must match [A-Za-z0-9_.-]+ (without the client. prefix)');
  }
  if (typeof opts.timeoutMs !== 'number' || !Number.isFinite(opts.timeoutMs) || opts.timeoutMs <= 0) {
    throw invalidArgument(op, `client.${clientId}`, 'timeoutMs must be a positive number');
  }
  for (const k of ['confPath', 'keyringPath', 'monHost'] as const) {
    if (opts[k] !== undefined) checkName(op, k, opts[k]);
  }
  const options: [string, string][] = [];
  for (const [k, v] of Object.entries(opts.options ?? {})) {
    checkName(op, 'option name', k);
    if (typeof v !== 'string' || v.includes('\0')) throw invalidArgument(op, '', `option ${k} must be a string`);
    options.push([k, v]);
  }
  const n = await native().connect({
    name: `client.${clientId}`,
    confPath: opts.confPath,
    keyringPath: opts.keyringPath,
    monHost: opts.monHost,
    timeoutSeconds: String(Math.max(0.001, opts.timeoutMs / 1000)),
    options,
  });
  return new Cluster(n, clientId);
}

/** Capacity numbers for a pool (bytes unless said otherwise). */
export interface PoolStats {
  pool: string;
  poolId: number;
  /** Bytes stored in the pool's objects (`rados df` USED for one replica). */
  bytesUsed: number;
  objects: number;
  /** RBD images in the pool and the sum of their sizes (provisioned), for overcommit reporting. */
  images: number;
  provisionedBytes: number;
  /** Provisioned bytes counting every snapshot as a full copy. */
  maxProvisionedBytes: number;
  snapshots: number;
  trashImages: number;
  /** What can still be written to this pool (`ceph df` MAX AVAIL), or null without mon `r` caps. */
  maxAvailBytes: number | null;
  /** Raw cluster capacity (all pools). */
  cluster: { totalBytes: number; usedBytes: number; availBytes: number };
}

/** A connection to a Ceph cluster (librados `rados_t`). */
export class Cluster implements AsyncDisposable {
  readonly #n: NativeCluster;
  readonly #parentIoCtxs = new Map<string, Promise<IoCtx>>();
  /** cephx id this connection authenticated as. */
  readonly clientId: string;

  /** @internal use {@link connect}. */
  constructor(n: NativeCluster, clientId: string) {
    this.#n = n;
    this.clientId = clientId;
  }

  /** True once close() was called (or the cluster was closed at exit). Binding only (no librados call). */
  get closed(): boolean {
    return this.#n.isClosed();
  }

  /**
   * This client's global id: watches and locks it holds show as `client.<instanceId>` (see
   * {@link Image.lockers}). Throws {@link HandleClosed} once the cluster is closed.
   * Implements rados_get_instance_id().
   */
  instanceId(): number {
    if (this.#n.isClosed()) throw handleClosed('cluster.instanceId', '');
    return this.#n.instanceId();
  }

  /**
   * Asks a monitor for its version: resolves when a monitor answers, rejects with
   * {@link Timeout} after the connection's `timeoutMs` (`rados_mon_op_timeout`) when none does.
   * A connected client keeps working on cached OSD sessions without monitors; this tells whether
   * new clients (e.g. QEMU's librbd) could connect now.
   * Implements rados_mon_command().
   */
  async pingMonitor(): Promise<void> {
    await this.#n.monCommand(JSON.stringify({ prefix: 'version', format: 'json' }));
  }

  /**
   * The cluster's `require_min_compat_client` (e.g. `luminous`): the oldest client release the
   * OSDs must still serve, which decides whether clone format 2 may be used. In process, as
   * `ceph osd get-require-min-compat-client` without starting the CLI. Needs mon read caps.
   * Implements rados_mon_command().
   */
  async requireMinCompatClient(): Promise<string> {
    const r = await this.#n.monCommand(JSON.stringify({ prefix: 'osd get-require-min-compat-client', format: 'json' }));
    const text = r.out.trim();
    // The monitor answers a JSON string with format json, plain text without.
    const value: unknown = text.startsWith('"') ? JSON.parse(text) : text;
    if (typeof value !== 'string' || !/^[a-z]+$/.test(value))
      throw invalidArgument('cluster.requireMinCompatClient', '', `unexpected answer ${JSON.stringify(text)}`);
    return value;
  }

  /**
   * Sends `command` to a monitor as the `ceph` CLI would (its JSON form, e.g.
   * `{ prefix: 'osd blocklist ls', format: 'json' }`, or that JSON text), on this connection and with its
   * credentials: no process, no new session. Resolves with the output (`out`) and the status line
   * (`status`); rejects with the monitor's errno (PermissionDenied without the caps, InvalidArgument
   * for an unknown command) and with {@link Timeout} when no monitor answers.
   * Implements rados_mon_command().
   */
  async monCommand(command: Readonly<Record<string, unknown>> | string): Promise<MonCommandResult> {
    // The JSON text itself where a float must keep its decimal point (`"expire": 60.0`: the
    // monitor refuses an integer for a CephFloat, and JSON.stringify(60.0) writes 60).
    const text = typeof command === 'string' ? command : JSON.stringify(command);
    let prefix: unknown;
    try {
      prefix = (JSON.parse(text) as { prefix?: unknown } | null)?.prefix;
    } catch {
      prefix = undefined;
    }
    if (typeof prefix !== 'string')
      throw invalidArgument('cluster.monCommand', '', 'command must be a JSON object with a string prefix');
    return this.#n.monCommand(text);
  }

  /** The cluster's fsid (UUID). Implements rados_cluster_fsid(). */
  fsid(): Promise<string> {
    return this.#n.fsid();
  }

  /**
   * Usage and capacity of `pool`. Rejects with ImageNotFound when the pool does not exist.
   * Implements rados_ioctx_pool_stat(), rbd_pool_stats_get() and rados_mon_command().
   */
  async poolStats(pool: string): Promise<PoolStats> {
    checkName('cluster.poolStats', 'pool', pool);
    const s = await this.#n.poolStats(pool);
    let maxAvailBytes: number | null = null;
    try {
      const df = await this.#n.monCommand(JSON.stringify({ prefix: 'df', format: 'json' }));
      const parsed = JSON.parse(df.out) as { pools?: { name: string; stats?: { max_avail?: number } }[] };
      const entry = parsed.pools?.find((p) => p.name === pool);
      if (typeof entry?.stats?.max_avail === 'number') maxAvailBytes = entry.stats.max_avail;
    } catch (err) {
      if (err instanceof HandleClosed) throw err;
      // Without mon read caps (or with a mgr-less cluster) MAX AVAIL is simply unknown.
    }
    return {
      pool: s.pool,
      poolId: s.poolId,
      bytesUsed: s.bytesUsed,
      objects: s.objects,
      images: s.images,
      provisionedBytes: s.provisionedBytes,
      maxProvisionedBytes: s.maxProvisionedBytes,
      snapshots: s.snapshots,
      trashImages: s.trashImages,
      maxAvailBytes,
      cluster: { totalBytes: s.clusterTotalBytes, usedBytes: s.clusterUsedBytes, availBytes: s.clusterAvailBytes },
    };
  }

  /**
   * Opens an I/O context on `pool` (and optional RADOS `namespace`). ImageNotFound if no such pool.
   * Implements rados_ioctx_create().
   */
  async openIoCtx(pool: string, namespace = ''): Promise<IoCtx> {
    checkName('cluster.openIoCtx', 'pool', pool);
    if (typeof namespace !== 'string' || namespace.includes('\0')) {
      throw invalidArgument('cluster.openIoCtx', pool, 'namespace must be a string');
    }
    const n = await this.#n.openIoCtx(pool, namespace);
    return new IoCtx(n, this, pool, namespace);
  }

  /** @internal an ioctx kept for clone parents given by pool name; closed with the cluster. */
  parentIoCtx(pool: string, namespace: string): Promise<IoCtx> {
    const key = `${pool}\0${namespace}`;
    let p = this.#parentIoCtxs.get(key);
    if (!p) {
      p = this.openIoCtx(pool, namespace);
      this.#parentIoCtxs.set(key, p);
      p.catch(() => this.#parentIoCtxs.delete(key));
    }
    return p;
  }

  /**
   * Closes the connection: no new operation is accepted, in-flight ones finish, then every open
   * IoCtx and Image of this cluster is closed, then the connection. Idempotent.
   * Implements rados_shutdown().
   */
  close(): Promise<void> {
    return this.#n.close();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
