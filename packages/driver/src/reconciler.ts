/**
 * The reconciler: finishes what crashed processes left in the journal (rolls back a spawn or a
 * snapshot, completes a destroy), sweeps stale temp files, lists unfinished operations, and finds
 * (and removes) orphaned disks (gc).
 */
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { inject, injectable } from 'inversify';
import {
  BACKEND_REGISTRY,
  KEY_PROVIDER,
  isUuid,
  sleep,
  type BackendRegistry,
  type KeyProvider,
} from '@ephemera/image-backend';
import { DomainXMLFlags, ListDomainsFlags, isLibvirtError } from '@ephemera/libvirt-napi';
import { EPHEMERA_METADATA_NS } from '@ephemera/libvirt-xml';
import { undefineSecret } from './ceph.js';
import { volumeSecretUuid } from './encryption.js';
import { Compensator } from './compensator.js';
import { Flattener, cloneDepthAction } from './flattener.js';
import type { DriverConfig } from './config.js';
import { InFlight } from './in-flight.js';
import { InstanceStore } from './instance-store.js';
import { processAlive, type Journal, type JournalEntry, type JournalResource } from './journal.js';
import { LibvirtSession } from './libvirt-session.js';
import { removeSourceDisks } from './migration-qcow2.js';
import { reconcileMigration } from './migration-reconcile.js';
import type { Logger } from './logger.js';
import { DRIVER_TYPES } from './tokens.js';
import type { GcDisk, GcOptions, GcReport, PendingOperation, ReconcileAction } from './types.js';
import { errMessage, ownerStamp, ownership, requireBackend, takeDisks, tryBackend } from './util.js';

/**
 * How long reconcile watches for a killed spawn's `defineXML` that libvirtd may still run after
 * the rollback (known failure 14): the dead client's call can wait in libvirtd's queue. A define
 * landing later is left to the next reconcile's orphan sweep.
 */
export const LATE_DEFINE_GRACE_MS = 3000;

@injectable()
export class Reconciler {
  constructor(
    @inject(DRIVER_TYPES.Config) private readonly config: DriverConfig,
    @inject(DRIVER_TYPES.Logger) private readonly log: Logger,
    @inject(DRIVER_TYPES.Journal) private readonly journal: Journal,
    @inject(BACKEND_REGISTRY) private readonly backends: BackendRegistry,
    @inject(LibvirtSession) private readonly session: LibvirtSession,
    @inject(InstanceStore) private readonly store: InstanceStore,
    @inject(InFlight) private readonly inFlight: InFlight,
    @inject(Compensator) private readonly compensator: Compensator,
    @inject(KEY_PROVIDER) private readonly keys: KeyProvider,
    @inject(Flattener) private readonly flattener: Flattener,
  ) {}

