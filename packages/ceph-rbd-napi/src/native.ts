import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { nativeErrorFactory } from './errors.js';

/** Shape of the compiled addon (native/*.cc, registered in native/addon.cc). Internal: use the classes in index.ts. */
export interface NativeCluster {
  close(): Promise<void>;
  isClosed(): boolean;
  fsid(): Promise<string>;
  poolStats(pool: string): Promise<NativePoolStats>;
  openIoCtx(pool: string, namespace: string): Promise<NativeIoCtx>;
  monCommand(json: string): Promise<{ out: string; status: string }>;
  instanceId(): number;
}
export interface NativePoolStats {
  pool: string;
  poolId: number;
  bytesUsed: number;
  objects: number;
  userBytes: number;
  images: number;
  provisionedBytes: number;
  maxProvisionedBytes: number;
  snapshots: number;
  trashImages: number;
  clusterTotalBytes: number;
  clusterUsedBytes: number;
  clusterAvailBytes: number;
}
export interface NativeImageOpts {
  features?: number;
  order?: number;
  stripeUnit?: number;
  stripeCount?: number;
  cloneFormat?: number;
  dataPool?: string;
}
export type NativeProgress = (done: number, total: number) => void;
export interface NativeIoCtx {
  close(): Promise<void>;
  isClosed(): boolean;
  list(): Promise<{ name: string; id: string }[]>;
  listPrefixed(prefix: string): Promise<string[]>;
  create(name: string, size: number, opts: NativeImageOpts): Promise<void>;
  clone(parent: NativeIoCtx, image: string, snap: string, dest: string, opts: NativeImageOpts): Promise<void>;
  remove(name: string, onProgress?: NativeProgress): Promise<void>;
  rename(from: string, to: string): Promise<void>;
  trashMove(name: string, delaySeconds: number): Promise<void>;
  trashList(): Promise<{ id: string; name: string; source: string; deletedAtMs: number; deferredUntilMs: number }[]>;
  trashRestore(id: string, name: string): Promise<void>;
  trashRemove(id: string, force: boolean, onProgress?: NativeProgress): Promise<void>;
  open(name: string, snapshot: string | null, readOnly: boolean): Promise<NativeImage>;
  lockExclusive(
    oid: string,
    name: string,
    cookie: string,
    desc: string,
    durationMs: number,
    flags: number,
  ): Promise<void>;
  unlock(oid: string, name: string, cookie: string): Promise<boolean>;
  breakLock(oid: string, name: string, client: string, cookie: string): Promise<boolean>;
  listLockers(
    oid: string,
    name: string,
  ): Promise<{ exclusive: boolean; tag: string; lockers: { client: string; cookie: string; address: string }[] }>;
}
export interface NativeLinkedImage {
  poolId: number;
  pool: string;
  namespace: string;
  imageId: string;
  image: string;
  trash: boolean;
}
/** Snapshot namespace: `user` snapshots, or internal ones (`trash` holds clone v2 parents). */
export type SnapNamespace = 'user' | 'group' | 'trash' | 'mirror' | 'unknown';
export interface NativeImage {
  close(): Promise<void>;
  isClosed(): boolean;
  stat(): Promise<{
    size: number;
    objectSize: number;
    numObjects: number;
    order: number;
    blockNamePrefix: string;
    id: string;
    features: number;
    stripeUnit: number;
    stripeCount: number;
    flags: number;
    dataPoolId: number;
    overlap: number | null;
    createdMs: number;
  }>;
  size(): Promise<number>;
  features(): Promise<number>;
  resize(size: number, allowShrink: boolean, onProgress?: NativeProgress): Promise<void>;
  flatten(onProgress?: NativeProgress): Promise<void>;
  parent(): Promise<(NativeLinkedImage & { snap: string; snapId: number }) | null>;
  children(): Promise<NativeLinkedImage[]>;
  snapCreate(name: string): Promise<void>;
  snapRemove(name: string): Promise<void>;
  snapProtect(name: string): Promise<void>;
  snapUnprotect(name: string): Promise<void>;
  snapIsProtected(name: string): Promise<boolean>;
  snapRollback(name: string, onProgress?: NativeProgress): Promise<void>;
  snapList(): Promise<
    { id: number; size: number; name: string; protected: boolean; namespace: SnapNamespace; originalName?: string }[]
  >;
  snapChildren(snapId: number): Promise<NativeLinkedImage[]>;
  snapRemoveById(snapId: number): Promise<void>;
  read(offset: number, buffer: Uint8Array): Promise<number>;
  write(offset: number, buffer: Uint8Array): Promise<number>;
  discard(offset: number, length: number): Promise<number>;
  flush(): Promise<number>;
  watchers(): Promise<{ address: string; id: number; cookie: number }[]>;
  lockers(): Promise<{
    exclusive: boolean;
    tag: string;
    lockers: { client: string; cookie: string; address: string }[];
  }>;
  metadataGet(key: string): Promise<string | undefined>;
  metadataSet(key: string, value: string): Promise<void>;
  metadataRemove(key: string): Promise<boolean>;
  /** Pairs after `start` (exclusive, '' = from the first key), at most `max` (0 = all). */
  metadataList(start: string, max: number): Promise<[string, string][]>;
}
export interface NativeConnectOptions {
  name: string;
  confPath?: string;
  keyringPath?: string;
  monHost?: string;
  timeoutSeconds: string;
  options: [string, string][];
}
export interface NativeBinding {
  init(makeError: typeof nativeErrorFactory): void;
  connect(opts: NativeConnectOptions): Promise<NativeCluster>;
  version(): { librbd: string; librados: string };
  setWorkerThreads(n: number): void;
  workerThreads(): number;
  pendingOps(): number;
  shutdownAll(timeoutMs: number): number;
}

