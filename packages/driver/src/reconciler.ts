/**
 * The reconciler: finishes what crashed processes left in the journal (rolls back a spawn or a
 * snapshot, completes a destroy), sweeps stale temp files, lists unfinished operations, and finds
 * (and removes) orphaned disks (gc).
 */
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { inject, injectable } from 'inversify';
import { BACKEND_REGISTRY, type BackendRegistry } from '@ephemera/image-backend';
import { Compensator } from './compensator.js';
import type { DriverConfig } from './config.js';
import { InFlight } from './in-flight.js';
import { InstanceStore } from './instance-store.js';
import { processAlive, type Journal, type JournalEntry, type JournalResource } from './journal.js';
import { LibvirtSession } from './libvirt-session.js';
import type { Logger } from './logger.js';
import { DRIVER_TYPES } from './tokens.js';
import type { GcReport, PendingOperation, ReconcileAction } from './types.js';
import { errMessage, requireBackend, tryBackend } from './util.js';

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
    await this.journal.sweepAborted();
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
    if (removed.length) this.log.info({ removed }, `reconcile: removed ${removed.length} stale temp file(s)`);
    return removed;
  }

  async #reconcileOne(e: JournalEntry): Promise<ReconcileAction> {
    const log = this.log.child({ instance: e.instance, op: 'reconcile', opId: e.opId });
    const removed: string[] = [];
    let failures: string[] = [];
    if (e.op === 'destroy') {
      // Finish the whole destroy, not only what was journaled: a crash before the `domain` intent
      // (or a disk's, or even the `files` one) was written must not leave the domain or the
      // instance's files. Reverse order: the domain (by UUID) goes first, then every disk of the
      // instance in every backend, then the files.
      const sweep: { step: string; resource: JournalResource }[] = [{ step: 'sweep', resource: { kind: 'file', path: this.store.dir(e.instance) } }];
      const listFailures: string[] = [];
      for (const b of this.backends.all()) {
        try {
          for (const d of await b.list({ instance: e.instance })) sweep.push({ step: 'sweep', resource: { kind: 'disk', backend: b.name, name: d.disk.name } });
        } catch (err) {
          listFailures.push(`disks of ${b.name}: ${errMessage(err)}`);
        }
      }
      sweep.push({ step: 'sweep', resource: { kind: 'domain', uuid: e.instance, name: String(e.data.domainName ?? this.store.domainName(e.instance)) } });
      failures = [...listFailures, ...(await this.compensator.rollback(e.instance, [...e.intents, ...sweep], log, removed, true))];
    } else if (e.op === 'spawn' || e.op === 'snapshot') {
      failures = await this.compensator.rollback(e.instance, e.intents, log, removed, true);
      if (e.op === 'spawn') {
        // A spawn may have crashed between an action and its intent being read back: sweep
        // whatever carries the instance's name too (disks of its backend, a domain with its UUID).
        const sweep: JournalResource[] = [{ kind: 'domain', uuid: e.instance, name: String(e.data.domainName ?? '') }];
        const bname = typeof e.data.backend === 'string' ? e.data.backend : undefined;
        const b = bname ? tryBackend(this.backends, bname) : undefined;
        if (b) for (const d of await b.list({ instance: e.instance })) sweep.push({ kind: 'disk', backend: b.name, name: d.disk.name });
        failures.push(...(await this.compensator.rollback(e.instance, sweep.map((resource) => ({ step: 'sweep', resource })), log, removed)));
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
        if (pending.has(inst) || this.inFlight.mutex.busy(inst)) continue;
        if (await this.session.domain(inst)) continue;
        if (await this.store.read(inst)) continue;
        report.orphans.push({ backend: b.name, id: d.id, instance: inst, name: d.disk.name, sizeBytes: d.sizeBytes });
      }
    }
    if (opts.remove) {
      for (const o of report.orphans) {
        await this.inFlight.mutex.run(o.instance, async () => {
          if (await this.session.domain(o.instance)) return;
          if (await requireBackend(this.backends, o.backend).remove({ instance: o.instance, name: o.name }, { busyTimeoutMs: this.config.timeouts.diskBusyMs })) report.removed.push(o.id);
        });
      }
    }
    return report;
  }
}
