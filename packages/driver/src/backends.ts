/**
 * Backend plugins: typed factories that create each image backend from the configuration. Each
 * plugin is bound in the container to `IMAGE_BACKEND` with `pluginNamed(name)`; the
 * `BackendRegistry` discovers all of them with `@multiInject`.
 */
import { join } from 'node:path';
import { MemoryBackend, type ImageBackend } from '@ephemera/image-backend';
import type { BackendName } from './backend-names.js';
import type { DriverConfig } from './config.js';
import { ConfigError, DriverError } from './errors.js';
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
 * The backends that live in their own packages: optional peer dependencies of the driver, so an
 * embedder installs only the ones it configures (`images.type`, `images.enabled`).
 */
export const BACKEND_PACKAGES = Object.freeze({
  rbd: '@ephemera/backend-rbd',
  qcow2: '@ephemera/backend-qcow2',
  lvm: '@ephemera/backend-lvm',
} as const);

type BackendPackageName = keyof typeof BACKEND_PACKAGES;

// Literal specifiers, so TypeScript types each module (the packages are dev dependencies here).
const IMPORTERS = {
  rbd: () => import('@ephemera/backend-rbd'),
  qcow2: () => import('@ephemera/backend-qcow2'),
  lvm: () => import('@ephemera/backend-lvm'),
} satisfies Record<BackendPackageName, () => Promise<unknown>>;

/** True when `err` says that `pkg` itself, not one of its own dependencies, cannot be found. */
function isMissingPackage(err: unknown, pkg: string): boolean {
  const e = err as { code?: unknown; message?: unknown } | null;
  return (
    (e?.code === 'ERR_MODULE_NOT_FOUND' || e?.code === 'MODULE_NOT_FOUND') &&
    typeof e.message === 'string' &&
    e.message.includes(`'${pkg}'`)
  );
}

/**
 * Imports the package of a configured backend. Not installed: a `ConfigError` on the key that
 * asked for it, naming the package to install; installed but not loadable (e.g. a dependency of
 * its own is missing): `UNSUPPORTED` with the loader's message.
 */
export async function loadBackendPackage<N extends BackendPackageName>(
  name: N,
  config: DriverConfig,
  importer: () => Promise<unknown> = IMPORTERS[name],
  pkg: string = BACKEND_PACKAGES[name],
): Promise<Awaited<ReturnType<(typeof IMPORTERS)[N]>>> {
  try {
    return (await importer()) as Awaited<ReturnType<(typeof IMPORTERS)[N]>>;
  } catch (err) {
    if (isMissingPackage(err, pkg)) {
      const key = config.images.type === name ? 'images.type' : 'images.enabled';
      throw new ConfigError(
        key,
        `backend ${name} needs the package ${pkg}, which is not installed: npm install ${pkg}`,
      );
    }
    throw new DriverError('UNSUPPORTED', `${pkg} cannot be loaded: ${(err as Error).message}`, { cause: err });
  }
}

/** Whether `name` is a backend with its own package (and so may be missing). */
export function hasBackendPackage(name: string): name is BackendPackageName {
  return Object.hasOwn(BACKEND_PACKAGES, name);
}

/** The RBD backend (`@ephemera/backend-rbd`, `RbdBackend.create(RbdBackendOptions)`). */
export const rbdPlugin: BackendPlugin = {
  name: 'rbd',
  async create({ config, cephSecretUuid }) {
    const { RbdBackend } = await loadBackendPackage('rbd', config);
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
      ...(r.goldenImages ? { goldenImages: r.goldenPool ? { pool: r.goldenPool } : {} } : {}),
    });
  },
};

/** The qcow2 backend (`@ephemera/backend-qcow2`, `Qcow2Backend.create(Qcow2BackendOptions)`). */
export const qcow2Plugin: BackendPlugin = {
  name: 'qcow2',
  async create({ config }) {
    const { Qcow2Backend } = await loadBackendPackage('qcow2', config);
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
    const { LvmBackend } = await loadBackendPackage('lvm', config);
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
