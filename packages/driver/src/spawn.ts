/**
 * The spawn workflow: check the request, resolve the image, create the root disk (clone or
 * import), the blank disks, the ceph secret (once), define and start the domain, write the record.
 * Every step is journaled before it acts; a failure or abort hands the intents to the compensator.
 */
import { mkdir } from 'node:fs/promises';
import { inject, injectable } from 'inversify';
import {
  GLANCE_TYPES,
  type BackendKind,
  type GlanceClient,
  type GlanceImage,
  type ImageResolver,
  type Plan,
  type ResolveTarget,
} from '@ephemera/glance';
import {
  BACKEND_REGISTRY,
  KEY_PROVIDER,
  isImageBackendError,
  isUuid,
  type BackendRegistry,
  type DiskEncryption,
  type DiskRef,
  type DiskSource,
  type ImageBackend,
  type KeyProvider,
} from '@ephemera/image-backend';
import { DefineFlags } from '@ephemera/libvirt-napi';
import { domainXml, iotuneFromFlavor, type DiskSpec, type DomainSpec, type IoTune } from '@ephemera/libvirt-xml';
import { isBootableBackend } from './backend-names.js';
import { customizeDomainSpec, type DomainHook } from './domain-spec.js';
import { Compensator } from './compensator.js';
import { Flattener, cloneDepthPolicy } from './flattener.js';
import {
  defineVolumeSecret,
  encryptionRequest,
  volumeSecretUuid,
  type EncryptionRequest,
  type InstanceEncryption,
} from './encryption.js';
import type { DriverConfig } from './config.js';
import { DriverError, isDriverError } from './errors.js';
import type { SpawnStep } from './events.js';
import { DriverEventBus, InFlight } from './in-flight.js';
import { InstanceStore } from './instance-store.js';
import type { Journal, JournalOp } from './journal.js';
import { LibvirtSession } from './libvirt-session.js';
import { CephSecretGuard, isMissingSecret } from './spawn-secret.js';
import type { Logger } from './logger.js';
import { sourceImageFromGlance } from './source-image.js';
import { DRIVER_TYPES } from './tokens.js';
import { INSTANCE_SPEC_KEY, formatInstanceSpec } from './instance-spec.js';
import type {
  CephContext,
  Flavor,
  InstanceDisk,
  InstanceRecord,
  RootDiskReport,
  SpawnRequest,
  SpawnResult,
} from './types.js';
import { GiB, MiB, errMessage, imageError, ownerStamp, requireBackend, targetDev } from './util.js';

@injectable()
export class SpawnWorkflow {
  constructor(
    @inject(DRIVER_TYPES.Config) private readonly config: DriverConfig,
    @inject(DRIVER_TYPES.Logger) private readonly log: Logger,
    @inject(DRIVER_TYPES.Journal) private readonly journal: Journal,
    @inject(BACKEND_REGISTRY) private readonly backends: BackendRegistry,
    @inject(GLANCE_TYPES.GlanceClient) private readonly glance: GlanceClient,
    @inject(GLANCE_TYPES.ImageResolver) private readonly resolver: ImageResolver,
    @inject(DRIVER_TYPES.CephContext) private readonly ceph: CephContext,
    @inject(LibvirtSession) private readonly session: LibvirtSession,
    @inject(InstanceStore) private readonly store: InstanceStore,
    @inject(DriverEventBus) private readonly events: DriverEventBus,
    @inject(InFlight) private readonly inFlight: InFlight,
    @inject(Compensator) private readonly compensator: Compensator,
    @inject(DRIVER_TYPES.DomainHook) private readonly domainHook: DomainHook | null,
    @inject(KEY_PROVIDER) private readonly keys: KeyProvider,
    @inject(Flattener) private readonly flattener: Flattener,
    @inject(CephSecretGuard) private readonly secrets: CephSecretGuard,
  ) {}

