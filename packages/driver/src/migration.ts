/**
 * Live migration of an RBD instance to another host's driver (issue 19.2), shaped like Nova's:
 * the destination prepares (`preLiveMigration`: ceph secret, instance directory), the source's
 * libvirtd migrates peer-to-peer (virDomainMigrateToURI3: live, persistent on the
 * destination, undefined on the source; RBD disks are shared, nothing is copied), then the
 * destination commits (`postLiveMigrationAtDestination`: the record) or rolls back. Both sides
 * journal their steps (`migrate-out`, `migrate-in`) for reconcile. Instances on local disks (qcow2)
 * are block-migrated: the steps that adds are in migration-qcow2.ts.
 */
import { mkdir, rm } from 'node:fs/promises';
import { inject, injectable } from 'inversify';
import { GLANCE_TYPES, type GlanceClient } from '@ephemera/glance';
import { BACKEND_REGISTRY, isUuid, sleep, type BackendRegistry, type OwnerStamp } from '@ephemera/image-backend';
import { DomainXMLFlags, JobStatsFlags, isLibvirtError, type Domain, type JobStats } from '@ephemera/libvirt-napi';
import { defineCephSecret, findCephSecret } from './ceph.js';
import { Compensator } from './compensator.js';
import type { DriverConfig } from './config.js';
import { DriverError } from './errors.js';
import { DriverEventBus, InFlight } from './in-flight.js';
import { InstanceStore } from './instance-store.js';
import type { Journal, JournalOp } from './journal.js';
import { LibvirtSession } from './libvirt-session.js';
import { BLOCK_MIGRATE_FLAGS, destinationXml, migrateFlags } from './migration-xml.js';
import type { Logger } from './logger.js';
import {
  blockMigratable,
  describeDisks,
  migrationPercent,
  prepareIncomingDisks,
  removeSourceDisks,
  withDiskPaths,
  type BlockMigrationDisk,
  type IncomingDiskPath,
} from './migration-qcow2.js';
import { DRIVER_TYPES } from './tokens.js';
import type { CephContext, InstanceRecord } from './types.js';
import { MiB, errMessage, ownerStamp, requireBackend, takeDisks } from './util.js';

/** Default bound of a migration when `timeoutMs` is not given. */
export const DEFAULT_MIGRATE_TIMEOUT_MS = 10 * 60_000;

/** What the destination tells the source in {@link MigrationDestination.preLiveMigration}. */
export interface MigrationTarget {
  /** The destination libvirtd's URI, as the source libvirtd reaches it (peer-to-peer). */
  libvirtUri: string;
  /** The instance's serial console log on the destination. */
  consolePath: string;
  /** The libvirt ceph secret the destination defined (or had) for the instance's RBD disks. */
  secretUuid: string | null;
  /** What the destination records as the owner of the disks it takes over. */
  owner: OwnerStamp;
  /** Block migration: where the destination pre-created each disk's copy. */
  disks?: IncomingDiskPath[];
}

/** The destination side of a live migration (a `Driver` of the destination host implements it). */
export interface MigrationDestination {
  /**
   * Prepares to receive `rec` (Nova's pre_live_migration): journaled; refuses an instance it
   * already has. `from` is the source's libvirt URI: reconcile looks there after a crash.
   * `disks` (block migration of local disks): the disks to pre-create here, as the source has them.
   */
  preLiveMigration(rec: InstanceRecord, from?: string, disks?: BlockMigrationDisk[]): Promise<MigrationTarget>;
  /**
   * After libvirt reported success: the record becomes the destination's
   * (post_live_migration_at_destination). Resolves to the completed job's statistics there
   * (downtime), when libvirt has them; rejects when the guest does not run there.
   */
  postLiveMigrationAtDestination(uuid: string): Promise<JobStats | undefined>;
  /** After a failed or aborted migration: removes what `preLiveMigration` made, and any incoming domain. */
  rollbackLiveMigrationAtDestination(uuid: string): Promise<void>;
}

/** One progress sample of a migration, from the source's job statistics (virDomainGetJobStats). */
export interface MigrationProgress {
  instance: string;
  /** 0..100, monotonic; 100 only once the migration completed. */
  percent: number;
  /** Guest memory bytes: total, sent so far and still to send (this pass). */
  memTotal?: number;
  memProcessed?: number;
  memRemaining?: number;
  /** Memory passes so far. */
  memIteration?: number;
  /** Expected downtime while in flight; the measured one in the last event. */
  downtimeMs?: number;
  /** Block migration: disk bytes to copy (the overlays' data), copied so far and still to copy. */
  diskTotal?: number;
  diskProcessed?: number;
  diskRemaining?: number;
  elapsedMs: number;
}

