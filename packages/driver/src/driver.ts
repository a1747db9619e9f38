/**
 * The hypervisor driver: spawns instances (root disk from a Glance image through the configured
 * backend, blank ephemeral and swap disks, the ceph secret, the domain) and manages them, with
 * every multi-step operation journaled before it acts.
 */
import { EventEmitter } from 'node:events';
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { inject, injectable } from 'inversify';
import type { Cluster } from '@ephemera/ceph-rbd-napi';
import {
  GLANCE_TYPES,
  GlanceNotFoundError,
  NoUsablePlanError,
  formatPlan,
  type BackendKind,
  type DeclinedOption,
  type GlanceClient,
  type GlanceImage,
  type ImageResolver,
  type Plan,
  type ResolveTarget,
} from '@ephemera/glance';
import {
  BACKEND_REGISTRY,
  isImageBackendError,
  isUuid,
  sleep,
  type BackendRegistry,
  type CreateResult,
  type DiskRef,
  type DiskSource,
  type ImageBackend,
} from '@ephemera/image-backend';
import { connect as libvirtConnect, isLibvirtError, type Connection, type Domain, type DomainState } from '@ephemera/libvirt-napi';
import { domainXml, iotuneFromFlavor, type DiskSpec, type IoTune } from '@ephemera/libvirt-xml';
import { defineCephSecret, findCephSecret, readCephKey, undefineSecret } from './ceph.js';
import type { DriverConfig } from './config.js';
import { DriverError, isDriverError } from './errors.js';
import type { DriverEvents, SpawnStep } from './events.js';
import { processAlive, type Journal, type JournalEntry, type JournalOp, type JournalResource } from './journal.js';
import type { Logger } from './logger.js';
import { KeyedMutex } from './mutex.js';
import { sourceImageFromGlance } from './source-image.js';
import { DRIVER_TYPES } from './tokens.js';

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;

/** Ceph facts the driver needs (null members when no backend uses Ceph). */
export interface CephContext {
  cluster: Cluster | null;
  fsid: string | null;
  user: string;
  secretUuid: string | null;
  keyringPath: string | null;
}

/** Flavor of an instance. */
export interface Flavor {
  /** Name (informational, recorded in the domain metadata). */
  name?: string;
  vcpus: number;
  memoryMiB: number;
  /** Root disk size; 0 = the image's virtual size. */
  rootGiB: number;
  /** Blank ephemeral disk (`disk.local`); 0 = none. */
  ephemeralGiB?: number;
  /** Blank swap disk (`disk.swap`); 0 = none. */
  swapMiB?: number;
  /**
   * Nova-style extra specs (`quota:disk_total_iops_sec`, ...), override `qos.*`. Limits QEMU would
   * refuse at start (a `*_max` without its base or below it) are INVALID_ARGUMENT before anything exists.
   */
  extraSpecs?: Record<string, string>;
}

/** What to spawn. */
export interface SpawnRequest {
  /** Instance UUID, or `{ uuid, name }`. */
  instance: string | { uuid: string; name?: string };
  /** Glance image id. */
  image: string;
  flavor: Flavor;
  /** Backend for this instance (default `images.type`); must be loaded. */
  backend?: string;
  /** Always import a full copy (never clone). Default: `!images.useCowImages`. */
  forceImport?: boolean;
  signal?: AbortSignal;
}

/** A disk of an instance. */
export interface InstanceDisk {
  name: string;
  target: string;
  sizeBytes: number;
}

/** How the root disk was made. */
export interface RootDiskReport {
  method: CreateResult['method'];
  reason?: string;
  durationMs: number;
  sizeBytes: number;
  bytesWritten?: number;
  /** The resolver's chosen plan and everything it declined. */
  plan: { method: string; handler: string; location: string; declined: DeclinedOption[] };
}

/** The driver's record of an instance (`<instancesPath>/<uuid>/instance.json`). */
export interface InstanceRecord {
  uuid: string;
  name: string;
  domainName: string;
  imageId: string;
  backend: string;
  flavor: Flavor;
  disks: InstanceDisk[];
  consolePath: string;
  createdAt: string;
  rootDisk: RootDiskReport;
}

/** An instance with its current libvirt state. */
export interface InstanceInfo extends InstanceRecord {
  /** libvirt state, or `missing` when the domain is gone. */
  state: DomainState | 'missing';
  stateReason?: string;
}

/** What spawn returns. */
export interface SpawnResult {
  instance: InstanceInfo;
  rootDisk: RootDiskReport;
  /** Milliseconds per step. */
  timings: Partial<Record<SpawnStep, number>>;
  totalMs: number;
}

/** One operation reconcile finished. */
export interface ReconcileAction {
  opId: string;
  op: string;
  instance: string;
  action: 'rolled-back' | 'completed' | 'skipped' | 'failed';
  removed: string[];
  error?: string;
}

/**
 * An operation the journal holds that has not finished: `in-progress` (its process, maybe this
 * one, is alive), `interrupted` (its process is gone: `reconcile()` finishes it) or
 * `rollback-failed` (its rollback left something: `reconcile()` retries).
 */
export interface PendingOperation {
  opId: string;
  op: string;
  instance: string;
  status: 'in-progress' | 'interrupted' | 'rollback-failed';
  pid: number;
  startedAt: string;
  /** Steps that finished, in order. */
  done: string[];
  /** The instance's name, image and backend, when the operation recorded them (spawn). */
  name?: string;
  imageId?: string;
  backend?: string;
  /** libvirt state of the instance's domain, or `missing`. */
  state: DomainState | 'missing';
}

/** What gc found. */
export interface GcReport {
  /** Disks whose instance has no domain and no operation in progress. */
  orphans: { backend: string; id: string; instance: string; name: string; sizeBytes: number }[];
  /** Ids removed (when `remove` was asked). */
  removed: string[];
}

/** Result of a snapshot. */
export interface SnapshotResult {
  imageId: string;
  method: 'direct' | 'upload';
  durationMs: number;
  location?: string;
}

function targetDev(bus: DriverConfig['disk']['bus'], index: number): string {
  const prefix = bus === 'virtio' ? 'vd' : bus === 'ide' ? 'hd' : 'sd';
  return prefix + String.fromCharCode(97 + index);
}

function errMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The driver. Build it with `createDriver()`. */
@injectable()
export class Driver {
  readonly #emitter = new EventEmitter<DriverEvents>();
  readonly #mutex = new KeyedMutex();
  readonly #active = new Set<string>();
  readonly #log: Logger;
  #closed = false;

  constructor(
    @inject(DRIVER_TYPES.Config) readonly config: DriverConfig,
    @inject(DRIVER_TYPES.Logger) logger: Logger,
    @inject(DRIVER_TYPES.Journal) readonly journal: Journal,
    @inject(DRIVER_TYPES.Libvirt) libvirt: Connection,
    @inject(BACKEND_REGISTRY) readonly backends: BackendRegistry,
    @inject(GLANCE_TYPES.GlanceClient) readonly glance: GlanceClient,
    @inject(GLANCE_TYPES.ImageResolver) readonly resolver: ImageResolver,
    @inject(DRIVER_TYPES.CephContext) readonly ceph: CephContext,
  ) {
    this.#log = logger;
    this.#conn = libvirt;
    this.#watch(libvirt);
  }

  // ------------------------------------------------------------------ libvirt connection

  #conn: Connection;
  #connLost = false;
  #reconnecting: Promise<Connection> | undefined;

