/**
 * Backend plugins: how the driver creates each image backend from its configuration. Each
 * plugin is bound in the container to `IMAGE_BACKEND` with `pluginNamed(name)`; the
 * `BackendRegistry` discovers all of them with `@multiInject`.
 */
import { join } from 'node:path';
import { LvmBackend } from '@ephemera/backend-lvm';
import { MemoryBackend, type ImageBackend } from '@ephemera/image-backend';
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

type Ctor = { new (...args: never[]): ImageBackend; create?: (opts: unknown) => Promise<ImageBackend> };

/**
 * Finds the backend class a package exports (the first export that is a class whose prototype
 * has `createFromImage`), so the driver needs no compile-time knowledge of its exact name.
 */
async function loadBackendClass(pkg: string, preferred: string[]): Promise<Ctor> {
  let mod: Record<string, unknown>;
  try {
    mod = (await import(pkg)) as Record<string, unknown>;
  } catch (err) {
    throw new DriverError('UNSUPPORTED', `${pkg} cannot be loaded: ${(err as Error).message}`, { cause: err });
  }
  const isBackendClass = (v: unknown): v is Ctor =>
    typeof v === 'function' && typeof (v as { prototype?: { createFromImage?: unknown } }).prototype?.createFromImage === 'function';
  for (const name of preferred) if (isBackendClass(mod[name])) return mod[name];
  const any = Object.values(mod).find(isBackendClass);
  if (!any) throw new DriverError('UNSUPPORTED', `${pkg} exports no image backend class yet`);
  return any;
}

async function instantiate(C: Ctor, options: Record<string, unknown>): Promise<ImageBackend> {
  if (typeof C.create === 'function') return C.create(options);
  return new (C as unknown as new (o: unknown) => ImageBackend)(options);
}

/** The RBD backend (`@ephemera/backend-rbd`, `RbdBackend.create(RbdBackendOptions)`). */
export const rbdPlugin: BackendPlugin = {
  name: 'rbd',
  async create({ config, cephSecretUuid }) {
    const C = await loadBackendClass('@ephemera/backend-rbd', ['RbdBackend']);
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
    return instantiate(C, {
      pool: r.pool,
      confPath: r.cephConf,
      clientId: r.user,
      ...(r.keyring ? { keyringPath: r.keyring } : {}),
      ...(cephSecretUuid ? { secretUuid: cephSecretUuid } : {}),
      connectTimeoutMs: r.connectTimeoutMs,
      cloneFormat: r.cloneFormat === 'auto' ? 'auto' : Number(r.cloneFormat),
      busyTimeoutMs: Math.max(1, config.timeouts.diskBusyMs),
      ...snap,
    });
  },
};

/** The qcow2 backend (`@ephemera/backend-qcow2`, `Qcow2Backend.create(Qcow2BackendOptions)`). */
export const qcow2Plugin: BackendPlugin = {
  name: 'qcow2',
  async create({ config }) {
    const C = await loadBackendClass('@ephemera/backend-qcow2', ['Qcow2Backend']);
    return instantiate(C, {
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

/** The built-in plugins by name. */
export const BUILTIN_BACKENDS: Readonly<Record<string, BackendPlugin>> = Object.freeze({
  rbd: rbdPlugin,
  qcow2: qcow2Plugin,
  lvm: lvmPlugin,
  memory: memoryPlugin,
});