/** `Driver.migrate()` options. */
export interface MigrateOptions {
  /** The destination host's driver. */
  to: MigrationDestination;
  /** Aborts the migration (virDomainAbortJob): the instance keeps running here. */
  signal?: AbortSignal;
  /** Bound of the whole migration (default {@link DEFAULT_MIGRATE_TIMEOUT_MS}); past it, aborted (TIMEOUT). */
  timeoutMs?: number;
  /** Called with each progress sample (about every 250 ms) and once at the end (100 %). */
  onProgress?: (p: MigrationProgress) => void;
  /** Caps the migration's bandwidth (MiB/s); default unlimited. */
  bandwidthMiB?: number;
}

/** What `Driver.migrate()` returns. */
export interface MigrateResult {
  instance: string;
  /** Source and destination libvirt URIs. */
  from: string;
  to: string;
  /** Wall time of the whole operation. */
  durationMs: number;
  /** The guest's downtime as libvirt measured it (completed job statistics), when reported. */
  downtimeMs?: number;
  /** Memory bytes the migration sent, when reported. */
  memProcessed?: number;
  /** Block migration: disk bytes libvirt copied (only the overlays' own data), when reported. */
  diskProcessed?: number;
}

/** The source side and the destination side of live migration. */
@injectable()
export class MigrationWorkflow implements MigrationDestination {
  /** Incoming migrations prepared here and not yet committed or rolled back. */
  readonly #incoming = new Map<string, { op: JournalOp; rec: InstanceRecord }>();

  constructor(
    @inject(DRIVER_TYPES.Config) private readonly config: DriverConfig,
    @inject(DRIVER_TYPES.Logger) private readonly log: Logger,
    @inject(DRIVER_TYPES.Journal) private readonly journal: Journal,
    @inject(BACKEND_REGISTRY) private readonly backends: BackendRegistry,
    @inject(DRIVER_TYPES.CephContext) private readonly ceph: CephContext,
    @inject(GLANCE_TYPES.GlanceClient) private readonly glance: GlanceClient,
    @inject(LibvirtSession) private readonly session: LibvirtSession,
    @inject(InstanceStore) private readonly store: InstanceStore,
    @inject(DriverEventBus) private readonly events: DriverEventBus,
    @inject(InFlight) private readonly inFlight: InFlight,
    @inject(Compensator) private readonly compensator: Compensator,
  ) {}

  // ------------------------------------------------------------------ source