  #watch(conn: Connection): void {
    conn.on('lifecycle', (ev) => {
      const uuid = this.#uuidOfDomain(ev.domain.name);
      if (uuid) this.#emitter.emit('lifecycle', { instance: uuid, state: ev.event, detail: ev.detail });
    });
    conn.on('close', (reason) => {
      if (conn !== this.#conn) return;
      this.#connLost = true;
      this.#log.warn({ reason }, 'libvirt connection lost: reconnecting on next use');
    });
  }

  /** The current libvirt connection (replaced after libvirtd restarts). */
  get libvirt(): Connection {
    return this.#conn;
  }

  /** A live libvirt connection: reconnects (once, shared) when libvirtd closed the last one. */
  async #lv(): Promise<Connection> {
    if (this.#closed) throw new DriverError('INVALID_ARGUMENT', 'the driver is closed');
    if (!this.#connLost && !this.#conn.closed && this.#conn.isAlive()) return this.#conn;
    this.#reconnecting ??= (async () => {
      try {
        const old = this.#conn;
        // libvirtd restarting refuses connections for a moment: retry, with backoff, for up to
        // timeouts.libvirtReconnectMs (so a spawn's rollback still reaches it).
        const deadline = performance.now() + this.config.timeouts.libvirtReconnectMs;
        let fresh: Connection;
        for (let delay = 100; ; delay = Math.min(delay * 2, 1_000)) {
          try {
            fresh = await libvirtConnect(this.config.libvirt.uri);
            break;
          } catch (err) {
            if (this.#closed || performance.now() + delay > deadline) throw err;
            this.#log.debug({ err: errMessage(err) }, 'libvirt reconnect failed: retrying');
            await sleep(delay);
          }
        }
        this.#conn = fresh;
        this.#connLost = false;
        this.#watch(fresh);
        await old.close().catch(() => undefined);
        this.#log.info('reconnected to libvirt');
        return fresh;
      } finally {
        this.#reconnecting = undefined;
      }
    })();
    return this.#reconnecting;
  }

  // ------------------------------------------------------------------ events

  /** Subscribes to `step`, `progress` or `lifecycle` events. */
  on<K extends keyof DriverEvents>(event: K, listener: (...args: DriverEvents[K]) => void): this {
    this.#emitter.on(event, listener as never);
    return this;
  }

  /** Unsubscribes. */
  off<K extends keyof DriverEvents>(event: K, listener: (...args: DriverEvents[K]) => void): this {
    this.#emitter.off(event, listener as never);
    return this;
  }

  /** The pino logger. */
  get logger(): Logger {
    return this.#log;
  }

  // ------------------------------------------------------------------ names and records

  /** The libvirt domain name of an instance. */
  domainName(uuid: string): string {
    return `${this.config.libvirt.domainPrefix}${uuid.toLowerCase()}`;
  }

