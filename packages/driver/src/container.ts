/**
 * The composition root: an inversify container binding the configuration, the logger, the
 * journal, libvirt, Ceph, every backend plugin (named bindings to `IMAGE_BACKEND`, discovered by
 * the `BackendRegistry` with `@multiInject`), the Glance client, the resolver with its handlers
 * (multi-bound, so more can be added), and the driver.
 */
import { join } from 'node:path';
import { Container, injectable, multiInject } from 'inversify';
import { connect as cephConnect, type Cluster } from '@ephemera/ceph-rbd-napi';
import {
  GLANCE_TYPES,
  RbdCliProbe,
  glanceModule,
  type ImageHandler,
  type RbdProbe,
  type TokenProvider,
} from '@ephemera/glance';
import {
  BACKEND_REGISTRY,
  BackendRegistry,
  IMAGE_BACKEND,
  KEY_PROVIDER,
  pluginNamed,
  type ImageBackend,
  type KeyProvider,
} from '@ephemera/image-backend';
import { connect as libvirtConnect, type Connection } from '@ephemera/libvirt-napi';
import { BUILTIN_BACKENDS, type BackendPlugin, hasBackendPackage, loadBackendPackage } from './backends.js';
import { LibrbdProbe, defaultSecretUuid, keyringPath } from './ceph.js';
import { loadConfig, redactConfig, type DriverConfig, type LoadConfigOptions } from './config.js';
import { Compensator } from './compensator.js';
import type { DomainHook } from './domain-spec.js';
import { Driver } from './driver.js';
import { FileKeyProvider } from './encryption.js';
import { DriverError } from './errors.js';
import { glanceAuth, glanceClientOptions } from './images.js';
import { DriverEventBus, InFlight } from './in-flight.js';
import { InstanceStore } from './instance-store.js';
import { Journal } from './journal.js';
import { LibvirtSession } from './libvirt-session.js';
import { createLogger, type Logger } from './logger.js';
import { EvacuationWorkflow } from './evacuation.js';
import { MigrationWorkflow } from './migration.js';
import { Flattener } from './flattener.js';
import { Reconciler } from './reconciler.js';
import { SpawnWorkflow } from './spawn.js';
import { CephSecretGuard } from './spawn-secret.js';
import { DRIVER_TYPES } from './tokens.js';
import type { CephContext } from './types.js';

/** The registry, built by inversify from every plugin bound to `IMAGE_BACKEND`. */
@injectable()
export class DriverBackendRegistry extends BackendRegistry {
  constructor(@multiInject(IMAGE_BACKEND) backends: ImageBackend[]) {
    super(backends);
  }
}

/** Options of {@link createDriver}. */
export interface CreateDriverOptions {
  /** A validated configuration; else {@link loadConfig}(`configOptions`). */
  config?: DriverConfig;
  configOptions?: LoadConfigOptions;
  /** Extra (or replacement) backend plugins, by name. */
  plugins?: BackendPlugin[];
  /** Backend instances to bind as they are (e.g. a `MemoryBackend` in tests). */
  backends?: ImageBackend[];
  /**
   * Where encryption keys live (default: the built-in {@link FileKeyProvider}, files of mode 0600
   * in `<stateDir>/keys`). An embedder brings Barbican or Vault here.
   */
  keyProvider?: KeyProvider;
  /** Extra resolver handlers (bound to `GLANCE_TYPES.ImageHandler` next to the shipped ones). */
  handlers?: ImageHandler[];
  /** A logger (default: pino to stderr at `log.level`). */
  logger?: Logger;
  /**
   * Customises every spawned domain (NICs, CPU, devices...) before it is rendered; see
   * {@link DomainHook}. Runs after the request's `domain` options.
   */
  customizeDomain?: DomainHook;
  /** Run `reconcile()` before returning (default true). */
  reconcile?: boolean;
}

/** The driver and its container. */
export interface DriverHandle {
  driver: Driver;
  container: Container;
}

