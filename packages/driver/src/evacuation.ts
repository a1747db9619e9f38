/**
 * Evacuation of an instance whose host is dead (issue 19.5), run on a surviving host: refused
 * while the dead host's libvirtd still answers; then the dead host's Ceph clients on the
 * instance's disks are fenced (blocklisted: a half-dead host can never write again), the disks
 * are taken over (`setOwner`), and the domain is defined and started here from the definition
 * recorded on the root disk at spawn (the dead host's state directory is never read). Journaled
 * (`evacuate`: fence, take, define, start) with rollback; a fence is not undone (the dead host's
 * clients stay fenced, which is what a dead host needs anyway).
 */
import { mkdir } from 'node:fs/promises';
import { inject, injectable } from 'inversify';
import {
  BACKEND_REGISTRY,
  isUuid,
  type BackendRegistry,
  type DiskClient,
  type DiskInfo,
  type DiskRef,
  type DiskSource,
} from '@ephemera/image-backend';
import { connect as libvirtConnect, DefineFlags } from '@ephemera/libvirt-napi';
import { defineCephSecret, findCephSecret } from './ceph.js';
import { Compensator } from './compensator.js';
import type { DriverConfig } from './config.js';
import { DriverError, isDriverError } from './errors.js';
import { DriverEventBus, InFlight } from './in-flight.js';
import { INSTANCE_SPEC_KEY, evacuationPlan, fencedAddresses, parseInstanceSpec } from './instance-spec.js';
import { InstanceStore } from './instance-store.js';
import type { Journal, JournalOp } from './journal.js';
import { LibvirtSession } from './libvirt-session.js';
import type { Logger } from './logger.js';
import { SpawnWorkflow } from './spawn.js';
import { DRIVER_TYPES } from './tokens.js';
import type { CephContext, InstanceDisk, InstanceRecord } from './types.js';
import { errMessage, ownerStamp, takeDisks, targetDev } from './util.js';

/** Default bound of the check that the source host's libvirtd does not answer. */
export const DEFAULT_EVACUATE_PROBE_MS = 5_000;

/** The dead host an instance is evacuated from. */
export interface EvacuationSource {
  /** Its host id (`host.id`), as recorded on the instance's disks. */
  hostId: string;
  /** Its libvirtd's URI: evacuation is refused while a connection to it opens. */
  libvirtUri: string;
}

/** `Driver.evacuate()` options. */
export interface EvacuateOptions {
  /** The dead host. */
  from: EvacuationSource;
  /** How long to try to reach the source's libvirtd (default {@link DEFAULT_EVACUATE_PROBE_MS}). */
  probeTimeoutMs?: number;
  /** Aborts before the domain runs here (what was done is rolled back; the fence stays). */
  signal?: AbortSignal;
}

/** What `Driver.evacuate()` returns. */
export interface EvacuateResult {
  instance: string;
  fromHost: string;
  /** Client addresses blocklisted on the instance's disks (empty when none held them). */
  fenced: string[];
  /** `<backend>:<disk id>` of the disks taken over. */
  disks: string[];
  durationMs: number;
}

/**
 * Whether the libvirtd at `uri` answers within `timeoutMs`: a read-only connection opens. A
 * connection that opens after the bound is closed when it does.
 */
export async function libvirtAnswers(uri: string, timeoutMs: number): Promise<{ answers: boolean; error?: string }> {
  const attempt = libvirtConnect(uri, { readOnly: true, keepAlive: false });
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'late'>((resolve) => {
    timer = setTimeout(() => resolve('late'), timeoutMs);
  });
  try {
    const r = await Promise.race([attempt, late]);
    if (r === 'late') {
      attempt.then((c) => c.close()).catch(() => undefined);
      return { answers: false, error: `no answer within ${timeoutMs} ms` };
    }
    await r.close().catch(() => undefined);
    return { answers: true };
  } catch (err) {
    return { answers: false, error: errMessage(err) };
  } finally {
    clearTimeout(timer);
  }
}

@injectable()
export class EvacuationWorkflow {
  constructor(
    @inject(DRIVER_TYPES.Config) private readonly config: DriverConfig,
    @inject(DRIVER_TYPES.Logger) private readonly log: Logger,
    @inject(DRIVER_TYPES.Journal) private readonly journal: Journal,
    @inject(BACKEND_REGISTRY) private readonly backends: BackendRegistry,
    @inject(DRIVER_TYPES.CephContext) private readonly ceph: CephContext,
    @inject(LibvirtSession) private readonly session: LibvirtSession,
    @inject(InstanceStore) private readonly store: InstanceStore,
    @inject(DriverEventBus) private readonly events: DriverEventBus,
    @inject(InFlight) private readonly inFlight: InFlight,
    @inject(Compensator) private readonly compensator: Compensator,
    @inject(SpawnWorkflow) private readonly spawner: SpawnWorkflow,
  ) {}