  /** The resolver target of this node for a backend. */
  resolveTarget(backend: string = this.config.images.type): ResolveTarget {
    const kind: BackendKind = isBootableBackend(backend) ? backend : 'lvm';
    const target: ResolveTarget = { backend: kind, fileDirs: [], allowHttp: true };
    if (kind === 'rbd' && this.ceph.fsid)
      target.ceph = { fsid: this.ceph.fsid, pools: [...this.config.images.rbd.imagePools] };
    return target;
  }

  /** The resolver's plan for an image on a backend. */
  async plan(imageId: string, backend?: string, signal?: AbortSignal): Promise<Plan> {
    try {
      return await this.resolver.resolve(imageId, this.resolveTarget(backend), signal ? { signal } : {});
    } catch (err) {
      throw imageError(imageId, err);
    }
  }

  /**
   * Spawns an instance: resolve the image, create the root disk (clone or import), the blank
   * ephemeral and swap disks, the ceph secret (once), define and start the domain, wait until it
   * runs. Journaled; on failure everything created is removed. Returns timings per step and how
   * the root disk was made.
   */
  async spawn(req: SpawnRequest): Promise<SpawnResult> {
    const inst = typeof req.instance === 'string' ? { uuid: req.instance } : req.instance;
    if (!inst || typeof inst.uuid !== 'string' || !isUuid(inst.uuid))
      throw new DriverError('INVALID_ARGUMENT', 'instance must be a UUID');
    const uuid = inst.uuid.toLowerCase();
    const f = req.flavor;
    const int = (v: unknown, name: string, min: number, max: number): number => {
      if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
        throw new DriverError('INVALID_ARGUMENT', `flavor.${name} must be an integer in ${min}..${max}`, {
          instance: uuid,
        });
      }
      return v;
    };
    if (!f || typeof f !== 'object')
      throw new DriverError('INVALID_ARGUMENT', 'flavor is required', { instance: uuid });
    int(f.vcpus, 'vcpus', 1, 256);
    int(f.memoryMiB, 'memoryMiB', 16, 4 * 1024 * 1024);
    int(f.rootGiB, 'rootGiB', 0, 65536);
    int(f.ephemeralGiB ?? 0, 'ephemeralGiB', 0, 65536);
    int(f.swapMiB ?? 0, 'swapMiB', 0, 1024 * 1024);
    // Glance image ids are UUIDs: anything else is a usage error, found before the journal.
    if (typeof req.image !== 'string' || !isUuid(req.image)) {
      throw new DriverError(
        'INVALID_ARGUMENT',
        `image ${JSON.stringify(req.image)} is not a Glance image id (a UUID)`,
        { instance: uuid },
      );
    }
    const name = inst.name ?? uuid;
    if (typeof name !== 'string' || name.length === 0 || name.length > 255 || /[\0-\x1f\x7f]/.test(name)) {
      throw new DriverError('INVALID_ARGUMENT', 'instance name must be 1..255 printable characters', {
        instance: uuid,
      });
    }
    const backend = requireBackend(this.backends, req.backend ?? this.config.images.type);
    const encryption = encryptionRequest(req.encryption, f, uuid);
    if (encryption && !backend.capabilities.encryption)
      throw new DriverError('UNSUPPORTED', `backend ${backend.name} lacks the encryption capability`, {
        instance: uuid,
      });
    // Validate everything that goes into the domain XML (names, flavor, extra specs) before any
    // disk exists: the XML builders refuse what they cannot express safely.
    try {
      const probe: DiskSource = { type: 'file', path: '/dev/null', format: 'raw' };
      const disks: InstanceDisk[] = [{ name: 'disk', target: targetDev(this.config.disk.bus, 0), sizeBytes: 0 }];
      this.domainXml(uuid, name, this.store.domainName(uuid), req, f, disks, [probe], backend);
    } catch (err) {
      if (isDriverError(err)) throw err;
      throw new DriverError('INVALID_ARGUMENT', `invalid instance definition: ${errMessage(err)}`, {
        instance: uuid,
        cause: err,
      });
    }
    return this.inFlight.mutex.run(uuid, () => this.#spawn(uuid, name, req, backend, encryption));
  }