/** Builds the container (connecting to libvirt, Ceph and creating the backends) and returns it with the driver. */
export async function createDriverContainer(opts: CreateDriverOptions = {}): Promise<DriverHandle> {
  const config = opts.config ?? loadConfig(opts.configOptions).config;
  // Every line names the host: many hosts log about disks in one shared pool.
  const logger = (opts.logger ?? createLogger(config.log.level)).child({ host: config.host.id });
  logger.debug({ config: redactConfig(config) }, 'driver configuration');
  const given = new Map((opts.backends ?? []).map((b) => [b.name, b]));
  const wanted = [...new Set([config.images.type, ...config.images.enabled])].filter((n) => !given.has(n));
  const plugins = new Map<string, BackendPlugin>(Object.entries(BUILTIN_BACKENDS));
  for (const p of opts.plugins ?? []) plugins.set(p.name, p);

  const closers: (() => Promise<unknown>)[] = [];
  const closeAll = async (): Promise<void> => {
    for (const c of closers.reverse()) await c().catch(() => undefined);
  };
  // A configured backend whose package is not installed fails before anything is connected.
  for (const name of wanted) {
    if (hasBackendPackage(name) && plugins.get(name) === BUILTIN_BACKENDS[name]) await loadBackendPackage(name, config);
  }
  try {
    // Ceph, when a backend needs it
    const r = config.images.rbd;
    const ceph: CephContext = { cluster: null, fsid: null, user: r.user, secretUuid: null, keyringPath: null };
    if (wanted.includes('rbd') || given.has('rbd')) {
      ceph.keyringPath = await keyringPath(r.cephConf, r.user, r.keyring);
      let cluster: Cluster;
      try {
        cluster = await cephConnect({
          confPath: r.cephConf,
          clientId: r.user,
          keyringPath: ceph.keyringPath,
          timeoutMs: r.connectTimeoutMs,
        });
      } catch (err) {
        throw new DriverError(
          'INVALID_CONFIG',
          `cannot connect to Ceph as client.${r.user} with ${r.cephConf}: ${(err as Error).message}`,
          { cause: err },
        );
      }
      closers.push(() => cluster.close());
      ceph.cluster = cluster;
      ceph.fsid = await cluster.fsid();
      ceph.secretUuid = r.secretUuid ?? defaultSecretUuid(r.user, r.cephConf);
      logger.debug(
        { user: r.user, cephConf: r.cephConf, keyring: ceph.keyringPath, fsid: ceph.fsid, secretUuid: ceph.secretUuid },
        'connected to Ceph',
      );
    }

    let libvirt: Connection;
    try {
      libvirt = await libvirtConnect(config.libvirt.uri);
    } catch (err) {
      throw new DriverError(
        'INVALID_CONFIG',
        `cannot connect to libvirt at ${config.libvirt.uri}: ${(err as Error).message}`,
        { cause: err },
      );
    }
    closers.push(() => libvirt.close());
    logger.debug({ uri: config.libvirt.uri }, 'connected to libvirt');

    const backends: ImageBackend[] = [...given.values()];
    for (const name of wanted) {
      const p = plugins.get(name);
      if (!p) throw new DriverError('INVALID_CONFIG', `no backend plugin named ${name}`);
      const b = await p.create({ config, logger, ...(ceph.secretUuid ? { cephSecretUuid: ceph.secretUuid } : {}) });
      closers.push(async () => b.close?.());
      backends.push(b);
    }

    const auth: TokenProvider = glanceAuth(config);
    const probe: RbdProbe = ceph.cluster && ceph.fsid ? new LibrbdProbe(ceph.cluster, ceph.fsid) : new RbdCliProbe([]);

    const container = new Container();
    container.bind(DRIVER_TYPES.Config).toConstantValue(config);
    container.bind(DRIVER_TYPES.Logger).toConstantValue(logger);
    container.bind(DRIVER_TYPES.Journal).toConstantValue(new Journal(config.stateDir));
    container.bind(DRIVER_TYPES.Libvirt).toConstantValue(libvirt);
    container.bind(DRIVER_TYPES.Ceph).toConstantValue(ceph.cluster);
    container.bind(DRIVER_TYPES.CephContext).toConstantValue(ceph);
    container.bind(DRIVER_TYPES.DomainHook).toConstantValue(opts.customizeDomain ?? null);
    container
      .bind<KeyProvider>(KEY_PROVIDER)
      .toConstantValue(opts.keyProvider ?? new FileKeyProvider(join(config.stateDir, 'keys')));
    for (const b of backends) container.bind<ImageBackend>(IMAGE_BACKEND).toConstantValue(b).when(pluginNamed(b.name));
    container.bind(BACKEND_REGISTRY).to(DriverBackendRegistry).inSingletonScope();
    container.load(
      glanceModule({
        client: glanceClientOptions(config, auth),
        rbdProbe: probe,
      }),
    );
    for (const h of opts.handlers ?? []) container.bind<ImageHandler>(GLANCE_TYPES.ImageHandler).toConstantValue(h);
    // The driver's collaborators, one job each (singletons: they share the session and in-flight state).
    container.bind(DriverEventBus).toConstantValue(new DriverEventBus());
    container.bind(InFlight).toSelf().inSingletonScope();
    container.bind(InstanceStore).toSelf().inSingletonScope();
    container.bind(LibvirtSession).toSelf().inSingletonScope();
    container.bind(Compensator).toSelf().inSingletonScope();
    container.bind(CephSecretGuard).toSelf().inSingletonScope();
    container.bind(SpawnWorkflow).toSelf().inSingletonScope();
    container.bind(Reconciler).toSelf().inSingletonScope();
    container.bind(Flattener).toSelf().inSingletonScope();
    container.bind(MigrationWorkflow).toSelf().inSingletonScope();
    container.bind(EvacuationWorkflow).toSelf().inSingletonScope();
    container.bind(DRIVER_TYPES.Driver).to(Driver).inSingletonScope();
    const driver = container.get<Driver>(DRIVER_TYPES.Driver);
    // Once per host connection, so that spawns skip the secret lookups (one libvirt call).
    await container.get(CephSecretGuard).verify();
    if (opts.reconcile !== false) {
      const actions = await driver.reconcile();
      const done = actions.filter((a) => a.action !== 'skipped');
      if (done.length) logger.info({ actions: done }, `reconciled ${done.length} unfinished operation(s)`);
    }
    return { driver, container };
  } catch (err) {
    await closeAll();
    throw err;
  }
}

/** Builds the driver (see {@link createDriverContainer}). Call `close()` when done. */
export async function createDriver(opts: CreateDriverOptions = {}): Promise<Driver> {
  return (await createDriverContainer(opts)).driver;
}