  /**
   * Unfinished operations in the journal (read-only: nothing is rolled back), so that callers can
   * show instances whose spawn is in flight or was interrupted before it wrote the record.
   */
  async operations(): Promise<PendingOperation[]> {
    const out: PendingOperation[] = [];
    for (const e of await this.journal.entries()) {
      if (e.end === 'committed' || e.end === 'rolled-back') continue;
      const alive = this.inFlight.active.has(e.opId) || (e.pid !== process.pid && processAlive(e.pid));
      const dom = await this.session.domain(e.instance);
      const st = dom ? (await dom.state().catch(() => undefined))?.state : undefined;
      const str = (k: string): string | undefined =>
        typeof e.data[k] === 'string' ? (e.data[k] as string) : undefined;
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

  /**
   * Finishes every operation a crashed process left in the journal: a spawn or snapshot is rolled
   * back (its disks, domain, secret, files, Glance image, direct-snapshot RBD data removed), a
   * destroy is completed. Operations of live processes (and of this one) are skipped. Then the
   * journal's half-begun temp files of dead processes and stale files in `<stateDir>/tmp` (of no
   * unfinished operation) are removed.
   */
  async reconcile(): Promise<ReconcileAction[]> {
    const out: ReconcileAction[] = [];
    for (const e of await this.journal.entries()) {
      if (e.end === 'committed' || e.end === 'rolled-back') {
        // Finished, but the process died before deleting the file.
        await this.journal.remove(e);
        continue;
      }
      if (this.inFlight.active.has(e.opId) || (e.pid !== process.pid && processAlive(e.pid) && e.end === undefined)) {
        out.push({ opId: e.opId, op: e.op, instance: e.instance, action: 'skipped', removed: [] });
        continue;
      }
      out.push(await this.inFlight.mutex.run(e.instance, () => this.#reconcileOne(e)));
    }
    out.push(...(await this.#dropHandedOver()));
    out.push(...(await this.#sweepOrphanDomains()));
    await this.#queuePendingFlattens();
    await this.journal.sweepAborted();
    await this.#sweepTmp();
    return out;
  }

  /**
   * Instances this host has a record of whose disks all belong to another host now (another host
   * evacuated them while this one was dead): their domain (a stale copy, whose Ceph clients were
   * fenced) and record go; the disks are the other host's and are not touched. Instances with an
   * operation in the journal are left to it (a migration hands the disks over before its end).
   */
  async #dropHandedOver(): Promise<ReconcileAction[]> {
    const out: ReconcileAction[] = [];
    const pending = new Set((await this.journal.entries()).map((e) => e.instance));
    for (const uuid of await this.store.uuids()) {
      if (pending.has(uuid) || this.inFlight.mutex.busy(uuid)) continue;
      const rec = await this.store.read(uuid).catch(() => undefined);
      const b = rec ? tryBackend(this.backends, rec.backend) : undefined;
      if (!rec || !b?.getOwner) continue;
      const disks = await b.list({ instance: uuid }).catch(() => undefined);
      if (!disks?.length || !disks.every((d) => ownership(d, this.config.host.id) === 'other')) continue;
      const owners = [...new Set(disks.map((d) => d.owner!.hostId))].join(', ');
      const log = this.log.child({ instance: uuid, op: 'reconcile' });
      const removed: string[] = [];
      const failures = await this.inFlight.mutex.run(uuid, () =>
        this.compensator.rollback(
          uuid,
          [
            { step: 'stale', resource: { kind: 'file', path: this.store.dir(uuid) } },
            { step: 'stale', resource: { kind: 'domain', uuid, name: rec.domainName } },
          ],
          log,
          removed,
        ),
      );
      log.warn(
        { owners, removed },
        `reconcile: instance ${uuid} belongs to host ${owners} now: dropped its stale copy`,
      );
      out.push({
        opId: '-',
        op: 'handed-over',
        instance: uuid,
        action: failures.length ? 'failed' : 'completed',
        removed,
        ...(failures.length ? { error: failures.join('; ') } : {}),
      });
    }
    return out;
  }

  /**
   * After the rollback of `e`, killed inside its `defineXML` (a `define` intent, not done: a spawn
   * or an evacuation): watches for up to {@link LATE_DEFINE_GRACE_MS} for the domain the dead
   * client's queued call may still create, and rolls it back when it shows.
   */
  async #lateDefine(e: JournalEntry, log: Logger, removed: string[]): Promise<string[]> {
    const domain = e.intents.find((i) => i.step === 'define')?.resource;
    if (domain?.kind !== 'domain' || e.done.includes('define')) return [];
    const { uuid, name } = domain;
    const until = Date.now() + LATE_DEFINE_GRACE_MS;
    while (Date.now() < until) {
      if (await this.session.domain(uuid).catch(() => undefined)) {
        log.warn(
          `reconcile: domain ${name || uuid} was defined after the rollback (a dead client's call): undefining it`,
        );
        return this.compensator.rollback(e.instance, [{ step: 'late-define', resource: domain }], log, removed);
      }
      await sleep(100);
    }
    return [];
  }

  /**
   * Undefines the shut-off domains this driver defined (Ephemera's metadata and a console log in
   * this state dir) that nothing accounts for any more: no record, no journal entry, no operation
   * here, and no disk of the instance in any backend. A killed driver's `defineXML` that libvirtd
   * ran only after reconcile had rolled the spawn back leaves one (e2e/reliability known failure
   * 14); it would also refuse a new spawn of that UUID. Runs after the rollbacks, so a define that
   * lands during them is caught; one landing later goes at the next reconcile.
   */
  async #sweepOrphanDomains(): Promise<ReconcileAction[]> {
    const out: ReconcileAction[] = [];
    const pending = new Set((await this.journal.entries()).map((e) => e.instance));
    const conn = await this.session.connection();
    for (const dom of await conn.listAllDomains(ListDomainsFlags.INACTIVE | ListDomainsFlags.PERSISTENT)) {
      const uuid = dom.uuid().toLowerCase();
      if (pending.has(uuid) || this.inFlight.mutex.busy(uuid)) continue;
      const orphan = async (): Promise<boolean> => {
        // Cheapest first: most shut-off domains are instances with a record.
        if (await this.store.read(uuid).catch(() => 'unreadable')) return false;
        if (await dom.isActive()) return false;
        const xml = await dom.xml(DomainXMLFlags.INACTIVE);
        if (!xml.includes(EPHEMERA_METADATA_NS) || !xml.includes(this.store.consolePath(uuid))) return false;
        if ((await this.journal.entries()).some((e) => e.instance === uuid)) return false;
        for (const b of this.backends.all()) if ((await b.list({ instance: uuid })).length > 0) return false;
        return true;
      };
      const name = dom.name();
      const result = await this.inFlight.mutex.run(uuid, async () => {
        try {
          if (!(await orphan())) return undefined;
          await dom.undefine();
          return { removed: [`domain ${name}`] };
        } catch (err) {
          // Gone meanwhile (undefined by someone else): nothing to do.
          if (isLibvirtError(err, 'VIR_ERR_NO_DOMAIN')) return undefined;
          return { error: errMessage(err) };
        }
      });
      if (!result) continue;
      const log = this.log.child({ instance: uuid, op: 'reconcile' });
      if ('error' in result)
        log.warn({ err: result.error }, `reconcile: cannot check or remove orphaned domain ${name}`);
      else log.warn(`reconcile: domain ${name} had no record, journal entry or disk: undefined`);
      out.push({
        opId: '-',
        op: 'orphan-domain',
        instance: uuid,
        ...('error' in result
          ? { action: 'failed' as const, removed: [], error: result.error }
          : { action: 'completed' as const, removed: result.removed }),
      });
    }
    return out;
  }

  /**
   * Queues the background flattens the cluster says are due on this host's root disks (a crash
   * between a snapshot's commit and its flatten's journal entry, a flatten dropped by `close()`,
   * a clone deeper than `images.rbd.cloneDepth.soft`). Only disks this host owns: with several
   * hosts, the owner of the instance disk does it. Failures are logged: the next reconcile retries.
   */
  async #queuePendingFlattens(): Promise<void> {
    for (const uuid of await this.store.uuids()) {
      const rec = await this.store.read(uuid).catch(() => undefined);
      const b = rec ? tryBackend(this.backends, rec.backend) : undefined;
      if (!rec || !b || (!b.pendingDirectSnapshots && !b.cloneDepth)) continue;
      try {
        const root = (await b.list({ instance: uuid })).find((d) => d.disk.name === 'disk');
        if (!root || ownership(root, this.config.host.id) !== 'mine') continue;
        for (const imageId of (await b.pendingDirectSnapshots?.(root.disk)) ?? [])
          this.flattener.enqueue({ instance: uuid, backend: b.name, disk: 'disk', imageId });
        const depth = b.cloneDepth ? await b.cloneDepth(root.disk) : 0;
        if (cloneDepthAction(depth, this.config.images.rbd.cloneDepth) !== 'none')
          this.flattener.enqueue({ instance: uuid, backend: b.name, disk: 'disk' });
      } catch (err) {
        this.log.warn({ instance: uuid, err: errMessage(err) }, 'reconcile: cannot read pending flattens');
      }
    }
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
    for (const e of await this.journal.entries())
      for (const { resource } of e.intents) if (resource.kind === 'file') keep.add(resource.path);
    const removed: string[] = [];
    for (const n of names) {
      const path = join(dir, n);
      if (keep.has(path)) continue;
      await rm(path, { recursive: true, force: true });
      removed.push(path);
    }
    if (removed.length) this.log.info({ removed }, `reconcile: removed ${removed.length} stale temp file(s)`);
    return removed;
  }

  async #reconcileOne(e: JournalEntry): Promise<ReconcileAction> {
    const log = this.log.child({ instance: e.instance, op: 'reconcile', opId: e.opId });
    const removed: string[] = [];
    let failures: string[] = [];
    let completed = e.op === 'destroy';
    if (e.op === 'destroy') {
      // Finish the whole destroy, not only what was journaled: a crash before the `domain` intent
      // (or a disk's, or even the `files` one) was written must not leave the domain or the
      // instance's files. Reverse order: the domain (by UUID) goes first, then every disk of the
      // instance in every backend, then the files.
      const sweep: { step: string; resource: JournalResource }[] = [
        { step: 'sweep', resource: { kind: 'file', path: this.store.dir(e.instance) } },
      ];
      const listFailures: string[] = [];
      for (const b of this.backends.all()) {
        try {
          for (const d of await b.list({ instance: e.instance }))
            if (ownership(d, this.config.host.id) !== 'other')
              sweep.push({ step: 'sweep', resource: { kind: 'disk', backend: b.name, name: d.disk.name } });
        } catch (err) {
          listFailures.push(`disks of ${b.name}: ${errMessage(err)}`);
        }
      }
      sweep.push({
        step: 'sweep',
        resource: {
          kind: 'domain',
          uuid: e.instance,
          name: String(e.data.domainName ?? this.store.domainName(e.instance)),
        },
      });
      failures = [
        ...listFailures,
        ...(await this.compensator.rollback(e.instance, [...e.intents, ...sweep], log, removed, true)),
      ];
    } else if (e.op === 'spawn' || e.op === 'snapshot') {
      failures = await this.compensator.rollback(e.instance, e.intents, log, removed, true);
      if (e.op === 'spawn') {
        // A spawn may have crashed between an action and its intent being read back: sweep
        // whatever carries the instance's name too (disks of its backend, a domain with its UUID).
        const sweep: JournalResource[] = [{ kind: 'domain', uuid: e.instance, name: String(e.data.domainName ?? '') }];
        const bname = typeof e.data.backend === 'string' ? e.data.backend : undefined;
        const b = bname ? tryBackend(this.backends, bname) : undefined;
        // Unowned ones included: a spawn killed between creating a disk and recording its owner.
        if (b)
          for (const d of await b.list({ instance: e.instance }))
            if (ownership(d, this.config.host.id) !== 'other')
              sweep.push({ kind: 'disk', backend: b.name, name: d.disk.name });
        failures.push(
          ...(await this.compensator.rollback(
            e.instance,
            sweep.map((resource) => ({ step: 'sweep', resource })),
            log,
            removed,
          )),
        );
        failures.push(...(await this.#lateDefine(e, log, removed)));
      }
    } else if (e.op === 'flatten') {
      // A background flatten whose process died: librbd's flatten is resumable, so rerun it.
      try {
        await this.flattener.resume(e);
        completed = true;
      } catch (err) {
        failures = [errMessage(err)];
      }
    } else if (e.op === 'evacuate') {
      // Rolled back like a spawn, but the disks are never removed: they go back to the dead host.
      failures = await this.compensator.rollback(e.instance, e.intents, log, removed, true);
      failures.push(...(await this.#lateDefine(e, log, removed)));
    } else if (e.op === 'migrate-out' || e.op === 'migrate-in') {
      ({ failures, completed } = await reconcileMigration(
        {
          session: this.session,
          store: this.store,
          compensator: this.compensator,
          takeDisks: (rec) => takeDisks(this.backends, rec, ownerStamp(this.config)),
          removeLocalDisks: async (instance, backend) => {
            const b = tryBackend(this.backends, backend);
            if (!b || b.capabilities.sharedStorage) return [];
            return removeSourceDisks(
              this.backends,
              instance,
              backend,
              this.config.host.id,
              this.config.timeouts.diskBusyMs,
            );
          },
        },
        e,
        log,
        removed,
      ));
    }
    if (failures.length === 0) await this.journal.remove(e);
    const action: ReconcileAction = {
      opId: e.opId,
      op: e.op,
      instance: e.instance,
      action: failures.length ? 'failed' : completed ? 'completed' : 'rolled-back',
      removed,
      ...(failures.length ? { error: failures.join('; ') } : {}),
    };
    log.info({ action: action.action, removed }, `reconcile: ${e.op} ${action.action}`);
    return action;
  }

  /**
   * Finds this host's disks (in every loaded backend) whose instance has no libvirt domain, no
   * record and no operation in progress here. Reports them (`orphans`); removes them when `remove`
   * is true (only those of `instances` when given). Disks without an owner record that are orphans
   * by the same test are reported as `unowned` and removed only with `includeUnowned`. Disks of
   * other hosts are never removed; `allHosts` reports them (`otherHosts`).
   */
  async gc(opts: GcOptions = {}): Promise<GcReport> {
    const pending = new Set((await this.journal.entries()).map((e) => e.instance));
    const only = opts.instances ? new Set(opts.instances.map((s) => s.toLowerCase())) : undefined;
    const me = this.config.host.id;
    const report: GcReport = { orphans: [], unowned: [], removed: [], ...(opts.allHosts ? { otherHosts: [] } : {}) };
    for (const b of this.backends.all()) {
      for (const d of await b.list()) {
        const inst = d.disk.instance.toLowerCase();
        if (only && !only.has(inst)) continue;
        const whose = ownership(d, me);
        const entry: GcDisk = { backend: b.name, id: d.id, instance: inst, name: d.disk.name, sizeBytes: d.sizeBytes };
        if (whose === 'other') {
          report.otherHosts?.push({ ...entry, hostId: d.owner!.hostId });
          continue;
        }
        if (pending.has(inst) || this.inFlight.mutex.busy(inst)) continue;
        if (await this.session.domain(inst)) continue;
        if (await this.store.read(inst)) continue;
        (whose === 'mine' ? report.orphans : report.unowned).push(entry);
      }
    }
    await this.#orphanKeys(report, pending, only, opts.remove === true);
    if (opts.remove) {
      const doomed = [...report.orphans, ...(opts.includeUnowned ? report.unowned : [])];
      for (const o of doomed) {
        await this.inFlight.mutex.run(o.instance, async () => {
          if (await this.session.domain(o.instance)) return;
          const backend = requireBackend(this.backends, o.backend);
          const disk = { instance: o.instance, name: o.name };
          // Read again just before removing: it may have been handed to another host meanwhile.
          const owner = backend.getOwner ? await backend.getOwner(disk).catch(() => undefined) : null;
          if (owner === undefined || ownership({ owner }, me) === 'other') return;
          if (await backend.remove(disk, { busyTimeoutMs: this.config.timeouts.diskBusyMs })) report.removed.push(o.id);
        });
      }
    }
    return report;
  }

  /**
   * Keys (and their volume secrets) whose instance has no domain, no record and no operation in
   * progress: what a crash left that no journal names. Only the built-in file provider's keys,
   * which are this host's; a shared provider (Vault) holds other hosts' keys too.
   */
  async #orphanKeys(report: GcReport, pending: Set<string>, only: Set<string> | undefined, remove: boolean) {
    if (this.keys.name !== 'file' || !this.keys.listKeys) return;
    report.keys = [];
    for (const id of await this.keys.listKeys()) {
      const inst = id.toLowerCase();
      if (!isUuid(id) || (only && !only.has(inst))) continue;
      if (pending.has(inst) || this.inFlight.mutex.busy(inst)) continue;
      if ((await this.session.domain(inst)) || (await this.store.read(inst))) continue;
      report.keys.push(id);
      if (!remove) continue;
      await this.inFlight.mutex.run(inst, async () => {
        if ((await this.session.domain(inst)) || (await this.store.read(inst))) return;
        await undefineSecret(await this.session.connection(), volumeSecretUuid(inst));
        if (await this.keys.deleteKey(id)) report.removed.push(`key:${id}`);
      });
    }
  }
}