  /** Migrates instance `uuid` live to `opts.to`. See `Driver.migrate()`. */
  async migrate(uuid: string, opts: MigrateOptions): Promise<MigrateResult> {
    const t0 = performance.now();
    if (typeof opts !== 'object' || opts === null)
      throw new DriverError('INVALID_ARGUMENT', 'migrate needs options with a destination driver (to)', {
        instance: uuid,
      });
    const timeoutMs = opts.timeoutMs ?? DEFAULT_MIGRATE_TIMEOUT_MS;
    if (!Number.isFinite(timeoutMs) || timeoutMs <= 0)
      throw new DriverError('INVALID_ARGUMENT', 'timeoutMs must be a positive number', { instance: uuid });
    if (opts.bandwidthMiB !== undefined && (!Number.isInteger(opts.bandwidthMiB) || opts.bandwidthMiB < 1))
      throw new DriverError('INVALID_ARGUMENT', 'bandwidthMiB must be a positive integer', { instance: uuid });
    if (!opts.to || typeof opts.to.preLiveMigration !== 'function')
      throw new DriverError('INVALID_ARGUMENT', 'migrate needs a destination driver (to)', { instance: uuid });
    return this.inFlight.mutex.run(uuid, async () => {
      const log = this.log.child({ instance: uuid, op: 'migrate' });
      const rec = await this.store.read(uuid);
      if (!rec) throw new DriverError('INSTANCE_NOT_FOUND', `no instance ${uuid}`, { instance: uuid });
      // Refused before anything moves: only shared RBD disks migrate without copying.
      if (rec.backend === 'lvm')
        throw new DriverError(
          'UNSUPPORTED',
          `instance ${uuid} is on LVM: its volumes are local to this host and cannot be migrated live`,
          { instance: uuid },
        );
      const backend = requireBackend(this.backends, rec.backend);
      // Shared disks (RBD) stay where they are; local ones are copied when the backend can prepare copies.
      const block = backend.capabilities.sharedStorage ? undefined : blockMigratable(backend);
      if (!backend.capabilities.sharedStorage && !block)
        throw new DriverError(
          'UNSUPPORTED',
          `instance ${uuid} is on ${rec.backend}: its disks are local and the backend cannot copy them to another host`,
          { instance: uuid },
        );
      // The destination would need the volume secret (and so the key) first: not implemented yet.
      if (rec.encryption)
        throw new DriverError(
          'UNSUPPORTED',
          `instance ${uuid} has encrypted disks: live migration of encrypted disks (capability encryption) is not supported`,
          { instance: uuid },
        );
      const dom = await this.session.requireDomain(uuid);
      const st = await dom.state();
      if (st.state !== 'running')
        throw new DriverError(
          'INSTANCE_STATE',
          `instance ${uuid} is ${st.state}: only a running instance migrates live`,
          {
            instance: uuid,
          },
        );
      opts.signal?.throwIfAborted();
      const local = block ? await describeDisks(block, rec) : undefined;
      const from = this.config.libvirt.uri;
      const op = await this.journal.begin('migrate-out', uuid, {
        domainName: rec.domainName,
        from,
        backend: rec.backend,
      });
      this.inFlight.active.add(op.opId);
      let target: MigrationTarget | undefined;
      let migrated = false;
      try {
        this.#step(uuid, 'prepare-destination', 'started');
        target = local
          ? await opts.to.preLiveMigration(rec, from, local.disks)
          : await opts.to.preLiveMigration(rec, from);
        await op.done('prepare-destination', { to: target.libvirtUri });
        if (target.libvirtUri === from)
          throw new DriverError('INVALID_ARGUMENT', `the destination is this host (${from})`, { instance: uuid });
        this.#step(uuid, 'prepare-destination', 'done');
        const sourceSecret = this.ceph.secretUuid;
        const toDest = (xml: string): string => {
          const x = destinationXml(xml, rec.consolePath, target!, sourceSecret);
          if (!local) return x;
          if (!target?.disks) throw new DriverError('MIGRATION_FAILED', 'the destination prepared no disk copies');
          return withDiskPaths(x, local.paths, target.disks);
        };
        const live = toDest(await dom.xml(DomainXMLFlags.MIGRATABLE));
        const persistent = toDest(await dom.xml(DomainXMLFlags.MIGRATABLE | DomainXMLFlags.INACTIVE));
        // An abort during the preparation: the abort listener below would never fire.
        if (opts.signal?.aborted)
          throw new DriverError('ABORTED', `migration of ${uuid} aborted`, {
            instance: uuid,
            cause: opts.signal.reason,
          });
        await op.done('migrate-started', { to: target.libvirtUri });
        this.#step(uuid, 'migrate', 'started');
        const disks = local ? rec.disks.map((d) => d.target) : undefined;
        const outcome = await this.#runMigration(dom, rec, target.libvirtUri, [live, persistent], disks, opts, t0);
        if (outcome.error) {
          // libvirt failed, but the guest may have switched over before the error: follow the guest.
          if (await this.#runsHere(uuid)) throw outcome.error;
          log.warn({ err: errMessage(outcome.error) }, 'libvirt reported an error but the guest left this host');
        }
        migrated = true;
        await op.done('migrated');
        // Block migration: the disk bytes are only in the source's completed statistics; then
        // the inactive definition goes (libvirt undefined it already for a shared-disk migration).
        const copied = local ? await this.#undefineSource(dom) : undefined;
        if (!local) await this.handOverDiskOwnership(rec, target);
        const dstStats = await opts.to.postLiveMigrationAtDestination(uuid);
        const stats = dstStats ?? copied;
        await op.done('destination-committed');
        // The source keeps nothing: its record and console log go, and its copies of local disks.
        if (local) {
          await removeSourceDisks(
            this.backends,
            uuid,
            rec.backend,
            this.config.host.id,
            this.config.timeouts.diskBusyMs,
          );
          await op.done('source-disks-removed');
        }
        await rm(this.store.dir(uuid), { recursive: true, force: true });
        await op.end('committed');
        this.#step(uuid, 'migrate', 'done');
        this.events.emit('lifecycle', { instance: uuid, state: 'migrated', detail: target.libvirtUri });
        const result: MigrateResult = {
          instance: uuid,
          from,
          to: target.libvirtUri,
          durationMs: performance.now() - t0,
          ...(stats?.downtime !== undefined ? { downtimeMs: stats.downtime } : {}),
          ...(stats?.memProcessed !== undefined ? { memProcessed: stats.memProcessed } : {}),
          ...(copied?.diskProcessed !== undefined ? { diskProcessed: copied.diskProcessed } : {}),
        };
        opts.onProgress?.({
          instance: uuid,
          percent: 100,
          elapsedMs: performance.now() - t0,
          ...(stats?.memTotal !== undefined ? { memTotal: stats.memTotal } : {}),
          ...(stats?.memProcessed !== undefined ? { memProcessed: stats.memProcessed } : {}),
          memRemaining: 0,
          ...(stats?.downtime !== undefined ? { downtimeMs: stats.downtime } : {}),
          ...(copied?.diskTotal !== undefined ? { diskTotal: copied.diskTotal } : {}),
          ...(copied?.diskProcessed !== undefined ? { diskProcessed: copied.diskProcessed, diskRemaining: 0 } : {}),
        });
        log.info({ to: target.libvirtUri, downtimeMs: result.downtimeMs }, 'migrated');
        return result;
      } catch (err) {
        this.#step(uuid, 'migrate', 'failed', errMessage(err));
        if (migrated) {
          // The guest runs on the destination now: nothing there may be undone. The entry stays
          // (rollback-failed) for reconcile and the operator.
          await op.end('rollback-failed', `migrated, but finishing failed: ${errMessage(err)}`).catch(() => undefined);
          throw err;
        }
        if (target)
          await opts.to.rollbackLiveMigrationAtDestination(uuid).catch((e) => {
            log.warn({ err: errMessage(e) }, 'destination rollback failed (its reconcile retries)');
          });
        await op.end('rolled-back', errMessage(err)).catch(() => undefined);
        throw err;
      } finally {
        this.inFlight.active.delete(op.opId);
      }
    });
  }

  /**
   * Disk ownership moves to the destination once libvirt reported success and before the
   * destination commits the record: each of the instance's disks owned here (or unowned) gets the
   * destination's owner stamp (`setOwner`), so from then on only the destination's gc and
   * reconcile may touch them.
   */
  async handOverDiskOwnership(rec: InstanceRecord, target: MigrationTarget): Promise<void> {
    await takeDisks(this.backends, rec, target.owner, this.config.host.id);
  }

  /** Block migration, after success: the completed job's statistics here (disk bytes), then the inactive definition goes. */
  async #undefineSource(dom: Domain): Promise<JobStats | undefined> {
    const s = await dom.getJobStats(JobStatsFlags.COMPLETED).catch(() => undefined);
    await dom.undefine().catch((err) => {
      if (!isLibvirtError(err, 'VIR_ERR_NO_DOMAIN')) throw err;
    });
    return s?.type === 'completed' ? s : undefined;
  }

