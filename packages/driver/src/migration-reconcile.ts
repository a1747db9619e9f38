/**
 * Reconcile of a live migration whose driver died (issue 19.4). Each host finishes only its own
 * side (`migrate-out` on the source, `migrate-in` on the destination) but decides from what
 * libvirt says on BOTH hosts, once libvirt's own migration job is over (peer-to-peer migration is
 * driven by the source libvirtd, so it may finish after our process died):
 *
 * | source domain          | destination domain        | the guest lives on | source does           | destination does          |
 * | ---------------------- | ------------------------- | ------------------ | --------------------- | ------------------------- |
 * | running                | absent / inactive / paused| source             | keeps its record      | destroys its copy, undoes |
 * | paused                 | absent / inactive / paused| source             | resumes, keeps record | destroys its copy, undoes |
 * | absent / inactive      | running                   | destination        | drops record, undefine| commits the record        |
 * | paused                 | running                   | destination        | destroys, drops record| commits the record        |
 * | absent                 | paused                    | destination        | drops its record      | resumes, commits          |
 * | running                | running                   | both: reported, never guessed |            |                           |
 * | absent                 | absent                    | nowhere: reported (the record stays on the source) |  |
 *
 * A paused destination domain is the live copy only when the source has none: libvirt resumes
 * the destination as the migration's last step, so a paused one beside a source domain is an
 * incomplete incoming copy. Every rule gives the same answer whichever host reconciles first,
 * and again when run twice. Block migrations (local disks) follow the same table: the host the
 * guest does not run on removes its copies of the disks (the destination's are journaled intents,
 * the source's go with its record), so a half-copied overlay never outlives a failed move.
 */
import { rm } from 'node:fs/promises';
import { sleep } from '@ephemera/image-backend';
import { connect, isLibvirtError, type Connection, type Domain } from '@ephemera/libvirt-napi';
import type { Compensator } from './compensator.js';
import type { JournalEntry } from './journal.js';
import type { LibvirtSession } from './libvirt-session.js';
import type { InstanceStore } from './instance-store.js';
import type { Logger } from './logger.js';
import type { InstanceRecord } from './types.js';
import { errMessage } from './util.js';

/** How long reconcile waits for libvirt's own migration job (on either host) to end. */
export const MIGRATION_SETTLE_MS = 90_000;

/** One host's view of the instance's domain. */
export interface SideState {
  /** `absent`: no domain; `inactive`: defined, not running. */
  state: 'absent' | 'inactive' | 'running' | 'paused' | 'other';
  /** libvirt has a job on the domain (a migration in flight). */
  job: boolean;
}

async function sideState(dom: Domain | undefined): Promise<SideState> {
  if (!dom) return { state: 'absent', job: false };
  let st: Awaited<ReturnType<Domain['state']>>;
  try {
    st = await dom.state();
  } catch (err) {
    if (isLibvirtError(err, 'VIR_ERR_NO_DOMAIN')) return { state: 'absent', job: false };
    throw err;
  }
  const job = await dom.getJobStats().then(
    (s) => s.type === 'unbounded' || s.type === 'bounded',
    () => false,
  );
  const state =
    st.state === 'running'
      ? 'running'
      : st.state === 'paused'
        ? 'paused'
        : st.state === 'shutoff'
          ? 'inactive'
          : 'other';
  return { state, job };
}

async function lookup(conn: Connection, uuid: string): Promise<Domain | undefined> {
  try {
    return await conn.lookupByUUID(uuid);
  } catch (err) {
    if (isLibvirtError(err, 'VIR_ERR_NO_DOMAIN')) return undefined;
    throw err;
  }
}

/** What the migration reconcile needs of the driver. */
export interface MigrationReconcileDeps {
  session: LibvirtSession;
  store: InstanceStore;
  compensator: Compensator;
  /** Hands the instance's disks to this host once the guest is known to run here. */
  takeDisks?: (rec: InstanceRecord) => Promise<void>;
  /**
   * Source of a block migration whose guest runs on the destination: removes this host's copies
   * of the instance's local disks (nothing for shared ones); returns what went.
   */
  removeLocalDisks?: (instance: string, backend: string) => Promise<string[]>;
  settleMs?: number;
}

/** What reconcile did with one migration entry. */
export interface MigrationReconcileResult {
  /** Empty when the entry is finished. */
  failures: string[];
  /** The guest ended up on the destination (the migration is completed rather than rolled back). */
  completed: boolean;
}

/** Finishes one `migrate-out` or `migrate-in` entry. */
export async function reconcileMigration(
  deps: MigrationReconcileDeps,
  e: JournalEntry,
  log: Logger,
  removed: string[],
): Promise<MigrationReconcileResult> {
  const r = await decide(deps, e, log, removed);
  return Array.isArray(r) ? { failures: r, completed: false } : r;
}

