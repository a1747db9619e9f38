/**
 * The hypervisor driver: a facade over collaborators with one job each (the libvirt session, the
 * instance store, the spawn workflow, the compensator, the reconciler), composed by inversify in
 * `container.ts`. It keeps the per-instance operations that are a few lines each (destroy, power,
 * resize, snapshot), every one journaled before it acts.
 */
import { mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { inject, injectable } from 'inversify';
import { GLANCE_TYPES, formatPlan, type GlanceClient, type ImageResolver, type Plan, type ResolveTarget } from '@ephemera/glance';
import { BACKEND_REGISTRY, isUuid, type BackendRegistry, type DiskRef, type ImageBackend } from '@ephemera/image-backend';
import { isLibvirtError, type Connection } from '@ephemera/libvirt-napi';
import { Compensator } from './compensator.js';
import type { DriverConfig } from './config.js';
import { DriverError } from './errors.js';
import type { DriverEvents } from './events.js';
import { DriverEventBus, InFlight } from './in-flight.js';
import { InstanceStore } from './instance-store.js';
import type { Journal, JournalOp } from './journal.js';
import { LibvirtSession } from './libvirt-session.js';
import type { Logger } from './logger.js';
import { Reconciler } from './reconciler.js';
import { SpawnWorkflow } from './spawn.js';
import { DRIVER_TYPES } from './tokens.js';
import type { CephContext, GcReport, InstanceInfo, PendingOperation, ReconcileAction, SnapshotResult, SpawnRequest, SpawnResult } from './types.js';
import { GiB, MiB, errMessage, requireBackend } from './util.js';

// The public types lived here before the split; kept importable from this module too.
export type {
  CephContext,
  Flavor,
  GcReport,
  InstanceDisk,
  InstanceInfo,
  InstanceRecord,
  PendingOperation,
  ReconcileAction,
  RootDiskReport,
  SnapshotResult,
  SpawnRequest,
  SpawnResult,
} from './types.js';

/** The driver. Build it with `createDriver()`. */
@injectable()
export class Driver {
  readonly #log: Logger;
  readonly #session: LibvirtSession;
  readonly #store: InstanceStore;
  readonly #events: DriverEventBus;
  readonly #inFlight: InFlight;
  readonly #spawn: SpawnWorkflow;
  readonly #compensator: Compensator;
  readonly #reconciler: Reconciler;
  #closed = false;

  constructor(
    @inject(DRIVER_TYPES.Config) readonly config: DriverConfig,
    @inject(DRIVER_TYPES.Logger) logger: Logger,
    @inject(DRIVER_TYPES.Journal) readonly journal: Journal,
    @inject(BACKEND_REGISTRY) readonly backends: BackendRegistry,
    @inject(GLANCE_TYPES.GlanceClient) readonly glance: GlanceClient,
    @inject(GLANCE_TYPES.ImageResolver) readonly resolver: ImageResolver,
    @inject(DRIVER_TYPES.CephContext) readonly ceph: CephContext,
    @inject(LibvirtSession) session: LibvirtSession,
    @inject(InstanceStore) store: InstanceStore,
    @inject(DriverEventBus) events: DriverEventBus,
    @inject(InFlight) inFlight: InFlight,
    @inject(SpawnWorkflow) spawn: SpawnWorkflow,
    @inject(Compensator) compensator: Compensator,
    @inject(Reconciler) reconciler: Reconciler,
  ) {
    this.#log = logger;
    this.#session = session;
    this.#store = store;
    this.#events = events;
    this.#inFlight = inFlight;
    this.#spawn = spawn;
    this.#compensator = compensator;
    this.#reconciler = reconciler;
  }

  /** The current libvirt connection (replaced after libvirtd restarts). */
  get libvirt(): Connection {
    return this.#session.current;
  }

  // ------------------------------------------------------------------ events

  /** Subscribes to `step`, `progress` or `lifecycle` events. */
  on<K extends keyof DriverEvents>(event: K, listener: (...args: DriverEvents[K]) => void): this {
    this.#events.on(event, listener as never);
    return this;
  }

  /** Unsubscribes. */
  off<K extends keyof DriverEvents>(event: K, listener: (...args: DriverEvents[K]) => void): this {
    this.#events.off(event, listener as never);
    return this;
  }

  /** The pino logger. */
  get logger(): Logger {
    return this.#log;
  }

  // ------------------------------------------------------------------ names and records

  /** The libvirt domain name of an instance. */
  domainName(uuid: string): string {
    return this.#store.domainName(uuid);
  }

  /** Path of the instance's serial console log. */
  consolePath(uuid: string): string {
    return this.#store.consolePath(uuid);
  }

  /** Every instance this driver has a record of, with its libvirt state. */
  async list(): Promise<InstanceInfo[]> {
    const out: InstanceInfo[] = [];
    for (const n of await this.#store.uuids()) {
      const rec = await this.#store.read(n);
      if (rec) out.push(await this.#session.info(rec));
    }
    return out.sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  }

  /**
   * Unfinished operations in the journal (read-only: nothing is rolled back), so that callers can
   * show instances whose spawn is in flight or was interrupted before it wrote the record.
   */
  operations(): Promise<PendingOperation[]> {
    return this.#reconciler.operations();
  }

  /** One instance by UUID or name; `INSTANCE_NOT_FOUND` when unknown, `INVALID_ARGUMENT` when a name is ambiguous. */
  async get(ref: string): Promise<InstanceInfo> {
    if (isUuid(ref)) {
      const rec = await this.#store.read(ref.toLowerCase());
      if (rec) return this.#session.info(rec);
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
    return this.#spawn.resolveTarget(backend);
  }

  /** The resolver's plan for an image on a backend. */
  plan(imageId: string, backend?: string, signal?: AbortSignal): Promise<Plan> {
    return this.#spawn.plan(imageId, backend, signal);
  }

  /** The plan as text: the chosen option, the alternatives and every declined option with its reason. */
  async explain(imageId: string, backend?: string): Promise<string> {
    return formatPlan(await this.plan(imageId, backend));
  }

  // ------------------------------------------------------------------ spawn

  /**
   * Spawns an instance: resolve the image, create the root disk (clone or import), the blank
   * ephemeral and swap disks, the ceph secret (once), define and start the domain, wait until it
   * runs. Journaled; on failure everything created is removed. Returns timings per step and how
   * the root disk was made.
   */
  spawn(req: SpawnRequest): Promise<SpawnResult> {
    return this.#spawn.spawn(req);
  }

  // ------------------------------------------------------------------ destroy

  /** Powers the instance off and removes its domain, disks and files. Journaled (a crash is completed by reconcile). */
  async destroy(ref: string): Promise<{ removed: string[]; durationMs: number }> {
    const uuid = await this.#resolveUuid(ref);
    return this.#inFlight.mutex.run(uuid, async () => {
      const t = performance.now();
      const log = this.#log.child({ instance: uuid, op: 'destroy' });
      const rec = await this.#store.read(uuid);
      const dom = await this.#session.domain(uuid);
      const disks: { backend: string; name: string }[] = [];
      for (const b of this.backends.all()) for (const d of await b.list({ instance: uuid })) disks.push({ backend: b.name, name: d.disk.name });
      if (!rec && !dom && disks.length === 0) throw new DriverError('INSTANCE_NOT_FOUND', `no instance ${uuid}`, { instance: uuid });
      const op = await this.journal.begin('destroy', uuid, { domainName: this.domainName(uuid) });
      this.#inFlight.active.add(op.opId);
      try {
        await op.intent('files', { kind: 'file', path: this.#store.dir(uuid) });
        for (const d of disks) await op.intent('disk', { kind: 'disk', backend: d.backend, name: d.name });
        await op.intent('domain', { kind: 'domain', uuid, name: dom?.name() ?? this.domainName(uuid) });
        const removed: string[] = [];
        const failures = await this.#compensator.rollback(uuid, op.intents, log, removed);
        if (failures.length) {
          await op.end('rollback-failed', failures.join('; '));
          throw new DriverError('ROLLBACK_FAILED', `destroy of ${uuid} left: ${failures.join('; ')} (reconcile retries)`, { instance: uuid });
        }
        await op.end('committed');
        this.#events.emit('lifecycle', { instance: uuid, state: 'destroyed' });
        log.info({ removed }, 'destroyed');
        return { removed, durationMs: performance.now() - t };
      } finally {
        this.#inFlight.active.delete(op.opId);
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
    await this.#inFlight.mutex.run(uuid, async () => {
      const dom = await this.#session.requireDomain(uuid);
      if (!(await dom.isActive())) return;
      if (opts.graceful !== false) {
        const stopped = (await this.#session.connection()).waitForLifecycle((e) => e.domain.uuid === uuid && e.event === 'stopped', { timeoutMs: this.config.timeouts.stopMs });
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
    await this.#inFlight.mutex.run(uuid, async () => {
      const dom = await this.#session.requireDomain(uuid);
      if (await dom.isActive()) return;
      await this.#session.start(uuid);
    });
  }

  /** Reboots: `hard` (default) powers off and starts again; `soft` asks the guest (ACPI). */
  async reboot(ref: string, opts: { type?: 'soft' | 'hard' } = {}): Promise<void> {
    const uuid = await this.#resolveUuid(ref);
    await this.#inFlight.mutex.run(uuid, async () => {
      const dom = await this.#session.requireDomain(uuid);
      if (opts.type === 'soft' && (await dom.isActive())) {
        await dom.reboot();
        return;
      }
      if (await dom.isActive()) {
        await dom.destroy().catch((err) => {
          if (!isLibvirtError(err, 'VIR_ERR_OPERATION_INVALID')) throw err;
        });
      }
      await this.#session.start(uuid);
    });
  }

  // ------------------------------------------------------------------ resize

  /** Grows the root disk to `rootGiB` (and tells a running guest with `blockResize`). */
  async resizeRootDisk(ref: string, rootGiB: number): Promise<{ sizeBytes: number }> {
    const uuid = await this.#resolveUuid(ref);
    if (!Number.isInteger(rootGiB) || rootGiB < 1) throw new DriverError('INVALID_ARGUMENT', 'rootGiB must be a positive integer', { instance: uuid });
    return this.#inFlight.mutex.run(uuid, async () => {
      const rec = await this.#store.read(uuid);
      if (!rec) throw new DriverError('INSTANCE_NOT_FOUND', `no instance ${uuid}`, { instance: uuid });
      const backend = requireBackend(this.backends, rec.backend);
      const disk = { instance: uuid, name: 'disk' };
      const bytes = rootGiB * GiB;
      const cur = await backend.info(disk);
      if (bytes < cur.sizeBytes) throw new DriverError('INVALID_ARGUMENT', `root disk is ${cur.sizeBytes} bytes: shrinking is not supported`, { instance: uuid });
      if (bytes === cur.sizeBytes) return { sizeBytes: bytes };
      if (!backend.capabilities.resize) throw new DriverError('UNSUPPORTED', `backend ${backend.name} cannot resize`, { instance: uuid });
      const op = await this.journal.begin('resize', uuid, { from: cur.sizeBytes, to: bytes });
      try {
        const dom = await this.#session.domain(uuid);
        await backend.resize(disk, bytes);
        if (dom && (await dom.isActive())) await dom.blockResize(rec.disks[0]!.target, bytes);
        rec.disks[0]!.sizeBytes = bytes;
        rec.flavor = { ...rec.flavor, rootGiB };
        await this.#store.write(rec);
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
    return this.#inFlight.mutex.run(uuid, async () => {
      const t = performance.now();
      const log = this.#log.child({ instance: uuid, op: 'snapshot' });
      const rec = await this.#store.read(uuid);
      if (!rec) throw new DriverError('INSTANCE_NOT_FOUND', `no instance ${uuid}`, { instance: uuid });
      const backend = requireBackend(this.backends, rec.backend);
      const disk = { instance: uuid, name: 'disk' };
      const imageId = crypto.randomUUID();
      const op = await this.journal.begin('snapshot', uuid, { name, imageId });
      this.#inFlight.active.add(op.opId);
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
        const failures = await this.#compensator.rollback(uuid, op.intents, log);
        await op.end(failures.length ? 'rollback-failed' : 'rolled-back', errMessage(err)).catch(() => undefined);
        throw err;
      } finally {
        this.#inFlight.active.delete(op.opId);
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
  reconcile(): Promise<ReconcileAction[]> {
    return this.#reconciler.reconcile();
  }

  /**
   * Finds disks (in every loaded backend) whose instance has no libvirt domain, no record and no
   * operation in progress. Reports them; removes them when `remove` is true (only those of
   * `instances` when given).
   */
  gc(opts: { remove?: boolean; instances?: string[] } = {}): Promise<GcReport> {
    return this.#reconciler.gc(opts);
  }

  // ------------------------------------------------------------------ lifecycle of the driver

  /** Closes libvirt, the backends and Ceph. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#session.markClosed();
    await this.backends.close?.().catch(() => undefined);
    await this.#session.close();
    await this.ceph.cluster?.close().catch(() => undefined);
  }
}
