/**
 * The hypervisor driver: a facade over collaborators with one job each (the libvirt session, the
 * instance store, the spawn workflow, the compensator, the reconciler), composed by inversify in
 * `container.ts`. It keeps the per-instance operations that are a few lines each (destroy, power,
 * resize, snapshot), every one journaled before it acts.
 */
import { explainGolden, gcGoldenCache, type CacheGcEntry, type CacheGcOptions } from './golden-cache.js';
import { readFile } from 'node:fs/promises';
import { inject, injectable } from 'inversify';
import {
  GLANCE_TYPES,
  formatPlan,
  type GlanceClient,
  type ImageResolver,
  type Plan,
  type ResolveTarget,
} from '@ephemera/glance';
import {
  BACKEND_REGISTRY,
  KEY_PROVIDER,
  isUuid,
  type BackendRegistry,
  type KeyProvider,
  type OwnerStamp,
} from '@ephemera/image-backend';
import { isLibvirtError, type Connection, type JobStats } from '@ephemera/libvirt-napi';
import { adoptDisks, type AdoptResult } from './adopt.js';
import { EvacuationWorkflow, type EvacuateOptions, type EvacuateResult } from './evacuation.js';
import { Flattener } from './flattener.js';
import { Compensator } from './compensator.js';
import type { DriverConfig } from './config.js';
import { RBD_ENCRYPTED_NOTE, encryptionResources, unsupportedEncrypted } from './encryption-ops.js';
import { DriverError } from './errors.js';
import type { DriverEvents } from './events.js';
import { DriverEventBus, InFlight } from './in-flight.js';
import { InstanceStore } from './instance-store.js';
import type { Journal } from './journal.js';
import { LibvirtSession } from './libvirt-session.js';
import type { Logger } from './logger.js';
import {
  MigrationWorkflow,
  type MigrateOptions,
  type MigrateResult,
  type MigrationDestination,
  type MigrationTarget,
} from './migration.js';
import type { BlockMigrationDisk } from './migration-qcow2.js';
import { Reconciler } from './reconciler.js';
import { uploadDisk } from './upload-disk.js';
import { SpawnWorkflow } from './spawn.js';
import { DRIVER_TYPES } from './tokens.js';
import type {
  CephContext,
  GcOptions,
  GcReport,
  InstanceInfo,
  InstanceRecord,
  PendingOperation,
  ReconcileAction,
  SnapshotResult,
  SpawnRequest,
  SpawnResult,
} from './types.js';
import { GiB, errMessage, ownerStamp, ownership, requireBackend } from './util.js';