async function decide(
  deps: MigrationReconcileDeps,
  e: JournalEntry,
  log: Logger,
  removed: string[],
): Promise<string[] | MigrationReconcileResult> {
  const uuid = e.instance;
  const source = e.op === 'migrate-out';
  const peerUri = source ? (e.details['migrate-started']?.to ?? e.details['prepare-destination']?.to) : e.data.from;
  const local = await deps.session.domain(uuid);
  if (typeof peerUri !== 'string') {
    // No peer known: the source never learned its destination, the destination was prepared
    // by an older source. Only what is clear from this host alone is finished.
    const here = await sideState(local);
    if (source)
      return here.state === 'running' || here.state === 'paused'
        ? []
        : [`migration of ${uuid} out of this host: its domain is not here; check the destination`];
    if (here.state !== 'absent')
      return [`migration of ${uuid} into this host: a domain is here without a committed record`];
    return deps.compensator.rollback(uuid, e.intents, log, removed, true);
  }
  let peer: Connection;
  try {
    peer = await connect(peerUri);
  } catch (err) {
    return [
      `migration of ${uuid}: the ${source ? 'destination' : 'source'} ${peerUri} does not answer (${errMessage(err)}); run reconcile again when it does`,
    ];
  }
  try {
    // Wait for libvirt's job to end on both hosts (it may still switch the guest over).
    const deadline = performance.now() + (deps.settleMs ?? MIGRATION_SETTLE_MS);
    let here: SideState;
    let there: SideState;
    for (;;) {
      here = await sideState(await deps.session.domain(uuid));
      there = await sideState(await lookup(peer, uuid));
      if (!here.job && !there.job) break;
      if (performance.now() > deadline)
        return [`migration of ${uuid}: libvirt's migration job is still running; run reconcile again`];
      await sleep(250);
    }
    const src = source ? here : there;
    const dst = source ? there : here;
    log.info({ source: src.state, destination: dst.state }, 'reconcile: interrupted migration');
    if (src.state === 'running' && dst.state === 'running')
      return [`migration of ${uuid}: the guest runs on both hosts; stop one by hand (the source keeps the record)`];
    if (src.state === 'other' || dst.state === 'other')
      return [
        `migration of ${uuid}: a domain is in an unexpected state (source ${src.state}, destination ${dst.state})`,
      ];
    // Where the guest lives from now on (the table in the file comment).
    const onDestination = dst.state === 'running' || (dst.state === 'paused' && src.state === 'absent');
    const lost = src.state !== 'running' && src.state !== 'paused' && !onDestination;
    if (lost)
      return [
        `migration of ${uuid}: the guest runs on neither host (source ${src.state}, destination ${dst.state}); the source keeps the record`,
      ];
    const failures = source
      ? await finishSource(deps, e, onDestination, removed)
      : await finishDestination(deps, e, onDestination, log, removed);
    return { failures, completed: onDestination };
  } finally {
    await peer.close().catch(() => undefined);
  }
}

async function finishSource(
  deps: MigrationReconcileDeps,
  e: JournalEntry,
  onDestination: boolean,
  removed: string[],
): Promise<string[]> {
  const uuid = e.instance;
  const dom = await deps.session.domain(uuid);
  if (!onDestination) {
    // The migration failed while the guest was paused for the switch-over: run it again here.
    if (dom && (await dom.state()).state === 'paused') await dom.resume();
    return [];
  }
  if (dom) {
    if (await dom.isActive())
      await dom.destroy().catch((err) => {
        if (!isLibvirtError(err, 'VIR_ERR_OPERATION_INVALID')) throw err;
      });
    await dom.undefine().catch((err) => {
      if (!isLibvirtError(err, 'VIR_ERR_NO_DOMAIN')) throw err;
    });
    removed.push(`domain ${dom.name()}`);
  }
  // A block migration's source copies of local disks (the guest runs on the destination's).
  const backend = e.data.backend ?? (await deps.store.read(uuid))?.backend;
  if (typeof backend === 'string' && deps.removeLocalDisks)
    removed.push(...(await deps.removeLocalDisks(uuid, backend)));
  await rm(deps.store.dir(uuid), { recursive: true, force: true });
  removed.push(`files ${deps.store.dir(uuid)}`);
  return [];
}

async function finishDestination(
  deps: MigrationReconcileDeps,
  e: JournalEntry,
  onDestination: boolean,
  log: Logger,
  removed: string[],
): Promise<string[]> {
  const uuid = e.instance;
  if (!onDestination) {
    // The incoming copy (paused, or defined but never run) is never the live one here.
    const name = String(e.data.domainName ?? uuid);
    return deps.compensator.rollback(
      uuid,
      [...e.intents, { step: 'incoming-domain', resource: { kind: 'domain', uuid, name } }],
      log,
      removed,
      true,
      false,
    );
  }
  const rec = e.data.record as InstanceRecord | undefined;
  if (!rec || typeof rec !== 'object' || rec.uuid?.toLowerCase() !== uuid)
    return [`migration of ${uuid} into this host: the guest runs here but the journal has no record to commit`];
  const dom = await deps.session.domain(uuid);
  if (dom && (await dom.state()).state === 'paused') await dom.resume();
  // The guest runs here: its disks become this host's before the record commits (as a live migration does).
  await deps.takeDisks?.(rec);
  await deps.store.write({ ...rec, consolePath: deps.store.consolePath(uuid) });
  return [];
}