  /** See `Driver.evacuate()`. */
  async evacuate(instance: string, opts: EvacuateOptions): Promise<EvacuateResult> {
    const t0 = performance.now();
    if (typeof instance !== 'string' || !isUuid(instance))
      throw new DriverError('INVALID_ARGUMENT', `not an instance UUID: ${JSON.stringify(instance)}`);
    const uuid = instance.toLowerCase();
    const from = opts?.from;
    if (!from || typeof from.libvirtUri !== 'string' || from.libvirtUri === '')
      throw new DriverError('INVALID_ARGUMENT', 'evacuate needs the dead host: from { hostId, libvirtUri }', {
        instance: uuid,
      });
    if (from.libvirtUri === this.config.libvirt.uri)
      throw new DriverError('INVALID_ARGUMENT', `the source ${from.libvirtUri} is this host's libvirtd`, {
        instance: uuid,
      });
    const probeMs = opts.probeTimeoutMs ?? DEFAULT_EVACUATE_PROBE_MS;
    if (!Number.isFinite(probeMs) || probeMs <= 0)
      throw new DriverError('INVALID_ARGUMENT', 'probeTimeoutMs must be a positive number', { instance: uuid });
    return this.inFlight.mutex.run(uuid, async () => {
      const log = this.log.child({ instance: uuid, op: 'evacuate', fromHost: from.hostId });
      const disks: { backend: string; disk: DiskInfo }[] = [];
      for (const b of this.backends.all())
        for (const d of await b.list({ instance: uuid })) disks.push({ backend: b.name, disk: d });
      const plan = evacuationPlan({
        instance: uuid,
        fromHost: from.hostId,
        thisHost: this.config.host.id,
        disks,
        localBackends: this.backends
          .all()
          .filter((b) => !b.fenceClients)
          .map((b) => b.name),
      });
      const backend = this.backends.get(plan.backend);
      if (!backend.setOwner || !backend.getAnnotation || !backend.fenceClients)
        throw new DriverError('UNSUPPORTED', `backend ${backend.name} cannot hand disks over or fence their clients`, {
          instance: uuid,
        });
      if ((await this.store.read(uuid)) || (await this.session.domain(uuid)))
        throw new DriverError('INSTANCE_EXISTS', `instance ${uuid} already exists on ${this.config.libvirt.uri}`, {
          instance: uuid,
        });
      const root: DiskRef = { instance: uuid, name: 'disk' };
      const spec = parseInstanceSpec(await backend.getAnnotation(root, INSTANCE_SPEC_KEY), uuid);
      // The last check before anything changes: a host whose libvirtd answers is not dead.
      const probe = await libvirtAnswers(from.libvirtUri, probeMs);
      if (probe.answers)
        throw new DriverError(
          'HOST_ALIVE',
          `host ${from.hostId}'s libvirtd (${from.libvirtUri}) still answers: evacuation is for dead hosts only (migrate a running instance instead, or stop that host first)`,
          { instance: uuid },
        );
      log.info({ probe: probe.error }, `host ${from.hostId}'s libvirtd does not answer: evacuating`);
      opts.signal?.throwIfAborted();

      const domainName = this.store.domainName(uuid);
      const op = await this.journal.begin('evacuate', uuid, {
        name: spec.name,
        imageId: spec.imageId,
        backend: backend.name,
        domainName,
        fromHost: from.hostId,
        fromUri: from.libvirtUri,
      });
      this.inFlight.active.add(op.opId);
      this.events.emit('lifecycle', { instance: uuid, state: 'evacuating', detail: from.hostId });
      try {
        // 1. fence: after this no client of the dead host can write to the disks.
        this.#step(uuid, 'fence', 'started');
        const fenced: DiskClient[] = [];
        for (const d of plan.disks) fenced.push(...(await backend.fenceClients({ instance: uuid, name: d.disk.name })));
        const addresses = fencedAddresses(fenced);
        await op.done('fence', { addresses });
        this.#step(uuid, 'fence', 'done');
        log.info({ addresses }, `fenced ${addresses.length} client address(es)`);

        // 2. take the disks (given back to the dead host on rollback).
        opts.signal?.throwIfAborted();
        await op.intent('take', { kind: 'owner', backend: backend.name, hostId: from.hostId });
        await takeDisks(this.backends, { uuid, backend: backend.name }, ownerStamp(this.config), from.hostId);
        await op.done('take');

        // 3. secret, instance directory, define, start.
        const disks: InstanceDisk[] = plan.disks
          .sort((x, y) => diskOrder(x.disk.name) - diskOrder(y.disk.name))
          .map((d, i) => ({ name: d.disk.name, target: targetDev(this.config.disk.bus, i), sizeBytes: d.sizeBytes }));
        const sources: DiskSource[] = [];
        for (const d of disks) sources.push(await backend.diskSource({ instance: uuid, name: d.name }));
        for (const su of new Set(sources.flatMap((s) => (s.type === 'network' && s.auth ? [s.auth.secretUuid] : []))))
          await this.#ensureSecret(op, su);
        await op.intent('files', { kind: 'file', path: this.store.dir(uuid) });
        await mkdir(this.store.dir(uuid), { recursive: true, mode: 0o750 });
        opts.signal?.throwIfAborted();
        const xml = this.spawner.domainXml(
          uuid,
          spec.name,
          domainName,
          { instance: uuid, image: spec.imageId, flavor: spec.flavor, ...(spec.domain ? { domain: spec.domain } : {}) },
          spec.flavor,
          disks,
          sources,
          backend,
        );
        this.#step(uuid, 'define', 'started');
        await op.intent('define', { kind: 'domain', uuid, name: domainName });
        await (await this.session.connection()).defineXML(xml, DefineFlags.VALIDATE);
        await op.done('define');
        this.#step(uuid, 'define', 'done');
        this.#step(uuid, 'start', 'started');
        await op.intent('start', { kind: 'domain', uuid, name: domainName });
        await this.session.start(uuid, opts.signal);
        await op.done('start');
        this.#step(uuid, 'start', 'done');

        const rec: InstanceRecord = {
          uuid,
          name: spec.name,
          domainName,
          imageId: spec.imageId,
          backend: backend.name,
          flavor: spec.flavor,
          disks,
          consolePath: this.store.consolePath(uuid),
          createdAt: spec.createdAt,
          rootDisk: spec.rootDisk,
        };
        await this.store.write(rec);
        await op.end('committed');
        this.events.emit('lifecycle', { instance: uuid, state: 'running', detail: `evacuated from ${from.hostId}` });
        const result: EvacuateResult = {
          instance: uuid,
          fromHost: from.hostId,
          fenced: addresses,
          disks: plan.disks.map((d) => `${backend.name}:${d.id}`),
          durationMs: performance.now() - t0,
        };
        log.info({ fenced: addresses, durationMs: Math.round(result.durationMs) }, 'evacuated');
        return result;
      } catch (err) {
        this.#step(uuid, 'evacuate', 'failed', errMessage(err));
        const failures = await this.compensator.rollback(
          uuid,
          op.intents,
          log,
          [],
          false,
          opts.signal?.aborted === true,
        );
        await op.end(failures.length ? 'rollback-failed' : 'rolled-back', errMessage(err)).catch(() => undefined);
        this.events.emit('lifecycle', { instance: uuid, state: 'error', detail: errMessage(err) });
        const left = failures.length ? `; rollback left: ${failures.join('; ')} (run reconcile)` : '';
        if (opts.signal?.aborted)
          throw new DriverError(
            failures.length ? 'ROLLBACK_FAILED' : 'ABORTED',
            `evacuation of ${uuid} aborted${left}`,
            {
              instance: uuid,
              cause: err,
            },
          );
        if (isDriverError(err) && !left) throw err;
        throw new DriverError(
          left ? 'ROLLBACK_FAILED' : 'SPAWN_FAILED',
          `evacuation of ${uuid} failed: ${errMessage(err)}${left}`,
          {
            instance: uuid,
            cause: err,
          },
        );
      } finally {
        this.inFlight.active.delete(op.opId);
      }
    });
  }