// The public types lived here before the split; kept importable from this module too.
export type {
  CephContext,
  Flavor,
  GcDisk,
  GcOptions,
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
export class Driver implements MigrationDestination {
  readonly #log: Logger;
  readonly #session: LibvirtSession;
  readonly #store: InstanceStore;
  readonly #events: DriverEventBus;
  readonly #inFlight: InFlight;
  readonly #spawn: SpawnWorkflow;
  readonly #compensator: Compensator;
  readonly #reconciler: Reconciler;
  readonly #migration: MigrationWorkflow;
  readonly #evacuation: EvacuationWorkflow;
  readonly #flattener: Flattener;
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
    @inject(MigrationWorkflow) migration: MigrationWorkflow,
    @inject(EvacuationWorkflow) evacuation: EvacuationWorkflow,
    @inject(KEY_PROVIDER) private readonly keys: KeyProvider,
    @inject(Flattener) flattener: Flattener,
  ) {
    this.#log = logger;
    this.#session = session;
    this.#store = store;
    this.#events = events;
    this.#inFlight = inFlight;
    this.#spawn = spawn;
    this.#compensator = compensator;
    this.#reconciler = reconciler;
    this.#migration = migration;
    this.#evacuation = evacuation;
    this.#flattener = flattener;
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

  /** This host's id (`host.id`): the owner of every disk this driver creates. */
  get hostId(): string {
    return this.config.host.id;
  }

  /** What this driver records as the owner of the disks it creates or takes over (`setOwner`). */
  ownerStamp(): OwnerStamp {
    return ownerStamp(this.config);
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
    if (byName.length > 1)
      throw new DriverError(
        'INVALID_ARGUMENT',
        `${byName.length} instances are named ${JSON.stringify(ref)}: use the UUID`,
      );
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
    const name = backend ?? this.config.images.type;
    const text = formatPlan(await this.plan(imageId, name));
    const golden = await explainGolden(requireBackend(this.backends, name), this.glance, imageId);
    return [text, ...(golden ? [golden] : []), ...(name === 'rbd' ? [RBD_ENCRYPTED_NOTE] : [])].join('\n');
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
      for (const b of this.backends.all())
        for (const d of await b.list({ instance: uuid }))
          if (ownership(d, this.config.host.id) !== 'other') disks.push({ backend: b.name, name: d.disk.name });
      if (!rec && !dom && disks.length === 0)
        throw new DriverError('INSTANCE_NOT_FOUND', `no instance ${uuid}`, { instance: uuid });
      const op = await this.journal.begin('destroy', uuid, { domainName: this.domainName(uuid) });
      this.#inFlight.active.add(op.opId);
      try {
        // Undone last (reverse order): the key and its secret go once no disk needs them.
        for (const r of await encryptionResources(this.#session, rec, uuid, this.keys.name)) await op.intent('key', r);
        await op.intent('files', { kind: 'file', path: this.#store.dir(uuid) });
        for (const d of disks) await op.intent('disk', { kind: 'disk', backend: d.backend, name: d.name });
        await op.intent('domain', { kind: 'domain', uuid, name: dom?.name() ?? this.domainName(uuid) });
        const removed: string[] = [];
        const failures = await this.#compensator.rollback(uuid, op.intents, log, removed);
        if (failures.length) {
          await op.end('rollback-failed', failures.join('; '));
          throw new DriverError(
            'ROLLBACK_FAILED',
            `destroy of ${uuid} left: ${failures.join('; ')} (reconcile retries)`,
            { instance: uuid },
          );
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
        const stopped = (await this.#session.connection()).waitForLifecycle(
          (e) => e.domain.uuid === uuid && e.event === 'stopped',
          { timeoutMs: this.config.timeouts.stopMs },
        );
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
    if (!Number.isInteger(rootGiB) || rootGiB < 1)
      throw new DriverError('INVALID_ARGUMENT', 'rootGiB must be a positive integer', { instance: uuid });
    return this.#inFlight.mutex.run(uuid, async () => {
      const rec = await this.#store.read(uuid);
      if (!rec) throw new DriverError('INSTANCE_NOT_FOUND', `no instance ${uuid}`, { instance: uuid });
      const backend = requireBackend(this.backends, rec.backend);
      if (rec.encryption) throw unsupportedEncrypted(uuid, 'resize');
      const disk = { instance: uuid, name: 'disk' };
      const bytes = rootGiB * GiB;
      const cur = await backend.info(disk);
      if (bytes < cur.sizeBytes)
        throw new DriverError('INVALID_ARGUMENT', `root disk is ${cur.sizeBytes} bytes: shrinking is not supported`, {
          instance: uuid,
        });
      if (bytes === cur.sizeBytes) return { sizeBytes: bytes };
      if (!backend.capabilities.resize)
        throw new DriverError('UNSUPPORTED', `backend ${backend.name} cannot resize`, { instance: uuid });
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
    if (typeof name !== 'string' || name.length === 0 || name.length > 255)
      throw new DriverError('INVALID_ARGUMENT', 'snapshot name must be 1..255 characters');
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
        // An encrypted disk's bytes are ciphertext: Glance gets the decrypted image, uploaded.
        const direct = backend.capabilities.directSnapshot && !rec.encryption;
        // Journaled before the Glance image, so that undoing (reverse order) deletes the Glance
        // image first (Glance removes the RBD data of a location it has) and then whatever the
        // backend left (its temporary snapshot, the image it was writing for Glance).
        if (direct)
          await op.intent('direct-snapshot', {
            kind: 'direct-snapshot',
            backend: backend.name,
            disk: disk.name,
            imageId,
          });
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
        let flattenPending = false;
        if (direct) {
          const deferFlatten = this.config.images.rbd.snapshotFlatten === 'background';
          const r = await backend.directSnapshot(disk, { imageId, deferFlatten });
          flattenPending = r.flattenPending === true;
          location = r.url;
          const meta = r.metadata ? { ...r.metadata } : {};
          await this.glance.addLocation(imageId, r.url, meta).catch(async (err: unknown) => {
            // Glance's own rbd user may not read the instances pool (the clone's parent): flat, it can.
            if (!flattenPending || !backend.finishDirectSnapshot) throw err;
            await backend.finishDirectSnapshot(disk, { imageId });
            flattenPending = false;
            await this.glance.addLocation(imageId, r.url, meta);
          });
        } else {
          const key = rec.encryption ? () => this.keys.getKey(rec.encryption!.keyId) : undefined;
          await uploadDisk(this.config, this.ceph, this.glance, { backend, disk, imageId, op, key });
        }
        await this.glance.waitForStatus(imageId, ['active'], { timeoutMs: 120_000 });
        await op.end('committed');
        // The Glance image is usable; its flatten (then the temporary snapshot's removal) follows.
        if (flattenPending)
          this.#flattener.enqueue({ instance: uuid, backend: backend.name, disk: disk.name, imageId });
        log.info({ imageId, method: direct ? 'direct' : 'upload', flattenPending }, 'snapshot done');
        return {
          imageId,
          method: direct ? 'direct' : 'upload',
          durationMs: performance.now() - t,
          ...(location ? { location } : {}),
          ...(flattenPending ? { flattenPending } : {}),
        };
      } catch (err) {
        const failures = await this.#compensator.rollback(uuid, op.intents, log);
        await op.end(failures.length ? 'rollback-failed' : 'rolled-back', errMessage(err)).catch(() => undefined);
        throw err;
      } finally {
        this.#inFlight.active.delete(op.opId);
      }
    });
  }

  // ------------------------------------------------------------------ live migration

  /**
   * Migrates a running instance live to another host (`opts.to`, that host's driver): the
   * destination defines the ceph secret and prepares, libvirt migrates peer-to-peer (persistent
   * there, undefined here; RBD: no disk copied; qcow2: the destination fetches the base into its
   * cache and libvirt copies only the overlays), then the record moves to the destination and this
   * host keeps nothing. Progress from the job statistics (`onProgress`); bounded by `timeoutMs`
   * and cancellable (`signal`): a failed or aborted migration (MIGRATION_FAILED, TIMEOUT, ABORTED)
   * leaves the instance running here with its record. LVM instances: UNSUPPORTED.
   * Journaled on both hosts (`migrate-out`, `migrate-in`).
   */
  async migrate(ref: string, opts: MigrateOptions): Promise<MigrateResult> {
    if (opts?.to === this) throw new DriverError('INVALID_ARGUMENT', 'the destination is this driver');
    return this.#migration.migrate(await this.#resolveUuid(ref), opts);
  }

  /** Destination side of {@link Driver.migrate} (Nova's pre_live_migration): called by the source's driver. */
  preLiveMigration(rec: InstanceRecord, from?: string, disks?: BlockMigrationDisk[]): Promise<MigrationTarget> {
    return this.#migration.preLiveMigration(rec, from, disks);
  }

  /**
   * Destination side of {@link Driver.migrate}, after libvirt's success: the record becomes this
   * host's. Resolves to the completed migration job's statistics here (downtime), when reported.
   */
  postLiveMigrationAtDestination(uuid: string): Promise<JobStats | undefined> {
    return this.#migration.postLiveMigrationAtDestination(uuid);
  }

  /** Destination side of {@link Driver.migrate}, after a failure or abort: undoes the preparation. */
  rollbackLiveMigrationAtDestination(uuid: string): Promise<void> {
    return this.#migration.rollbackLiveMigrationAtDestination(uuid);
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
   * Finds this host's disks (in every loaded backend) whose instance has no libvirt domain, no
   * record and no operation in progress. Reports them; removes them when `remove` is true (only
   * those of `instances` when given). Disks without owner are reported `unowned` (removed only
   * with `includeUnowned`); other hosts' disks are never removed (`allHosts` lists them).
   */
  gc(opts: GcOptions = {}): Promise<GcReport> {
    return this.#reconciler.gc(opts);
  }

  /**
   * `gc --cache`: removes golden images (cluster-wide conversions the RBD backend clones from)
   * whose Glance image is gone or has another checksum, or that no spawn used for `unusedSeconds`;
   * never one that still has clones.
   */
  gcCache(opts: CacheGcOptions = {}): Promise<CacheGcEntry[]> {
    const unusedSeconds = opts.unusedSeconds ?? this.config.images.rbd.goldenUnusedSeconds;
    return gcGoldenCache(this.backends.all(), this.glance, { unusedSeconds, ...(opts.dryRun ? { dryRun: true } : {}) });
  }

  // ------------------------------------------------------------------ many hosts

  /**
   * Takes over the disks of `instance` that host `fromHost` owns (a dead host's), with the
   * backends' `setOwner`: refused (`INSTANCE_STATE`) while a client that is not blocklisted has
   * one of them open. Idempotent. The instance's record and domain stay on the old host: without
   * them here, the adopted disks are this host's orphans (`gc` lists them, `gc --delete` removes them).
   */
  adopt(instance: string, opts: { fromHost: string }): Promise<AdoptResult> {
    const key = isUuid(instance) ? instance.toLowerCase() : instance;
    return this.#inFlight.mutex.run(key, () =>
      adoptDisks(this.backends, this.config, this.#log, instance, opts.fromHost),
    );
  }

  /**
   * Rebuilds `instance` here from its RBD disks after its host (`opts.from`) died: refused
   * (HOST_ALIVE, nothing changed) while that host's libvirtd answers; then fences the dead host's
   * clients on the disks (blocklist), takes the disks over, defines and starts the domain from the
   * definition recorded on the root disk. LVM and qcow2 instances: UNSUPPORTED. Journaled (`evacuate`).
   */
  evacuate(instance: string, opts: EvacuateOptions): Promise<EvacuateResult> {
    return this.#evacuation.evacuate(instance, opts);
  }

  // ------------------------------------------------------------------ lifecycle of the driver

  /** Resolves when no background flatten (deferred snapshot, clone-depth policy) is queued or running. */
  flattenIdle(): Promise<void> {
    return this.#flattener.idle();
  }

  /** Closes the background flattens (see `Flattener.close`), libvirt, the backends and Ceph. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#session.markClosed();
    await this.#flattener.close();
    await this.backends.close?.().catch(() => undefined);
    await this.#session.close();
    await this.ceph.cluster?.close().catch(() => undefined);
  }
}
