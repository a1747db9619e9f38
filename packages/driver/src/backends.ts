/**
 * Backend plugins: typed factories that create each image backend from the configuration. Each
 * plugin is bound in the container to `IMAGE_BACKEND` with `pluginNamed(name)`; the
 * `BackendRegistry` discovers all of them with `@multiInject`.
 */
import { join } from 'node:path';
import { LvmBackend } from '@ephemera/backend-lvm';
import { MemoryBackend, type ImageBackend } from '@ephemera/image-backend';
import type { BackendName } from './backend-names.js';
import type { DriverConfig } from './config.js';
import { DriverError } from './errors.js';
import type { Logger } from './logger.js';

/** What a plugin gets to build its backend. */
export interface BackendContext {
  config: DriverConfig;
  logger: Logger;
  /** The secret UUID the driver uses for the Ceph user (rbd backend). */
  cephSecretUuid?: string;
}

/** A backend plugin: a name and an async factory. */
export interface BackendPlugin {
  readonly name: string;
  create(ctx: BackendContext): Promise<ImageBackend>;
}

/**
 * Imports a backend package when its plugin is used (only configured backends are loaded), typed by its
 * module; a package that cannot be loaded is UNSUPPORTED, naming it.
 */
async function load<M>(pkg: string, importer: () => Promise<M>): Promise<M> {
  try {
    return await importer();
  } catch (err) {
    throw new DriverError('UNSUPPORTED', `${pkg} cannot be loaded: ${(err as Error).message}`, { cause: err });
  }
}

/** The RBD backend (`@ephemera/backend-rbd`, `RbdBackend.create(RbdBackendOptions)`). */
export const rbdPlugin: BackendPlugin = {
  name: 'rbd',
  async create({ config, cephSecretUuid }) {
    const { RbdBackend } = await load('@ephemera/backend-rbd', () => import('@ephemera/backend-rbd'));
    const r = config.images.rbd;
    const snap = r.snapshotUser
      ? {
          directSnapshot: {
            pool: r.snapshotPool,
            clientId: r.snapshotUser,
            confPath: r.snapshotCephConf ?? r.cephConf,
            ...(r.snapshotKeyring ? { keyringPath: r.snapshotKeyring } : {}),
          },
        }
      : {};
    return RbdBackend.create({
      pool: r.pool,
      confPath: r.cephConf,
      clientId: r.user,
      ...(r.keyring ? { keyringPath: r.keyring } : {}),
      ...(cephSecretUuid ? { secretUuid: cephSecretUuid } : {}),
      connectTimeoutMs: r.connectTimeoutMs,
      cloneFormat: r.cloneFormat === 'auto' ? 'auto' : r.cloneFormat === '1' ? 1 : 2,
      busyTimeoutMs: Math.max(1, config.timeouts.diskBusyMs),
      ...snap,
    });
  },
};

/** The qcow2 backend (`@ephemera/backend-qcow2`, `Qcow2Backend.create(Qcow2BackendOptions)`). */
export const qcow2Plugin: BackendPlugin = {
  name: 'qcow2',
  async create({ config }) {
    const { Qcow2Backend } = await load('@ephemera/backend-qcow2', () => import('@ephemera/backend-qcow2'));
    return Qcow2Backend.create({
      instancesDir: config.instancesPath,
      baseDir: config.images.qcow2.basePath,
      forceRaw: config.images.forceRawImages,
      busyTimeoutMs: Math.max(1, config.timeouts.diskBusyMs),
    });
  },
};

/** The LVM backend (`@ephemera/backend-lvm`). */
export const lvmPlugin: BackendPlugin = {
  name: 'lvm',
  async create({ config }) {
    const l = config.images.lvm;
    return LvmBackend.create({
      volumeGroup: l.volumeGroup,
      wipe: l.wipe,
      ...(l.devices.length ? { devices: l.devices } : {}),
      busyTimeoutMs: config.timeouts.diskBusyMs,
      tempDir: join(config.stateDir, 'tmp'),
    });
  },
};

/** The contract's in-memory reference backend (tests and dry runs; cannot boot). */
export const memoryPlugin: BackendPlugin = {
  name: 'memory',
  async create() {
    return new MemoryBackend({ name: 'memory' });
  },
};

/** The built-in plugins by name (`satisfies`: a name in `BACKEND_NAMES` without a plugin does not compile). */
export const BUILTIN_BACKENDS: Readonly<Record<string, BackendPlugin>> = Object.freeze({
  rbd: rbdPlugin,
  qcow2: qcow2Plugin,
  lvm: lvmPlugin,
  memory: memoryPlugin,
} satisfies Record<BackendName, BackendPlugin>);