  async #runsHere(uuid: string): Promise<boolean> {
    const dom = await this.session.domain(uuid);
    return dom !== undefined && (await dom.isActive().catch(() => false));
  }

  /** Runs virDomainMigrateToURI3 while polling job stats; abort on signal or timeout. */
  async #runMigration(
    dom: Domain,
    rec: InstanceRecord,
    destUri: string,
    [destXml, persistXml]: [string, string],
    migrateDisks: string[] | undefined,
    opts: MigrateOptions,
    t0: number,
  ): Promise<{ error?: unknown }> {
    const uuid = rec.uuid;
    const timeoutMs = opts.timeoutMs ?? DEFAULT_MIGRATE_TIMEOUT_MS;
    let why: 'aborted' | 'timeout' | undefined;
    const abort = (reason: 'aborted' | 'timeout'): void => {
      why ??= reason;
      dom.abortJob().catch(() => undefined);
    };
    const onAbort = (): void => abort('aborted');
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    const timer = setTimeout(() => abort('timeout'), timeoutMs);
    let settled = false;
    const migration = dom
      .migrateToUri(
        destUri,
        {
          destXml,
          persistXml,
          ...(opts.bandwidthMiB ? { bandwidth: opts.bandwidthMiB } : {}),
          ...(migrateDisks ? { migrateDisks } : {}),
        },
        migrateDisks ? BLOCK_MIGRATE_FLAGS : migrateFlags(this.config.libvirt.migrationTunnelled),
      )
      .finally(() => {
        settled = true;
      });
    migration.catch(() => undefined);
    let best = 0;
    try {
      while (!settled) {
        await Promise.race([migration.catch(() => undefined), sleep(250)]);
        if (settled) break;
        const s = await dom.getJobStats().catch(() => undefined);
        // An abort that came before the job existed had nothing to cancel yet: repeat it.
        if (why && s?.type === 'unbounded') dom.abortJob().catch(() => undefined);
        if (s?.type !== 'unbounded' || !opts.onProgress) continue;
        best = Math.max(best, migrationPercent(s, rec.flavor.memoryMiB * MiB) ?? 0);
        opts.onProgress({
          instance: uuid,
          percent: best,
          elapsedMs: performance.now() - t0,
          ...(s.memTotal !== undefined ? { memTotal: s.memTotal } : {}),
          ...(s.memProcessed !== undefined ? { memProcessed: s.memProcessed } : {}),
          ...(s.memRemaining !== undefined ? { memRemaining: s.memRemaining } : {}),
          ...(s.memIteration !== undefined ? { memIteration: s.memIteration } : {}),
          ...(s.downtime !== undefined ? { downtimeMs: s.downtime } : {}),
          ...(s.diskTotal !== undefined ? { diskTotal: s.diskTotal } : {}),
          ...(s.diskProcessed !== undefined ? { diskProcessed: s.diskProcessed } : {}),
          ...(s.diskRemaining !== undefined ? { diskRemaining: s.diskRemaining } : {}),
        });
      }
      await migration;
    } catch (err) {
      if (why === 'aborted')
        return { error: new DriverError('ABORTED', `migration of ${uuid} aborted`, { instance: uuid, cause: err }) };
      if (why === 'timeout')
        return {
          error: new DriverError('TIMEOUT', `migration of ${uuid} did not finish within ${timeoutMs} ms`, {
            instance: uuid,
            cause: err,
          }),
        };
      return {
        error: new DriverError('MIGRATION_FAILED', `migration of ${uuid} failed: ${errMessage(err)}`, {
          instance: uuid,
          cause: err,
        }),
      };
    } finally {
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
    }
    return {};
  }

  #step(instance: string, step: string, status: 'started' | 'done' | 'failed', error?: string): void {
    this.events.emit('step', { instance, op: 'migrate', step, status, ...(error ? { error } : {}) });
  }

  // ------------------------------------------------------------------ destination

  /** See {@link MigrationDestination.preLiveMigration}. */
  async preLiveMigration(rec: InstanceRecord, from?: string, disks?: BlockMigrationDisk[]): Promise<MigrationTarget> {
    const uuid = typeof rec?.uuid === 'string' && isUuid(rec.uuid) ? rec.uuid.toLowerCase() : undefined;
    if (!uuid) throw new DriverError('INVALID_ARGUMENT', 'preLiveMigration needs an instance record with a UUID');
    const shared = requireBackend(this.backends, rec.backend).capabilities.sharedStorage;
    if (this.#incoming.has(uuid) || (await this.store.read(uuid)) || (await this.session.domain(uuid)))
      throw new DriverError('INSTANCE_EXISTS', `instance ${uuid} already exists on ${this.config.libvirt.uri}`, {
        instance: uuid,
      });
    if (from !== undefined && typeof from !== 'string')
      throw new DriverError('INVALID_ARGUMENT', 'preLiveMigration: from must be a libvirt URI', { instance: uuid });
    // The whole record and the source's URI: after a crash, reconcile decides from both hosts'
    // libvirt state and commits this record itself when the guest ended up here.
    const op = await this.journal.begin('migrate-in', uuid, {
      domainName: rec.domainName,
      backend: rec.backend,
      record: rec,
      ...(from ? { from } : {}),
    });
    this.inFlight.active.add(op.opId);
    try {
      const secretUuid = rec.backend === 'rbd' ? await this.#ensureSecret(op) : null;
      const dir = this.store.dir(uuid);
      await op.intent('files', { kind: 'file', path: dir });
      await mkdir(dir, { recursive: true });
      // Local disks: the base into this host's cache, then the empty copies libvirt fills.
      const incoming = shared
        ? undefined
        : await prepareIncomingDisks(
            {
              backends: this.backends,
              glance: this.glance,
              onProgress: (e) =>
                this.events.emit('progress', { ...e, instance: uuid, op: 'migrate-in', step: 'disks' }),
            },
            op,
            { ...rec, uuid },
            disks,
          );
      await op.done('prepared', incoming ? { baseFetched: incoming.fetched } : undefined);
      this.#incoming.set(uuid, { op, rec });
      return {
        libvirtUri: this.config.libvirt.uri,
        consolePath: this.store.consolePath(uuid),
        secretUuid,
        owner: ownerStamp(this.config),
        ...(incoming ? { disks: incoming.disks } : {}),
      };
    } catch (err) {
      await this.#undoIncoming(uuid, op, errMessage(err));
      throw err;
    }
  }

  /** See {@link MigrationDestination.postLiveMigrationAtDestination}. */
  async postLiveMigrationAtDestination(uuid: string): Promise<JobStats | undefined> {
    const key = uuid.toLowerCase();
    const inc = this.#incoming.get(key);
    if (!inc) throw new DriverError('INVALID_ARGUMENT', `no incoming migration of ${uuid} here`, { instance: uuid });
    const dom = await this.session.domain(key);
    if (!dom || !(await dom.isActive()))
      throw new DriverError('MIGRATION_FAILED', `instance ${uuid} does not run on ${this.config.libvirt.uri}`, {
        instance: uuid,
      });
    // The completed job's statistics (the measured downtime) are kept by the destination's libvirtd.
    const completed = await dom.getJobStats(JobStatsFlags.COMPLETED).catch(() => undefined);
    // Copied local disks become this host's now (shared ones were handed over by the source).
    const backend = requireBackend(this.backends, inc.rec.backend);
    if (!backend.capabilities.sharedStorage) {
      await takeDisks(this.backends, { uuid: key, backend: backend.name }, ownerStamp(this.config));
      await inc.op.done('disks-owned');
    }
    await this.store.write({ ...inc.rec, consolePath: this.store.consolePath(key) });
    await inc.op.done('record');
    await inc.op.end('committed');
    this.#incoming.delete(key);
    this.inFlight.active.delete(inc.op.opId);
    this.events.emit('lifecycle', { instance: key, state: 'migrated-in' });
    return completed?.type === 'completed' ? completed : undefined;
  }

  /** See {@link MigrationDestination.rollbackLiveMigrationAtDestination}. */
  async rollbackLiveMigrationAtDestination(uuid: string): Promise<void> {
    const key = uuid.toLowerCase();
    const inc = this.#incoming.get(key);
    if (!inc) return;
    // libvirt stops the incoming QEMU itself after a failed migration; wait for that, then make
    // sure (the source still runs the guest, so a domain here is never the live copy).
    const deadline = performance.now() + 30_000;
    let dom = await this.session.domain(key);
    while (dom && performance.now() < deadline) {
      await sleep(200);
      dom = await this.session.domain(key);
    }
    if (dom) await inc.op.intent('incoming-domain', { kind: 'domain', uuid: key, name: inc.rec.domainName });
    await this.#undoIncoming(key, inc.op, 'migration failed or aborted');
  }

  async #undoIncoming(uuid: string, op: JournalOp, why: string): Promise<void> {
    this.#incoming.delete(uuid);
    try {
      const failures = await this.compensator.rollback(
        uuid,
        op.intents,
        this.log.child({ instance: uuid, op: 'migrate-in' }),
      );
      await op.end(failures.length ? 'rollback-failed' : 'rolled-back', failures.length ? failures.join('; ') : why);
    } finally {
      this.inFlight.active.delete(op.opId);
    }
  }

  /** The destination defines the ceph secret first (journaled: a rollback removes one it created). */
  async #ensureSecret(op: JournalOp): Promise<string | null> {
    const c = this.ceph;
    if (!c.secretUuid) return null;
    const conn = await this.session.connection();
    const existing = await findCephSecret(conn, c.secretUuid, c.user);
    if (existing === c.secretUuid) return existing;
    if (existing !== undefined)
      throw new DriverError(
        'INVALID_CONFIG',
        `libvirt already has a ceph secret for client.${c.user} with UUID ${existing}; set images.rbd.secretUuid to it`,
      );
    if (!c.keyringPath)
      throw new DriverError('INVALID_CONFIG', `no keyring for client.${c.user}: set images.rbd.keyring`);
    await op.intent('secret', { kind: 'secret', uuid: c.secretUuid, created: true });
    await defineCephSecret(conn, c.secretUuid, c.user, c.keyringPath);
    await op.done('secret');
    return c.secretUuid;
  }
}