/** The addon's file name under `build/Release/`. */
export const ADDON_FILE = 'ceph_rbd_napi.node';

/** Default location of the compiled addon: `<package>/build/Release/ceph_rbd_napi.node`. */
export function defaultAddonPath(): string {
  // This file lives in src/ (tests) or dist/ (published): both are one level below the package.
  return fileURLToPath(new URL(`../build/Release/${ADDON_FILE}`, import.meta.url));
}

/**
 * The addon to load from a package directory: a source build (`build/Release/`) wins, else the
 * prebuilt Node-API binary the tarball ships (`prebuilds/<platform>-<arch>/`, linux-x64 glibc);
 * with neither, the build path, so the load error says what to build.
 */
export function resolveAddonPath(packageDir: string = fileURLToPath(new URL('..', import.meta.url))): string {
  const build = join(packageDir, 'build', 'Release', ADDON_FILE);
  const prebuilt = join(packageDir, 'prebuilds', `${process.platform}-${process.arch}`, ADDON_FILE);
  return !existsSync(build) && existsSync(prebuilt) ? prebuilt : build;
}

/**
 * Thrown when the native addon cannot be loaded. `reason` tells which Debian packages fix it:
 * `'build-missing'` (install `librbd-dev librados-dev`, then rebuild) or `'library-missing'`
 * (install the runtime `librbd1 librados2`).
 */
export class NativeLoadError extends Error {
  readonly reason: 'build-missing' | 'library-missing' | 'load-failed';
  readonly addonPath: string;
  constructor(reason: NativeLoadError['reason'], addonPath: string, message: string, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'NativeLoadError';
    this.reason = reason;
    this.addonPath = addonPath;
  }
}

/** Builds the actionable load error for a failed `require()` of the addon (pure, unit-tested). */
export function describeLoadFailure(addonPath: string, exists: boolean, cause: unknown): NativeLoadError {
  const original = cause instanceof Error ? cause.message : String(cause);
  const rebuild = 'npm rebuild -w @ephemera/ceph-rbd-napi (or npm ci at the repository root)';
  if (!exists) {
    return new NativeLoadError(
      'build-missing',
      addonPath,
      `@ephemera/ceph-rbd-napi: the native addon is not built (${addonPath} is missing) and there is ` +
        `no prebuilt binary for ${process.platform}-${process.arch}. ` +
        `Install the Debian packages librbd-dev librados-dev (plus g++ make python3), then run ${rebuild}. ` +
        `Original error: ${original}`,
      cause,
    );
  }
  if (/lib(rbd|rados)\.so[^:]*: cannot open shared object file/.test(original)) {
    return new NativeLoadError(
      'library-missing',
      addonPath,
      `@ephemera/ceph-rbd-napi: the Ceph client libraries are not installed. ` +
        `Install the Debian packages librbd1 librados2 (librbd-dev librados-dev to rebuild). ` +
        `Original error: ${original}`,
      cause,
    );
  }
  return new NativeLoadError(
    'load-failed',
    addonPath,
    `@ephemera/ceph-rbd-napi: cannot load the native addon ${addonPath}. ` +
      `Check that the Debian packages librbd1 librados2 are installed and rebuild against them ` +
      `(librbd-dev librados-dev, then ${rebuild}). Original error: ${original}`,
    cause,
  );
}

/** Loads the addon at `addonPath`, throwing a NativeLoadError naming the Debian packages. */
export function loadAddon(addonPath: string = resolveAddonPath()): NativeBinding {
  const require = createRequire(import.meta.url);
  let binding: NativeBinding;
  try {
    binding = require(addonPath) as NativeBinding;
  } catch (cause) {
    throw describeLoadFailure(addonPath, existsSync(addonPath), cause);
  }
  binding.init(nativeErrorFactory);
  return binding;
}

let loaded: NativeBinding | undefined;

/** The process-wide addon, loaded on first use (so importing the package never fails). */
export function native(): NativeBinding {
  if (!loaded) {
    loaded = loadAddon();
    const binding = loaded;
    // Close what the program left open, so images are unwatched before the process ends
    // (otherwise their watches linger on the OSDs for ~30 s and block e.g. a remove).
    process.once('exit', () => {
      binding.shutdownAll(exitCloseTimeoutMs);
    });
  }
  return loaded;
}

let exitCloseTimeoutMs = 5000;

/** How long the process waits at exit for open handles to close (default 5000 ms). */
export function setExitCloseTimeout(ms: number): void {
  exitCloseTimeoutMs = ms;
}