  async #spawn(
    uuid: string,
    name: string,
    req: SpawnRequest,
    backend: ImageBackend,
    encryption: EncryptionRequest | undefined,
  ): Promise<SpawnResult> {
    const log = this.log.child({ instance: uuid, op: 'spawn' });
    const started = performance.now();
    const timings: Partial<Record<SpawnStep, number>> = {};
    const signal = req.signal
      ? AbortSignal.any([req.signal, AbortSignal.timeout(this.config.timeouts.importMs)])
      : AbortSignal.timeout(this.config.timeouts.importMs);
    // The image record and the plan only read Glance (and the image's snapshot): fetched while the
    // checks below run, not after them. Awaited (errors included) in the resolve step.
    const resolving = this.#resolve(req.image, uuid, backend, signal);
    resolving.catch(() => undefined);
    const t0 = performance.now();
    this.events.emit('step', { instance: uuid, op: 'spawn', step: 'preflight', status: 'started' });
    // Before anything (the journal, a disk): a backend that cannot serve disks now (e.g. no Ceph
    // monitor: QEMU could not open an RBD disk and the domain start would hang) fails fast. The
    // checks run at once; the first failure in this order is the one reported.
    const checks = await Promise.allSettled([
      backend.checkAvailable?.().catch((err: unknown) => {
        throw new DriverError(
          'SPAWN_FAILED',
          `spawn of ${uuid}: backend ${backend.name} is unavailable: ${errMessage(err)}`,
          { instance: uuid, cause: err },
        );
      }),
      this.secrets.check(backend),
      this.store.read(uuid).then((rec) => {
        if (rec) throw new DriverError('INSTANCE_EXISTS', `instance ${uuid} exists`, { instance: uuid });
      }),
      this.session.domain(uuid).then((dom) => {
        if (dom)
          throw new DriverError('INSTANCE_EXISTS', `a libvirt domain with UUID ${uuid} exists`, { instance: uuid });
      }),
      ...this.backends.all().map(async (b) => {
        if ((await b.list({ instance: uuid })).length > 0) {
          throw new DriverError(
            'INSTANCE_EXISTS',
            `backend ${b.name} already holds disks of ${uuid} (run gc or reconcile)`,
            { instance: uuid },
          );
        }
      }),
    ]);
    const failed = checks.find((c) => c.status === 'rejected');
    const preflightMs = performance.now() - t0;
    this.events.emit('step', {
      instance: uuid,
      op: 'spawn',
      step: 'preflight',
      status: failed ? 'failed' : 'done',
      durationMs: preflightMs,
      ...(failed ? { error: errMessage(failed.reason) } : {}),
    });
    if (failed) throw failed.reason;
    timings.preflight = preflightMs;
    // Aborted before anything exists (e.g. while the CLI reconciled): nothing to journal or undo.
    if (req.signal?.aborted)
      throw new DriverError('ABORTED', `spawn of ${uuid} aborted before it began (${errMessage(req.signal.reason)})`, {
        instance: uuid,
      });
    const flavor = req.flavor;
    const domainName = this.store.domainName(uuid);
    const op = await this.journal.begin('spawn', uuid, {
      name,
      imageId: req.image,
      backend: backend.name,
      domainName,
      flavor,
      ...(encryption ? { encryption: encryption.format } : {}),
    });
    this.inFlight.active.add(op.opId);
    this.events.emit('lifecycle', { instance: uuid, state: 'spawning' });
    log.info({ opId: op.opId, image: req.image, backend: backend.name, flavor }, 'spawn: begin');
    const step = async <T>(s: SpawnStep, fn: () => Promise<T>): Promise<T> => {
      const t = performance.now();
      this.events.emit('step', { instance: uuid, op: 'spawn', step: s, status: 'started' });
      try {
        // The caller's abort only: timeouts.importMs bounds the image transfer, not the steps.
        req.signal?.throwIfAborted();
        const v = await fn();
        const ms = performance.now() - t;
        timings[s] = ms;
        this.events.emit('step', { instance: uuid, op: 'spawn', step: s, status: 'done', durationMs: ms });
        log.info({ step: s, durationMs: Math.round(ms) }, `spawn: ${s} done`);
        return v;
      } catch (err) {
        this.events.emit('step', {
          instance: uuid,
          op: 'spawn',
          step: s,
          status: 'failed',
          durationMs: performance.now() - t,
          error: errMessage(err),
        });
        throw err;
      }
    };

    try {
      // 1. the image and the plan
      // Most of it ran during the preflight: this step is what remained.
      const { image, plan } = await step('resolve', () => resolving);
      const virtualSize = image.virtual_size ?? image.size ?? 0;
      const rootBytes = flavor.rootGiB > 0 ? flavor.rootGiB * GiB : undefined;
      if (rootBytes !== undefined && rootBytes < virtualSize) {
        throw new DriverError(
          'IMAGE_UNUSABLE',
          `flavor root disk (${flavor.rootGiB} GiB) is smaller than the image (${virtualSize} bytes)`,
          { instance: uuid },
        );
      }

      // 2. instance directory (console log, record)
      req.signal?.throwIfAborted();
      const dir = this.store.dir(uuid);
      await op.intent('instance-dir', { kind: 'file', path: dir });
      await mkdir(dir, { recursive: true, mode: 0o750 });
      await op.done('instance-dir');

      // 2b. the key and the libvirt volume secret, journaled first so a crash leaves neither behind
      const enc = encryption ? await step('key', () => this.#makeKey(op, uuid)) : undefined;
      const diskEnc: DiskEncryption | undefined = enc && {
        format: enc.format,
        secretUuid: enc.secretUuid,
        passphrase: () => this.keys.getKey(uuid),
      };

      // 3. root disk
      const root: DiskRef = { instance: uuid, name: 'disk' };
      const forceImport = req.forceImport ?? !this.config.images.useCowImages;
      const made = await step('root-disk', async () => {
        await op.intent('root-disk', { kind: 'disk', backend: backend.name, name: 'disk' });
        const r = await backend.createFromImage(root, sourceImageFromGlance(this.glance, image), {
          ...(rootBytes !== undefined ? { sizeBytes: rootBytes } : {}),
          forceImport,
          ...(diskEnc ? { encryption: diskEnc } : {}),
          owner: ownerStamp(this.config),
          signal,
          onProgress: (e) => this.events.emit('progress', { ...e, instance: uuid, op: 'spawn', step: 'root-disk' }),
        });
        await op.done('root-disk', { method: r.method, ...(r.reason ? { reason: r.reason } : {}) });
        return r;
      });
      // Clone-depth policy: above the hard limit the chain is cut before the spawn returns.
      const depth = await cloneDepthPolicy(backend, root, this.config.images.rbd.cloneDepth, {
        signal,
        onProgress: (e) => this.events.emit('progress', { ...e, instance: uuid, op: 'spawn', step: 'root-disk' }),
      });
      const disks: InstanceDisk[] = [
        { name: 'disk', target: targetDev(this.config.disk.bus, 0), sizeBytes: made.sizeBytes },
      ];

      // 4. blank disks
      const blank = async (s: SpawnStep, diskName: string, bytes: number): Promise<void> => {
        await step(s, async () => {
          await op.intent(s, { kind: 'disk', backend: backend.name, name: diskName });
          const r = await backend.createBlank({ instance: uuid, name: diskName }, bytes, {
            ...(diskEnc ? { encryption: diskEnc } : {}),
            owner: ownerStamp(this.config),
            signal,
          });
          await op.done(s);
          disks.push({ name: diskName, target: targetDev(this.config.disk.bus, disks.length), sizeBytes: r.sizeBytes });
        });
      };
      if ((flavor.ephemeralGiB ?? 0) > 0) await blank('ephemeral-disk', 'disk.local', flavor.ephemeralGiB! * GiB);
      if ((flavor.swapMiB ?? 0) > 0) await blank('swap-disk', 'disk.swap', flavor.swapMiB! * MiB);

      // The definition goes on the root disk, so that another host can rebuild the instance
      // after this one died (evacuation) without this host's state directory.
      const createdAt = new Date().toISOString();
      const rootDisk: RootDiskReport = {
        method: made.method,
        ...(made.reason ? { reason: made.reason } : {}),
        durationMs: made.durationMs,
        sizeBytes: made.sizeBytes,
        ...(made.bytesWritten !== undefined ? { bytesWritten: made.bytesWritten } : {}),
        plan: {
          method: plan.chosen.method,
          handler: plan.chosen.handler,
          location: plan.chosen.location,
          declined: plan.declined,
        },
      };
      if (backend.setAnnotation) {
        const base = { uuid, name, imageId: req.image, backend: backend.name, flavor, disks, createdAt, rootDisk };
        const spec = enc ? { ...base, encryption: enc } : base;
        await backend.setAnnotation(root, INSTANCE_SPEC_KEY, formatInstanceSpec(spec, req.domain));
      }

      // 5. disk sources and the ceph secret
      const sources: DiskSource[] = [];
      for (const d of disks) sources.push(await backend.diskSource({ instance: uuid, name: d.name }));
      const secretUuids = [
        ...new Set(sources.flatMap((s) => (s.type === 'network' && s.auth ? [s.auth.secretUuid] : []))),
      ];
      if (secretUuids.length > 0) {
        await step('secret', async () => {
          for (const su of secretUuids) await this.secrets.ensure(op, su);
        });
      }

      // 6. define
      const xml = await step('xml', async () =>
        this.domainXml(uuid, name, domainName, req, flavor, disks, sources, backend),
      );
      await step('define', async () => {
        await op.intent('define', { kind: 'domain', uuid, name: domainName });
        // libvirt checks the XML against its schema: extra devices are only name-checked and escaped here.
        await (await this.session.connection()).defineXML(xml, DefineFlags.VALIDATE);
        await op.done('define');
      });

      // 7. start and wait until it runs
      await step('start', async () => {
        await op.intent('start', { kind: 'domain', uuid, name: domainName });
        try {
          await this.session.start(uuid, req.signal);
        } catch (err) {
          if (!secretUuids.length || !isMissingSecret(err)) throw err;
          // Someone removed the secret since we last saw it: define it again (journaled) and retry once.
          log.info({ err: errMessage(err) }, 'spawn: the ceph secret is gone: defining it again');
          this.secrets.forget(secretUuids);
          for (const su of secretUuids) await this.secrets.ensure(op, su);
          await this.session.start(uuid, req.signal);
        }
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
        consolePath: this.store.consolePath(uuid),
        createdAt,
        rootDisk,
        ...(enc ? { encryption: enc } : {}),
      };
      await this.store.write(record);
      await op.end('committed');
      if (depth === 'background') this.flattener.enqueue({ instance: uuid, backend: backend.name, disk: root.name });
      const totalMs = performance.now() - started;
      log.info({ rootDisk: made.method, reason: made.reason, totalMs: Math.round(totalMs) }, 'spawn: committed');
      this.events.emit('lifecycle', { instance: uuid, state: 'running' });
      return { instance: await this.session.info(record), rootDisk: record.rootDisk, timings, totalMs };
    } catch (err) {
      const aborted = req.signal?.aborted === true;
      // info, not warn: the error itself reaches the caller (the CLI prints it); at warn it was printed twice.
      log.info(
        { err: errMessage(err), aborted },
        aborted ? 'spawn aborted: rolling back' : 'spawn failed: rolling back',
      );
      // Aborted while libvirtd may still be starting the domain: the rollback lets that start
      // finish before destroying it, as reconcile does for a dead driver's start.
      const failures = await this.compensator.rollback(uuid, op.intents, log, [], false, aborted);
      await op.end(failures.length ? 'rollback-failed' : 'rolled-back', errMessage(err)).catch(() => undefined);
      this.events.emit('lifecycle', { instance: uuid, state: 'error', detail: errMessage(err) });
      if (aborted) {
        throw new DriverError(
          failures.length ? 'ROLLBACK_FAILED' : 'ABORTED',
          `spawn of ${uuid} aborted (${errMessage(req.signal!.reason)})${failures.length ? `; rollback left: ${failures.join('; ')} (run reconcile)` : '; rolled back'}`,
          { instance: uuid, cause: err },
        );
      }
      // Something of it is still there: the operator's next step is reconcile (exit 8), whatever failed first.
      if (failures.length)
        throw new DriverError(
          'ROLLBACK_FAILED',
          `spawn of ${uuid} failed: ${errMessage(err)}; rollback left: ${failures.join('; ')} (run reconcile)`,
          { instance: uuid, cause: err },
        );
      if (isDriverError(err)) throw err;
      // The backend's inspector refused the image's content: the image is unusable (exit 6), not a driver failure.
      if (isImageBackendError(err, 'UNSAFE_IMAGE')) {
        throw new DriverError(
          'IMAGE_UNUSABLE',
          `unusable image ${req.image}: ${errMessage(err)} (${String((err as { reason?: unknown }).reason ?? 'unsafe')})`,
          { instance: uuid, cause: err },
        );
      }
      throw new DriverError('SPAWN_FAILED', `spawn of ${uuid} failed: ${errMessage(err)}`, {
        instance: uuid,
        cause: err,
      });
    } finally {
      this.inFlight.active.delete(op.opId);
    }
  }

  /**
   * The resolver's plan and the Glance record it was made from; a record that cannot be used
   * (not active, empty) is reported before the plan's error.
   */
  async #resolve(
    imageId: string,
    uuid: string,
    backend: ImageBackend,
    signal: AbortSignal,
  ): Promise<{ image: GlanceImage; plan: Plan }> {
    // The plan carries the image record it was made from: one Glance GET per spawn. Only when no
    // plan comes is the record fetched on its own, so an inactive or empty image says so.
    let plan: Plan;
    try {
      plan = await this.plan(imageId, backend.name, signal);
    } catch (err) {
      const image = await this.glance.getImage(imageId, { signal }).catch(() => undefined);
      if (image) usable(image, uuid);
      throw err;
    }
    usable(plan.image, uuid);
    return { image: plan.image, plan };
  }

  /** The domain XML of an instance on this host (spawn, and evacuation from its recorded definition). */
  domainXml(
    uuid: string,
    name: string,
    domainName: string,
    req: SpawnRequest,
    flavor: Flavor,
    disks: InstanceDisk[],
    sources: DiskSource[],
    backend: ImageBackend,
  ): string {
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
    const spec: DomainSpec = {
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
      serialLogPath: this.store.consolePath(uuid),
      memballoon: false,
      metadata: {
        instanceId: uuid,
        displayName: name,
        imageId: req.image,
        ...(flavor.name ? { flavor: flavor.name } : {}),
      },
    };
    const ctx = { instance: uuid, name, image: req.image, flavor, backend: backend.name };
    return domainXml(customizeDomainSpec(spec, req.domain, this.domainHook ?? undefined, ctx));
  }

  /**
   * Creates the instance's key (provider) and its libvirt `volume` secret, each journaled before
   * it exists. The key bytes are zeroed once libvirt has them.
   */
  async #makeKey(op: JournalOp, uuid: string): Promise<InstanceEncryption> {
    const secretUuid = volumeSecretUuid(uuid);
    await op.intent('key', { kind: 'key', provider: this.keys.name, id: uuid });
    const key = await this.keys.createKey(uuid);
    try {
      await op.intent('volume-secret', { kind: 'secret', uuid: secretUuid, created: true });
      await defineVolumeSecret(await this.session.connection(), uuid, secretUuid, key);
    } finally {
      key.fill(0);
    }
    await op.done('key');
    return { format: 'luks', secretUuid, keyProvider: this.keys.name, keyId: uuid };
  }
}

/** Throws IMAGE_UNUSABLE for an image no backend can make a disk of: not active, or empty. */
function usable(image: GlanceImage, uuid: string): void {
  if (image.status !== 'active')
    throw new DriverError('IMAGE_UNUSABLE', `Glance image ${image.id} is ${image.status}, not active`, {
      instance: uuid,
    });
  // No backend can make a disk of nothing: refuse before anything is created.
  if (image.size === 0)
    throw new DriverError('IMAGE_UNUSABLE', `Glance image ${image.id} is empty (0 bytes)`, { instance: uuid });
}