  #step(instance: string, step: string, status: 'started' | 'done' | 'failed', error?: string): void {
    this.events.emit('step', { instance, op: 'evacuate', step, status, ...(error ? { error } : {}) });
  }

  /** Defines the ceph secret when libvirt does not have it (journaled: a rollback removes one it created). */
  async #ensureSecret(op: JournalOp, uuid: string): Promise<void> {
    const c = this.ceph;
    const conn = await this.session.connection();
    const existing = await findCephSecret(conn, uuid, c.user);
    if (existing === uuid) return;
    if (existing !== undefined)
      throw new DriverError(
        'INVALID_CONFIG',
        `libvirt already has a ceph secret for client.${c.user} with UUID ${existing}; set images.rbd.secretUuid to it`,
      );
    if (!c.keyringPath)
      throw new DriverError('INVALID_CONFIG', `no keyring for client.${c.user}: set images.rbd.keyring`);
    await op.intent('secret', { kind: 'secret', uuid, created: true });
    await defineCephSecret(conn, uuid, c.user, c.keyringPath);
    await op.done('secret');
  }
}

/** Root first, then ephemeral, swap, then any other disk by name (the order spawn attaches them). */
function diskOrder(name: string): number {
  const known = ['disk', 'disk.local', 'disk.swap'];
  const i = known.indexOf(name);
  return i >= 0 ? i : known.length;
}