  #uuidOfDomain(name: string): string | undefined {
    const p = this.config.libvirt.domainPrefix;
    if (!name.startsWith(p)) return undefined;
    const rest = name.slice(p.length);
    return isUuid(rest) ? rest.toLowerCase() : undefined;
  }

  #instanceDir(uuid: string): string {
    return join(this.config.instancesPath, uuid.toLowerCase());
  }

  /** Path of the instance's serial console log. */
  consolePath(uuid: string): string {
    return join(this.#instanceDir(uuid), 'console.log');
  }

  async #readRecord(uuid: string): Promise<InstanceRecord | undefined> {
    try {
      return JSON.parse(await readFile(join(this.#instanceDir(uuid), 'instance.json'), 'utf8')) as InstanceRecord;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  async #writeRecord(rec: InstanceRecord): Promise<void> {
    const dir = this.#instanceDir(rec.uuid);
    await mkdir(dir, { recursive: true });
    const tmp = join(dir, `.instance.json.${process.pid}`);
    await writeFile(tmp, JSON.stringify(rec, null, 2) + '\n', { mode: 0o600 });
    await rename(tmp, join(dir, 'instance.json'));
  }

  async #domain(uuid: string): Promise<Domain | undefined> {
    try {
      return await (await this.#lv()).lookupByUUID(uuid);
    } catch (err) {
      if (isLibvirtError(err, 'VIR_ERR_NO_DOMAIN')) return undefined;
      throw err;
    }
  }

  async #info(rec: InstanceRecord): Promise<InstanceInfo> {
    const dom = await this.#domain(rec.uuid);
    if (!dom) return { ...rec, state: 'missing' };
    const st = await dom.state();
    return { ...rec, state: st.state, stateReason: String(st.reason) };
  }

  /** Every instance this driver has a record of, with its libvirt state. */
  async list(): Promise<InstanceInfo[]> {
    let names: string[];
    try {
      names = await readdir(this.config.instancesPath);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    const out: InstanceInfo[] = [];
    for (const n of names.filter(isUuid).sort()) {
      const rec = await this.#readRecord(n);
      if (rec) out.push(await this.#info(rec));
    }
    return out.sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  }

  /**
   * Unfinished operations in the journal (read-only: nothing is rolled back), so that callers can
   * show instances whose spawn is in flight or was interrupted before it wrote the record.
   */
  async operations(): Promise<PendingOperation[]> {
    const out: PendingOperation[] = [];
    for (const e of await this.journal.entries()) {
      if (e.end === 'committed' || e.end === 'rolled-back') continue;
      const alive = this.#active.has(e.opId) || (e.pid !== process.pid && processAlive(e.pid));
      const dom = await this.#domain(e.instance);
      const st = dom ? (await dom.state().catch(() => undefined))?.state : undefined;
      const str = (k: string): string | undefined => (typeof e.data[k] === 'string' ? (e.data[k] as string) : undefined);
      const name = str('name');
      const imageId = str('imageId');
      const backend = str('backend');
      out.push({
        opId: e.opId,
        op: e.op,
        instance: e.instance,
        status: e.end === 'rollback-failed' ? 'rollback-failed' : alive ? 'in-progress' : 'interrupted',
        pid: e.pid,
        startedAt: e.startedAt,
        done: [...e.done],
        ...(name !== undefined ? { name } : {}),
        ...(imageId !== undefined ? { imageId } : {}),
        ...(backend !== undefined ? { backend } : {}),
        state: dom ? (st ?? 'missing') : 'missing',
      });
    }
    return out;
  }

  /** One instance by UUID or name; `INSTANCE_NOT_FOUND` when unknown, `INVALID_ARGUMENT` when a name is ambiguous. */
  async get(ref: string): Promise<InstanceInfo> {
    if (isUuid(ref)) {
      const rec = await this.#readRecord(ref.toLowerCase());
      if (rec) return this.#info(rec);
    }
    const all = await this.list();
    const byName = all.filter((i) => i.name === ref || i.domainName === ref);
    if (byName.length === 1) return byName[0]!;
    if (byName.length > 1) throw new DriverError('INVALID_ARGUMENT', `${byName.length} instances are named ${JSON.stringify(ref)}: use the UUID`);
    throw new DriverError('INSTANCE_NOT_FOUND', `no instance ${JSON.stringify(ref)}`, { instance: ref });
  }

  /** The serial console log of an instance (what the guest printed on COM1). */
  async console(ref: string): Promise<string> {
    const inst = await this.get(ref);
    try {
      return await readFile(inst.consolePath, 'latin1');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return '';
      throw err;
    }
  }

  // ------------------------------------------------------------------ images

  /** The resolver target of this node for a backend. */
  resolveTarget(backend: string = this.config.images.type): ResolveTarget {
    const kind: BackendKind = backend === 'rbd' || backend === 'qcow2' || backend === 'lvm' ? backend : 'lvm';
    const target: ResolveTarget = { backend: kind, fileDirs: [], allowHttp: true };
    if (kind === 'rbd' && this.ceph.fsid) target.ceph = { fsid: this.ceph.fsid, pools: [...this.config.images.rbd.imagePools] };
    return target;
  }

  /** The resolver's plan for an image on a backend. */
  async plan(imageId: string, backend?: string, signal?: AbortSignal): Promise<Plan> {
    try {
      return await this.resolver.resolve(imageId, this.resolveTarget(backend), signal ? { signal } : {});
    } catch (err) {
      throw this.#imageError(imageId, err);
    }
  }

  /** The plan as text: the chosen option, the alternatives and every declined option with its reason. */
  async explain(imageId: string, backend?: string): Promise<string> {
    return formatPlan(await this.plan(imageId, backend));
  }

  #imageError(imageId: string, err: unknown): unknown {
    if (err instanceof GlanceNotFoundError) return new DriverError('IMAGE_NOT_FOUND', `Glance image ${imageId} not found`, { cause: err });
    if (err instanceof NoUsablePlanError) return new DriverError('IMAGE_UNUSABLE', err.message, { cause: err });
    return err;
  }

  #backend(name: string): ImageBackend {
    try {
      return this.backends.get(name);
    } catch (err) {
      if (isImageBackendError(err, 'UNKNOWN_BACKEND')) {
        throw new DriverError('INVALID_ARGUMENT', `backend ${name} is not loaded (loaded: ${this.backends.names().join(', ')}); add it to images.enabled`, { cause: err });
      }
      throw err;
    }
  }

  // ------------------------------------------------------------------ spawn

  /**
   * Spawns an instance: resolve the image, create the root disk (clone or import), the blank
   * ephemeral and swap disks, the ceph secret (once), define and start the domain, wait until it
   * runs. Journaled; on failure everything created is removed. Returns timings per step and how
   * the root disk was made.
   */
  async spawn(req: SpawnRequest): Promise<SpawnResult> {
    const inst = typeof req.instance === 'string' ? { uuid: req.instance } : req.instance;
    if (!inst || typeof inst.uuid !== 'string' || !isUuid(inst.uuid)) throw new DriverError('INVALID_ARGUMENT', 'instance must be a UUID');
    const uuid = inst.uuid.toLowerCase();
    const f = req.flavor;
    const int = (v: unknown, name: string, min: number, max: number): number => {
      if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
        throw new DriverError('INVALID_ARGUMENT', `flavor.${name} must be an integer in ${min}..${max}`, { instance: uuid });
      }
      return v;
    };
    if (!f || typeof f !== 'object') throw new DriverError('INVALID_ARGUMENT', 'flavor is required', { instance: uuid });
    int(f.vcpus, 'vcpus', 1, 256);
    int(f.memoryMiB, 'memoryMiB', 16, 4 * 1024 * 1024);
    int(f.rootGiB, 'rootGiB', 0, 65536);
    int(f.ephemeralGiB ?? 0, 'ephemeralGiB', 0, 65536);
    int(f.swapMiB ?? 0, 'swapMiB', 0, 1024 * 1024);
    // Glance image ids are UUIDs: anything else is a usage error, found before the journal.
    if (typeof req.image !== 'string' || !isUuid(req.image)) {
      throw new DriverError('INVALID_ARGUMENT', `image ${JSON.stringify(req.image)} is not a Glance image id (a UUID)`, { instance: uuid });
    }
    const name = inst.name ?? uuid;
    if (typeof name !== 'string' || name.length === 0 || name.length > 255 || /[\0-\x1f\x7f]/.test(name)) {
      throw new DriverError('INVALID_ARGUMENT', 'instance name must be 1..255 printable characters', { instance: uuid });
    }
    const backend = this.#backend(req.backend ?? this.config.images.type);
    // Validate everything that goes into the domain XML (names, flavor, extra specs) before any
    // disk exists: the XML builders refuse what they cannot express safely.
    try {
      const probe: DiskSource = { type: 'file', path: '/dev/null', format: 'raw' };
      const disks: InstanceDisk[] = [{ name: 'disk', target: targetDev(this.config.disk.bus, 0), sizeBytes: 0 }];
      this.#domainXml(uuid, name, this.domainName(uuid), req.image, f, disks, [probe], backend);
    } catch (err) {
      throw new DriverError('INVALID_ARGUMENT', `invalid instance definition: ${errMessage(err)}`, { instance: uuid, cause: err });
    }
    return this.#mutex.run(uuid, () => this.#spawn(uuid, name, req, backend));
  }

  async #spawn(uuid: string, name: string, req: SpawnRequest, backend: ImageBackend): Promise<SpawnResult> {
    const log = this.#log.child({ instance: uuid, op: 'spawn' });
    const started = performance.now();
    const timings: Partial<Record<SpawnStep, number>> = {};
    // Before anything (Glance, the journal, a disk): a backend that cannot serve disks now (e.g. no
    // Ceph monitor: QEMU could not open an RBD disk and the domain start would hang) fails fast.
    if (backend.checkAvailable) {
      try {
        await backend.checkAvailable();
      } catch (err) {
        throw new DriverError('SPAWN_FAILED', `spawn of ${uuid}: backend ${backend.name} is unavailable: ${errMessage(err)}`, { instance: uuid, cause: err });
      }
    }
    await this.#checkSecret(backend);
    if (await this.#readRecord(uuid)) throw new DriverError('INSTANCE_EXISTS', `instance ${uuid} exists`, { instance: uuid });
    if (await this.#domain(uuid)) throw new DriverError('INSTANCE_EXISTS', `a libvirt domain with UUID ${uuid} exists`, { instance: uuid });
    for (const b of this.backends.all()) {
      if ((await b.list({ instance: uuid })).length > 0) {
        throw new DriverError('INSTANCE_EXISTS', `backend ${b.name} already holds disks of ${uuid} (run gc or reconcile)`, { instance: uuid });
      }
    }
    // Aborted before anything exists (e.g. while the CLI reconciled): nothing to journal or undo.
    if (req.signal?.aborted) throw new DriverError('ABORTED', `spawn of ${uuid} aborted before it began (${errMessage(req.signal.reason)})`, { instance: uuid });
    const flavor = req.flavor;
    const domainName = this.domainName(uuid);
    const op = await this.journal.begin('spawn', uuid, { name, imageId: req.image, backend: backend.name, domainName, flavor });
    this.#active.add(op.opId);
    this.#emitter.emit('lifecycle', { instance: uuid, state: 'spawning' });
    log.info({ opId: op.opId, image: req.image, backend: backend.name, flavor }, 'spawn: begin');

    const signal = req.signal ? AbortSignal.any([req.signal, AbortSignal.timeout(this.config.timeouts.importMs)]) : AbortSignal.timeout(this.config.timeouts.importMs);
    const step = async <T>(s: SpawnStep, fn: () => Promise<T>): Promise<T> => {
      const t = performance.now();
      this.#emitter.emit('step', { instance: uuid, op: 'spawn', step: s, status: 'started' });
      try {
        // The caller's abort only: timeouts.importMs bounds the image transfer, not the steps.
        req.signal?.throwIfAborted();
        const v = await fn();
        const ms = performance.now() - t;
        timings[s] = ms;
        this.#emitter.emit('step', { instance: uuid, op: 'spawn', step: s, status: 'done', durationMs: ms });
        log.info({ step: s, durationMs: Math.round(ms) }, `spawn: ${s} done`);
        return v;
      } catch (err) {
        this.#emitter.emit('step', { instance: uuid, op: 'spawn', step: s, status: 'failed', durationMs: performance.now() - t, error: errMessage(err) });
        throw err;
      }
    };

    try {
      // 1. the image and the plan
      const { image, plan } = await step('resolve', async () => {
        let image: GlanceImage;
        try {
          image = await this.glance.getImage(req.image, { signal });
        } catch (err) {
          throw this.#imageError(req.image, err);
        }
        if (image.status !== 'active') throw new DriverError('IMAGE_UNUSABLE', `Glance image ${req.image} is ${image.status}, not active`, { instance: uuid });
        // No backend can make a disk of nothing: refuse before anything is created.
        if (image.size === 0) throw new DriverError('IMAGE_UNUSABLE', `Glance image ${req.image} is empty (0 bytes)`, { instance: uuid });
        const plan = await this.plan(req.image, backend.name, signal);
        return { image, plan };
      });
      const virtualSize = image.virtual_size ?? image.size ?? 0;
      const rootBytes = flavor.rootGiB > 0 ? flavor.rootGiB * GiB : undefined;
      if (rootBytes !== undefined && rootBytes < virtualSize) {
        throw new DriverError('IMAGE_UNUSABLE', `flavor root disk (${flavor.rootGiB} GiB) is smaller than the image (${virtualSize} bytes)`, { instance: uuid });
      }

      // 2. instance directory (console log, record)
      req.signal?.throwIfAborted();
      const dir = this.#instanceDir(uuid);
      await op.intent('instance-dir', { kind: 'file', path: dir });
      await mkdir(dir, { recursive: true, mode: 0o750 });
      await op.done('instance-dir');

      // 3. root disk
      const root: DiskRef = { instance: uuid, name: 'disk' };
      const forceImport = req.forceImport ?? !this.config.images.useCowImages;
      const made = await step('root-disk', async () => {
        await op.intent('root-disk', { kind: 'disk', backend: backend.name, name: 'disk' });
        const r = await backend.createFromImage(root, sourceImageFromGlance(this.glance, image), {
          ...(rootBytes !== undefined ? { sizeBytes: rootBytes } : {}),
          forceImport,
          signal,
          onProgress: (e) => this.#emitter.emit('progress', { ...e, instance: uuid, op: 'spawn', step: 'root-disk' }),
        });
        await op.done('root-disk', { method: r.method, ...(r.reason ? { reason: r.reason } : {}) });
        return r;
      });
      const disks: InstanceDisk[] = [{ name: 'disk', target: targetDev(this.config.disk.bus, 0), sizeBytes: made.sizeBytes }];

      // 4. blank disks
      const blank = async (s: SpawnStep, diskName: string, bytes: number): Promise<void> => {
        await step(s, async () => {
          await op.intent(s, { kind: 'disk', backend: backend.name, name: diskName });
          const r = await backend.createBlank({ instance: uuid, name: diskName }, bytes, { signal });
          await op.done(s);
          disks.push({ name: diskName, target: targetDev(this.config.disk.bus, disks.length), sizeBytes: r.sizeBytes });
        });
      };
      if ((flavor.ephemeralGiB ?? 0) > 0) await blank('ephemeral-disk', 'disk.local', flavor.ephemeralGiB! * GiB);
      if ((flavor.swapMiB ?? 0) > 0) await blank('swap-disk', 'disk.swap', flavor.swapMiB! * MiB);

      // 5. disk sources and the ceph secret
      const sources: DiskSource[] = [];
      for (const d of disks) sources.push(await backend.diskSource({ instance: uuid, name: d.name }));
      const secretUuids = [...new Set(sources.flatMap((s) => (s.type === 'network' && s.auth ? [s.auth.secretUuid] : [])))];
      if (secretUuids.length > 0) {
        await step('secret', async () => {
          for (const su of secretUuids) await this.#ensureSecret(op, su);
        });
      }

      // 6. define
      const xml = this.#domainXml(uuid, name, domainName, req.image, flavor, disks, sources, backend);
      await step('define', async () => {
        await op.intent('define', { kind: 'domain', uuid, name: domainName });
        await (await this.#lv()).defineXML(xml);
        await op.done('define');
      });

      // 7. start and wait until it runs
      await step('start', async () => {
        await op.intent('start', { kind: 'domain', uuid, name: domainName });
        await this.#start(uuid, req.signal);
        await op.done('start');
      });
      // An abort that came while the domain started still undoes the spawn (the caller gave up).
      req.signal?.throwIfAborted();

      const record: InstanceRecord = {
        uuid,
        name,
        domainName,
        imageId: req.image,
        backend: backend.name,
        flavor,
        disks,
        consolePath: this.consolePath(uuid),
        createdAt: new Date().toISOString(),
        rootDisk: {
          method: made.method,
          ...(made.reason ? { reason: made.reason } : {}),
          durationMs: made.durationMs,
          sizeBytes: made.sizeBytes,
          ...(made.bytesWritten !== undefined ? { bytesWritten: made.bytesWritten } : {}),
          plan: { method: plan.chosen.method, handler: plan.chosen.handler, location: plan.chosen.location, declined: plan.declined },
        },
      };
      await this.#writeRecord(record);
      await op.end('committed');
      const totalMs = performance.now() - started;
      log.info({ rootDisk: made.method, reason: made.reason, totalMs: Math.round(totalMs) }, 'spawn: committed');
      this.#emitter.emit('lifecycle', { instance: uuid, state: 'running' });
      return { instance: await this.#info(record), rootDisk: record.rootDisk, timings, totalMs };
    } catch (err) {
      const aborted = req.signal?.aborted === true;
      // info, not warn: the error itself reaches the caller (the CLI prints it); at warn it was printed twice.
      log.info({ err: errMessage(err), aborted }, aborted ? 'spawn aborted: rolling back' : 'spawn failed: rolling back');
      // Aborted while libvirtd may still be starting the domain: the rollback lets that start
      // finish before destroying it, as reconcile does for a dead driver's start.
      const failures = await this.#rollback(uuid, op.intents, log, [], false, aborted);
      await op.end(failures.length ? 'rollback-failed' : 'rolled-back', errMessage(err)).catch(() => undefined);
      this.#emitter.emit('lifecycle', { instance: uuid, state: 'error', detail: errMessage(err) });
      if (aborted) {
        throw new DriverError(failures.length ? 'ROLLBACK_FAILED' : 'ABORTED', `spawn of ${uuid} aborted (${errMessage(req.signal!.reason)})${failures.length ? `; rollback left: ${failures.join('; ')} (run reconcile)` : '; rolled back'}`, { instance: uuid, cause: err });
      }
      if (isDriverError(err)) throw err;
      // The backend's inspector refused the image's content: the image is unusable (exit 6), not a driver failure.
      if (isImageBackendError(err, 'UNSAFE_IMAGE')) {
        throw new DriverError('IMAGE_UNUSABLE', `unusable image ${req.image}: ${errMessage(err)} (${String((err as { reason?: unknown }).reason ?? 'unsafe')})${failures.length ? `; rollback left: ${failures.join('; ')}` : ''}`, { instance: uuid, cause: err });
      }
      throw new DriverError('SPAWN_FAILED', `spawn of ${uuid} failed: ${errMessage(err)}${failures.length ? `; rollback left: ${failures.join('; ')}` : ''}`, { instance: uuid, cause: err });
    } finally {
      this.#active.delete(op.opId);
    }
  }

  #domainXml(uuid: string, name: string, domainName: string, imageId: string, flavor: Flavor, disks: InstanceDisk[], sources: DiskSource[], backend: ImageBackend): string {
    const q = this.config.qos;
    const specs: Record<string, string | number> = {};
    if (q.totalBytesSec) specs['quota:disk_total_bytes_sec'] = q.totalBytesSec;
    if (q.totalIopsSec) specs['quota:disk_total_iops_sec'] = q.totalIopsSec;
    if (q.readBytesSec) specs['quota:disk_read_bytes_sec'] = q.readBytesSec;
    if (q.writeBytesSec) specs['quota:disk_write_bytes_sec'] = q.writeBytesSec;
    Object.assign(specs, flavor.extraSpecs ?? {});
    const iotune: IoTune = iotuneFromFlavor(specs);
    const hasTune = Object.keys(iotune).length > 0;
    const discard = backend.capabilities.discard ? this.config.disk.discard : 'ignore';
    const diskSpecs: DiskSpec[] = disks.map((d, i) => ({
      source: sources[i]!,
      driver: { cache: this.config.disk.cacheMode, discard },
      target: { dev: d.target, bus: this.config.disk.bus },
      ...(hasTune ? { iotune } : {}),
    }));
    return domainXml({
      type: this.config.libvirt.virtType,
      name: domainName,
      uuid,
      memoryMiB: flavor.memoryMiB,
      vcpus: flavor.vcpus,
      os: { arch: 'x86_64', machine: this.config.libvirt.machineType, boot: ['hd'] },
      features: { acpi: true, apic: true },
      onPoweroff: 'destroy',
      onReboot: 'restart',
      onCrash: 'destroy',
      disks: diskSpecs,
      serialLogPath: this.consolePath(uuid),
      memballoon: false,
      metadata: { instanceId: uuid, displayName: name, imageId, ...(flavor.name ? { flavor: flavor.name } : {}) },
    });
  }

  /**
   * Checks, before anything is journaled or created, that the ceph secret an RBD disk will name
   * is usable: libvirt holds it under the configured UUID, or it can be defined (no other UUID for
   * the user, a keyring with the user's key). Otherwise the spawn fails with INVALID_CONFIG.
   */
  async #checkSecret(backend: ImageBackend): Promise<void> {
    const c = this.ceph;
    if (backend.name !== 'rbd' || !c.secretUuid) return;
    const existing = await findCephSecret(await this.#lv(), c.secretUuid, c.user);
    if (existing === c.secretUuid) return;
    if (existing !== undefined) {
      throw new DriverError('INVALID_CONFIG', `libvirt already has a ceph secret for client.${c.user} with UUID ${existing}; set images.rbd.secretUuid to it`);
    }
    if (!c.keyringPath) throw new DriverError('INVALID_CONFIG', `libvirt has no ceph secret ${c.secretUuid} and there is no keyring for client.${c.user} to define it: set images.rbd.keyring`);
    // Only proves the key can be read (the error names the file, never the key); zeroed at once.
    (await readCephKey(c.keyringPath, c.user)).fill(0);
  }

  /** Defines the ceph secret when libvirt does not have it (journaled, so rollback can remove it). */
  async #ensureSecret(op: JournalOp, uuid: string): Promise<void> {
    const c = this.ceph;
    const existing = await findCephSecret(await this.#lv(), uuid, c.user);
    if (existing === uuid) return;
    if (existing !== undefined) {
      throw new DriverError('INVALID_CONFIG', `libvirt already has a ceph secret for client.${c.user} with UUID ${existing}; set images.rbd.secretUuid to it`);
    }
    if (!c.keyringPath) throw new DriverError('INVALID_CONFIG', `no keyring for client.${c.user}: set images.rbd.keyring`);
    await op.intent('secret', { kind: 'secret', uuid, created: true });
    await defineCephSecret(await this.#lv(), uuid, c.user, c.keyringPath);
    await op.done('secret');
    this.#log.info({ instance: op.instance, secretUuid: uuid }, `defined libvirt ceph secret for client.${c.user}`);
  }

  /**
   * Starts a defined domain and waits for libvirt's `started` event (or a running state). An
   * abort of `signal` stops the wait at once (ABORTED); libvirtd's start goes on, and the caller's
   * rollback settles it (`#settleStart`) before destroying the domain.
   */
  async #start(uuid: string, signal?: AbortSignal): Promise<void> {
    const dom = await this.#domain(uuid);
    if (!dom) throw new DriverError('INSTANCE_NOT_FOUND', `no domain ${uuid}`, { instance: uuid });
    const ms = this.config.timeouts.startMs;
    const ac = new AbortController();
    const started = (await this.#lv()).waitForLifecycle((e) => e.domain.uuid === uuid && e.event === 'started', { timeoutMs: ms, signal: ac.signal });
    started.catch(() => undefined);
    // virDomainCreate blocks until QEMU is up, and QEMU waits for its disks (an unreachable Ceph
    // monitor: minutes). Past the deadline the half-started domain is destroyed, which makes
    // create() return.
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      dom.destroy().catch(() => undefined);
    }, ms);
    let onAbort: (() => void) | undefined;
    try {
      signal?.throwIfAborted();
      const run = (async () => {
        await dom.create();
        await started;
      })();
      if (signal) {
        run.catch(() => undefined);
        await Promise.race([
          run,
          new Promise<never>((_, reject) => {
            onAbort = () => reject(signal.reason);
            signal.addEventListener('abort', onAbort, { once: true });
          }),
        ]);
      } else {
        await run;
      }
    } catch (err) {
      ac.abort();
      if (signal?.aborted) throw new DriverError('ABORTED', `start of domain ${uuid} aborted`, { instance: uuid, cause: err });
      const st = timedOut ? undefined : await dom.state().catch(() => undefined);
      if (st && (st.state === 'running' || (st.state === 'shutoff' && st.reason === 'shutdown'))) return;
      const code = timedOut || (err as Error).name === 'TimeoutError' ? 'TIMEOUT' : 'SPAWN_FAILED';
      throw new DriverError(code, `domain ${uuid} did not start${timedOut ? ` within ${ms} ms` : ''}: ${errMessage(err)}`, { instance: uuid, cause: err });
    } finally {
      if (onAbort) signal?.removeEventListener('abort', onAbort);
      // Aborted: the rollback's #settleStart bounds the wait for libvirtd's start instead.
      clearTimeout(timer);
    }
  }

  /**
   * Undoes the resources of `intents` in reverse order; returns what could not be removed.
   * `orphaned`: the operation's process died (reconcile), so work it handed to others may still land.
   */
  async #rollback(instance: string, intents: { step: string; resource: JournalResource }[], log: Logger, removed: string[] = [], orphaned = false, settle = orphaned): Promise<string[]> {
    const failures: string[] = [];
    const seen = new Set<string>();
    for (const { resource } of [...intents].reverse()) {
      const key = JSON.stringify(resource);
      if (seen.has(key)) continue;
      seen.add(key);
      try {
        const what = await this.#undo(instance, resource, orphaned, settle);
        if (what) removed.push(what);
      } catch (err) {
        failures.push(`${resource.kind}: ${errMessage(err)}`);
        log.error({ resource, err: errMessage(err) }, 'rollback step failed');
      }
    }
    return failures;
  }

  /**
   * Waits, up to `timeouts.startMs`, while libvirt is still starting `dom` (paused, `starting_up`:
   * a dead driver's `virDomainCreate` goes on in libvirtd). QEMU opens its disks then, and a QEMU
   * killed in the middle of opening an RBD image can leave a Ceph zombie watch (tracker 58120)
   * that keeps the disk busy until an operator clears it. For `orphaned` rollbacks and the
   * rollback of an aborted spawn (whose start goes on in libvirtd); a start the driver gave up on
   * at its deadline was destroyed on purpose.
   */
  async #settleStart(dom: Domain, instance: string): Promise<void> {
    const t0 = Date.now();
    const deadline = t0 + this.config.timeouts.startMs;
    for (;;) {
      const st = await dom.state().catch(() => undefined);
      if (st?.state !== 'paused' || st.reason !== 'starting_up') break;
      if (Date.now() >= deadline) {
        this.#log.warn({ instance, waitedMs: Date.now() - t0 }, 'domain still starting after timeouts.startMs; destroying it anyway');
        return;
      }
      await sleep(50);
    }
    if (Date.now() - t0 >= 50) this.#log.info({ instance, waitedMs: Date.now() - t0 }, 'waited for libvirt to finish starting the domain before destroying it');
  }

  async #undo(instance: string, r: JournalResource, orphaned = false, settle = orphaned): Promise<string | undefined> {
    switch (r.kind) {
      case 'domain': {
        const dom = await this.#domain(r.uuid);
        if (!dom) return undefined;
        if (settle) await this.#settleStart(dom, instance);
        if (await dom.isActive()) {
          await dom.destroy().catch((err) => {
            if (!isLibvirtError(err, 'VIR_ERR_OPERATION_INVALID')) throw err;
          });
        }
        await dom.undefine().catch((err) => {
          if (!isLibvirtError(err, 'VIR_ERR_NO_DOMAIN')) throw err;
        });
        return `domain ${r.name}`;
      }
      case 'disk': {
        const b = this.#backend(r.backend);
        const gone = await b.remove({ instance: instance, name: r.name }, { busyTimeoutMs: this.config.timeouts.diskBusyMs });
        return gone ? `disk ${r.backend}:${r.name}` : undefined;
      }
      case 'secret': {
        if (!r.created) return undefined;
        if (await this.#secretInUse(r.uuid)) return undefined;
        return (await undefineSecret(await this.#lv(), r.uuid)) ? `secret ${r.uuid}` : undefined;
      }
      case 'file':
        await rm(r.path, { recursive: true, force: true });
        return `files ${r.path}`;
      case 'glance-image':
        try {
          await this.#glanceUploadSettled(r.id);
          await this.glance.deleteImage(r.id);
          return `glance image ${r.id}`;
        } catch (err) {
          if (err instanceof GlanceNotFoundError) return undefined;
          throw err;
        }
      case 'direct-snapshot': {
        const b = this.#backend(r.backend);
        if (!b.removeDirectSnapshot) {
          this.#log.warn({ instance, resource: r }, `backend ${r.backend} cannot undo a direct snapshot: check its storage for ${r.imageId}`);
          return undefined;
        }
        // Orphaned (reconcile): the killed process's snapshot creation may still complete (the
        // RBD backend waits for it, bounded; known failure 12 in e2e/reliability/README.md).
        const ok = await b.removeDirectSnapshot({ instance, name: r.disk }, { imageId: r.imageId, busyTimeoutMs: this.config.timeouts.diskBusyMs, orphaned });
        return ok ? `direct snapshot ${r.disk}:${r.imageId}` : undefined;
      }
      case 'snapshot': {
        const b = this.#backend(r.backend);
        const ok = await b.removeSnapshot({ instance: instance, name: r.disk }, r.name).catch((err) => {
          if (isImageBackendError(err, 'NOT_FOUND')) return false;
          throw err;
        });
        return ok ? `snapshot ${r.disk}@${r.name}` : undefined;
      }
    }
  }

  /**
   * Waits (up to `glance.timeoutMs`) while Glance is still storing data for the image (`saving`,
   * `uploading`, `importing`): deleting it then loses the race with the upload, which writes its
   * data to the store after the record is gone (a killed driver's upload that Glance is still
   * finishing). Past the bound the image is deleted anyway (Glance leaves `saving` images behind
   * after its own crash). A missing image returns at once.
   */
  async #glanceUploadSettled(imageId: string): Promise<void> {
    const deadline = Date.now() + this.config.glance.timeoutMs;
    for (;;) {
      let status: string;
      try {
        status = (await this.glance.getImage(imageId)).status;
      } catch (err) {
        if (err instanceof GlanceNotFoundError) return;
        throw err;
      }
      if (status !== 'saving' && status !== 'uploading' && status !== 'importing') return;
      if (Date.now() >= deadline) {
        this.#log.warn({ imageId, status }, `Glance image ${imageId} is still ${status} after ${this.config.glance.timeoutMs} ms: deleting it anyway`);
        return;
      }
      await sleep(100);
    }
  }

  async #secretInUse(uuid: string): Promise<boolean> {
    for (const d of await (await this.#lv()).listAllDomains()) {
      const xml = await d.xml().catch(() => '');
      if (xml.includes(uuid)) return true;
    }
    return false;
  }

  // ------------------------------------------------------------------ destroy

  /** Powers the instance off and removes its domain, disks and files. Journaled (a crash is completed by reconcile). */
  async destroy(ref: string): Promise<{ removed: string[]; durationMs: number }> {
    const uuid = await this.#resolveUuid(ref);
    return this.#mutex.run(uuid, async () => {
      const t = performance.now();
      const log = this.#log.child({ instance: uuid, op: 'destroy' });
      const rec = await this.#readRecord(uuid);
      const dom = await this.#domain(uuid);
      const disks: { backend: string; name: string }[] = [];
      for (const b of this.backends.all()) for (const d of await b.list({ instance: uuid })) disks.push({ backend: b.name, name: d.disk.name });
      if (!rec && !dom && disks.length === 0) throw new DriverError('INSTANCE_NOT_FOUND', `no instance ${uuid}`, { instance: uuid });
      const op = await this.journal.begin('destroy', uuid, { domainName: this.domainName(uuid) });
      this.#active.add(op.opId);
      try {
        await op.intent('files', { kind: 'file', path: this.#instanceDir(uuid) });
        for (const d of disks) await op.intent('disk', { kind: 'disk', backend: d.backend, name: d.name });
        await op.intent('domain', { kind: 'domain', uuid, name: dom?.name() ?? this.domainName(uuid) });
        const removed: string[] = [];
        const failures = await this.#rollback(uuid, op.intents, log, removed);
        if (failures.length) {
          await op.end('rollback-failed', failures.join('; '));
          throw new DriverError('ROLLBACK_FAILED', `destroy of ${uuid} left: ${failures.join('; ')} (reconcile retries)`, { instance: uuid });
        }
        await op.end('committed');
        this.#emitter.emit('lifecycle', { instance: uuid, state: 'destroyed' });
        log.info({ removed }, 'destroyed');
        return { removed, durationMs: performance.now() - t };
      } finally {
        this.#active.delete(op.opId);
      }
    });
  }

  async #resolveUuid(ref: string): Promise<string> {
    if (isUuid(ref)) return ref.toLowerCase();
    return (await this.get(ref)).uuid;
  }

  // ------------------------------------------------------------------ power

  /** Powers an instance off: ACPI shutdown waiting up to `timeouts.stopMs`, then destroy (`graceful: false` destroys at once). */
  async powerOff(ref: string, opts: { graceful?: boolean } = {}): Promise<void> {
    const uuid = await this.#resolveUuid(ref);
    await this.#mutex.run(uuid, async () => {
      const dom = await this.#requireDomain(uuid);
      if (!(await dom.isActive())) return;
      if (opts.graceful !== false) {
        const stopped = (await this.#lv()).waitForLifecycle((e) => e.domain.uuid === uuid && e.event === 'stopped', { timeoutMs: this.config.timeouts.stopMs });
        stopped.catch(() => undefined);
        try {
          await dom.shutdown();
          await stopped;
          return;
        } catch {
          // fall through to destroy
        }
      }
      await dom.destroy().catch((err) => {
        if (!isLibvirtError(err, 'VIR_ERR_OPERATION_INVALID')) throw err;
      });
    });
  }

  /** Starts a stopped instance and waits until it runs. */
  async powerOn(ref: string): Promise<void> {
    const uuid = await this.#resolveUuid(ref);
    await this.#mutex.run(uuid, async () => {
      const dom = await this.#requireDomain(uuid);
      if (await dom.isActive()) return;
      await this.#start(uuid);
    });
  }

  /** Reboots: `hard` (default) powers off and starts again; `soft` asks the guest (ACPI). */
  async reboot(ref: string, opts: { type?: 'soft' | 'hard' } = {}): Promise<void> {
    const uuid = await this.#resolveUuid(ref);
    await this.#mutex.run(uuid, async () => {
      const dom = await this.#requireDomain(uuid);
      if (opts.type === 'soft' && (await dom.isActive())) {
        await dom.reboot();
        return;
      }
      if (await dom.isActive()) {
        await dom.destroy().catch((err) => {
          if (!isLibvirtError(err, 'VIR_ERR_OPERATION_INVALID')) throw err;
        });
      }
      await this.#start(uuid);
    });
  }

  async #requireDomain(uuid: string): Promise<Domain> {
    const dom = await this.#domain(uuid);
    if (!dom) throw new DriverError('INSTANCE_NOT_FOUND', `instance ${uuid} has no domain`, { instance: uuid });
    return dom;
  }

  // ------------------------------------------------------------------ resize

  /** Grows the root disk to `rootGiB` (and tells a running guest with `blockResize`). */
  async resizeRootDisk(ref: string, rootGiB: number): Promise<{ sizeBytes: number }> {
    const uuid = await this.#resolveUuid(ref);
    if (!Number.isInteger(rootGiB) || rootGiB < 1) throw new DriverError('INVALID_ARGUMENT', 'rootGiB must be a positive integer', { instance: uuid });
    return this.#mutex.run(uuid, async () => {
      const rec = await this.#readRecord(uuid);
      if (!rec) throw new DriverError('INSTANCE_NOT_FOUND', `no instance ${uuid}`, { instance: uuid });
      const backend = this.#backend(rec.backend);
      const disk = { instance: uuid, name: 'disk' };
      const bytes = rootGiB * GiB;
      const cur = await backend.info(disk);
      if (bytes < cur.sizeBytes) throw new DriverError('INVALID_ARGUMENT', `root disk is ${cur.sizeBytes} bytes: shrinking is not supported`, { instance: uuid });
      if (bytes === cur.sizeBytes) return { sizeBytes: bytes };
      if (!backend.capabilities.resize) throw new DriverError('UNSUPPORTED', `backend ${backend.name} cannot resize`, { instance: uuid });
      const op = await this.journal.begin('resize', uuid, { from: cur.sizeBytes, to: bytes });
      try {
        const dom = await this.#domain(uuid);
        await backend.resize(disk, bytes);
        if (dom && (await dom.isActive())) await dom.blockResize(rec.disks[0]!.target, bytes);
        rec.disks[0]!.sizeBytes = bytes;
        rec.flavor = { ...rec.flavor, rootGiB };
        await this.#writeRecord(rec);
        await op.end('committed');
        return { sizeBytes: bytes };
      } catch (err) {
        await op.end('rolled-back', errMessage(err)).catch(() => undefined);
        throw err;
      }
    });
  }

  // ------------------------------------------------------------------ snapshot

  /**
   * Snapshots the instance's root disk into a new Glance image named `name`: in place when the
   * backend can (`directSnapshot`, RBD: the new image's location points at the snapshot in the
   * same cluster), otherwise by uploading the disk's bytes. Journaled: a failure or crash deletes
   * the half-made Glance image.
   */
  async snapshot(ref: string, name: string): Promise<SnapshotResult> {
    const uuid = await this.#resolveUuid(ref);
    if (typeof name !== 'string' || name.length === 0 || name.length > 255) throw new DriverError('INVALID_ARGUMENT', 'snapshot name must be 1..255 characters');
    return this.#mutex.run(uuid, async () => {
      const t = performance.now();
      const log = this.#log.child({ instance: uuid, op: 'snapshot' });
      const rec = await this.#readRecord(uuid);
      if (!rec) throw new DriverError('INSTANCE_NOT_FOUND', `no instance ${uuid}`, { instance: uuid });
      const backend = this.#backend(rec.backend);
      const disk = { instance: uuid, name: 'disk' };
      const imageId = crypto.randomUUID();
      const op = await this.journal.begin('snapshot', uuid, { name, imageId });
      this.#active.add(op.opId);
      try {
        const direct = backend.capabilities.directSnapshot;
        // Journaled before the Glance image, so that undoing (reverse order) deletes the Glance
        // image first (Glance removes the RBD data of a location it has) and then whatever the
        // backend left (its temporary snapshot, the image it was writing for Glance).
        if (direct) await op.intent('direct-snapshot', { kind: 'direct-snapshot', backend: backend.name, disk: disk.name, imageId });
        await op.intent('image', { kind: 'glance-image', id: imageId });
        await this.glance.createImage({
          id: imageId,
          name,
          disk_format: 'raw',
          container_format: 'bare',
          instance_uuid: uuid,
          image_type: 'snapshot',
          ...(rec.imageId ? { base_image_ref: rec.imageId } : {}),
        });
        let location: string | undefined;
        if (direct) {
          const r = await backend.directSnapshot(disk, { imageId });
          location = r.url;
          await this.glance.addLocation(imageId, r.url, r.metadata ? { ...r.metadata } : {});
        } else {
          await this.#uploadDisk(backend, disk, imageId, op);
        }
        await this.glance.waitForStatus(imageId, ['active'], { timeoutMs: 120_000 });
        await op.end('committed');
        log.info({ imageId, method: direct ? 'direct' : 'upload' }, 'snapshot done');
        return { imageId, method: direct ? 'direct' : 'upload', durationMs: performance.now() - t, ...(location ? { location } : {}) };
      } catch (err) {
        const failures = await this.#rollback(uuid, op.intents, log);
        await op.end(failures.length ? 'rollback-failed' : 'rolled-back', errMessage(err)).catch(() => undefined);
        throw err;
      } finally {
        this.#active.delete(op.opId);
      }
    });
  }

  async #uploadDisk(backend: ImageBackend, disk: DiskRef, imageId: string, op: JournalOp): Promise<void> {
    const { QemuImg, rbdLocation } = await import('@ephemera/qemu-img-wrapper');
    const src = await backend.diskSource(disk);
    const tmpDir = join(this.config.stateDir, 'tmp');
    await mkdir(tmpDir, { recursive: true });
    const tmp = join(tmpDir, `${imageId}.raw`);
    await op.intent('upload-file', { kind: 'file', path: tmp });
    const q = new QemuImg();
    try {
      if (src.type === 'network') {
        const [pool, ...rest] = src.name.split('/');
        await q.convert(
          rbdLocation({ pool: pool!, image: rest.join('/'), user: this.ceph.user, confPath: this.config.images.rbd.cephConf }),
          tmp,
          { sourceFormat: 'raw', targetFormat: 'raw', untrusted: false },
        );
      } else {
        await q.convert(src.path, tmp, { sourceFormat: src.format, targetFormat: 'raw', untrusted: false });
      }
      const { createReadStream } = await import('node:fs');
      await this.glance.upload(imageId, createReadStream(tmp, { highWaterMark: 4 * MiB }));
    } finally {
      await rm(tmp, { force: true });
    }
  }

  // ------------------------------------------------------------------ reconcile and gc

  /**
   * Finishes every operation a crashed process left in the journal: a spawn or snapshot is rolled
   * back (its disks, domain, secret, files, Glance image, direct-snapshot RBD data removed), a
   * destroy is completed. Operations of live processes (and of this one) are skipped. Then stale
   * files in `<stateDir>/tmp` (of no unfinished operation) are removed.
   */
  async reconcile(): Promise<ReconcileAction[]> {
    const out: ReconcileAction[] = [];
    for (const e of await this.journal.entries()) {
      if (e.end === 'committed' || e.end === 'rolled-back') {
        // Finished, but the process died before deleting the file.
        await this.journal.remove(e);
        continue;
      }
      if (this.#active.has(e.opId) || (e.pid !== process.pid && processAlive(e.pid) && e.end === undefined)) {
        out.push({ opId: e.opId, op: e.op, instance: e.instance, action: 'skipped', removed: [] });
        continue;
      }
      out.push(await this.#mutex.run(e.instance, () => this.#reconcileOne(e)));
    }
    await this.#sweepTmp();
    return out;
  }

  /**
   * Removes files in `<stateDir>/tmp` that belong to no unfinished operation (a journaled `file`
   * intent): what a killed process's upload left, possibly written after its operation was
   * rolled back. The directory is listed before the journal is read, and an operation journals
   * its temp file before creating it, so a file of an operation in progress is always kept.
   */
  async #sweepTmp(): Promise<string[]> {
    const dir = join(this.config.stateDir, 'tmp');
    let names: string[];
    try {
      names = await readdir(dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    if (names.length === 0) return [];
    const keep = new Set<string>();
    for (const e of await this.journal.entries()) for (const { resource } of e.intents) if (resource.kind === 'file') keep.add(resource.path);
    const removed: string[] = [];
    for (const n of names) {
      const path = join(dir, n);
      if (keep.has(path)) continue;
      await rm(path, { recursive: true, force: true });
      removed.push(path);
    }
    if (removed.length) this.#log.info({ removed }, `reconcile: removed ${removed.length} stale temp file(s)`);
    return removed;
  }

  async #reconcileOne(e: JournalEntry): Promise<ReconcileAction> {
    const log = this.#log.child({ instance: e.instance, op: 'reconcile', opId: e.opId });
    const removed: string[] = [];
    let failures: string[] = [];
    if (e.op === 'destroy') {
      // Finish the whole destroy, not only what was journaled: a crash before the `domain` intent
      // (or a disk's, or even the `files` one) was written must not leave the domain or the
      // instance's files. Reverse order: the domain (by UUID) goes first, then every disk of the
      // instance in every backend, then the files.
      const sweep: { step: string; resource: JournalResource }[] = [{ step: 'sweep', resource: { kind: 'file', path: this.#instanceDir(e.instance) } }];
      const listFailures: string[] = [];
      for (const b of this.backends.all()) {
        try {
          for (const d of await b.list({ instance: e.instance })) sweep.push({ step: 'sweep', resource: { kind: 'disk', backend: b.name, name: d.disk.name } });
        } catch (err) {
          listFailures.push(`disks of ${b.name}: ${errMessage(err)}`);
        }
      }
      sweep.push({ step: 'sweep', resource: { kind: 'domain', uuid: e.instance, name: String(e.data.domainName ?? this.domainName(e.instance)) } });
      failures = [...listFailures, ...(await this.#rollback(e.instance, [...e.intents, ...sweep], log, removed, true))];
    } else if (e.op === 'spawn' || e.op === 'snapshot') {
      failures = await this.#rollback(e.instance, e.intents, log, removed, true);
      if (e.op === 'spawn') {
        // A spawn may have crashed between an action and its intent being read back: sweep
        // whatever carries the instance's name too (disks of its backend, a domain with its UUID).
        const sweep: JournalResource[] = [{ kind: 'domain', uuid: e.instance, name: String(e.data.domainName ?? '') }];
        const bname = typeof e.data.backend === 'string' ? e.data.backend : undefined;
        const b = bname ? this.#tryBackend(bname) : undefined;
        if (b) for (const d of await b.list({ instance: e.instance })) sweep.push({ kind: 'disk', backend: b.name, name: d.disk.name });
        failures.push(...(await this.#rollback(e.instance, sweep.map((resource) => ({ step: "sweep", resource })), log, removed)));
      }
    }
    if (failures.length === 0) await this.journal.remove(e);
    const action: ReconcileAction = {
      opId: e.opId,
      op: e.op,
      instance: e.instance,
      action: failures.length ? 'failed' : e.op === 'destroy' ? 'completed' : 'rolled-back',
      removed,
      ...(failures.length ? { error: failures.join('; ') } : {}),
    };
    log.info({ action: action.action, removed }, `reconcile: ${e.op} ${action.action}`);
    return action;
  }

  #tryBackend(name: string): ImageBackend | undefined {
    try {
      return this.backends.get(name);
    } catch {
      return undefined;
    }
  }

  /**
   * Finds disks (in every loaded backend) whose instance has no libvirt domain, no record and no
   * operation in progress. Reports them; removes them when `remove` is true (only those of
   * `instances` when given).
   */
  async gc(opts: { remove?: boolean; instances?: string[] } = {}): Promise<GcReport> {
    const pending = new Set((await this.journal.entries()).map((e) => e.instance));
    const only = opts.instances ? new Set(opts.instances.map((s) => s.toLowerCase())) : undefined;
    const report: GcReport = { orphans: [], removed: [] };
    for (const b of this.backends.all()) {
      for (const d of await b.list()) {
        const inst = d.disk.instance.toLowerCase();
        if (only && !only.has(inst)) continue;
        if (pending.has(inst) || this.#mutex.busy(inst)) continue;
        if (await this.#domain(inst)) continue;
        if (await this.#readRecord(inst)) continue;
        report.orphans.push({ backend: b.name, id: d.id, instance: inst, name: d.disk.name, sizeBytes: d.sizeBytes });
      }
    }
    if (opts.remove) {
      for (const o of report.orphans) {
        await this.#mutex.run(o.instance, async () => {
          if (await this.#domain(o.instance)) return;
          if (await this.#backend(o.backend).remove({ instance: o.instance, name: o.name }, { busyTimeoutMs: this.config.timeouts.diskBusyMs })) report.removed.push(o.id);
        });
      }
    }
    return report;
  }

  // ------------------------------------------------------------------ lifecycle of the driver

  /** Closes libvirt, the backends and Ceph. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.backends.close?.().catch(() => undefined);
    await this.#conn.close().catch(() => undefined);
    await this.ceph.cluster?.close().catch(() => undefined);
  }
}

