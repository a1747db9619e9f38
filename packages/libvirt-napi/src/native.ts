/**
 * Loads the compiled addon (`build/Release/ephemera_libvirt.node` from a source build, else the
 * prebuilt `prebuilds/linux-x64/ephemera_libvirt.node` the tarball ships)
 * and describes its raw, untyped-handle surface. Internal: the public API wraps it.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Opaque native handles (type-tagged N-API externals). */
export type ConnHandle = { readonly __brand: 'ConnHandle' };
export type DomHandle = { readonly __brand: 'DomHandle' };
export type SecretHandle = { readonly __brand: 'SecretHandle' };

export interface RawDomain {
  handle: DomHandle;
  name: string;
  uuid: string;
}

export interface RawSecret {
  handle: SecretHandle;
  uuid: string;
  usageType: number;
  usageID: string;
}

export interface RawErrorInfo {
  code: number;
  domain: number;
  level: number;
  message: string;
}

export type RawEvent =
  | ['lifecycle', { name: string; uuid: string; event: number; detail: number }]
  | ['close', { reason: number }];

/** A typed parameter for the addon: [libvirt name, VIR_TYPED_PARAM_* type, value]. */
export type RawTypedParam = [name: string, type: number, value: number | bigint | boolean | string];

/** virDomainGetJobStats()'s result: the job type and the params by name (64-bit integers as bigint). */
export interface RawJobStats {
  type: number;
  params: Record<string, number | bigint | boolean | string>;
}

export interface NativeBinding {
  initOk: boolean;
  initError: string;
  init(makeError: (info: RawErrorInfo) => Error): void;
  getVersion(): number;
  connect(
    uri: string,
    readOnly: boolean,
    emit: (...event: RawEvent) => void,
    keepAliveInterval: number,
    keepAliveCount: number,
  ): Promise<ConnHandle>;
  close(c: ConnHandle): Promise<void>;
  setEventsRef(c: ConnHandle, ref: boolean): void;
  isAlive(c: ConnHandle): boolean;
  libVersion(c: ConnHandle): Promise<number>;
  hypervisorVersion(c: ConnHandle): Promise<number>;
  hostname(c: ConnHandle): Promise<string>;
  capabilities(c: ConnHandle): Promise<string>;
  domainCapabilities(
    c: ConnHandle,
    emulatorBin: string | undefined,
    arch: string | undefined,
    machine: string | undefined,
    virtType: string | undefined,
    flags: number,
  ): Promise<string>;
  listAllDomains(c: ConnHandle, flags: number): Promise<RawDomain[]>;
  defineXML(c: ConnHandle, xml: string, flags: number): Promise<RawDomain>;
  createXML(c: ConnHandle, xml: string, flags: number): Promise<RawDomain>;
  lookupByName(c: ConnHandle, name: string): Promise<RawDomain>;
  lookupByUUID(c: ConnHandle, uuid: string): Promise<RawDomain>;
  defineSecret(c: ConnHandle, xml: string, flags: number): Promise<RawSecret>;
  lookupSecretByUsage(c: ConnHandle, usage: string, usageType: number): Promise<RawSecret>;
  lookupSecretByUUID(c: ConnHandle, uuid: string): Promise<RawSecret>;
  listAllSecrets(c: ConnHandle, flags: number): Promise<RawSecret[]>;
  domainCreate(d: DomHandle, flags: number): Promise<void>;
  domainShutdown(d: DomHandle, flags: number): Promise<void>;
  domainDestroy(d: DomHandle, flags: number): Promise<void>;
  domainReboot(d: DomHandle, flags: number): Promise<void>;
  domainSuspend(d: DomHandle): Promise<void>;
  domainResume(d: DomHandle): Promise<void>;
  domainUndefine(d: DomHandle, flags: number): Promise<void>;
  domainAttachDevice(d: DomHandle, xml: string, flags: number): Promise<void>;
  domainDetachDevice(d: DomHandle, xml: string, flags: number): Promise<void>;
  domainBlockResize(d: DomHandle, disk: string, bytes: bigint, flags: number): Promise<void>;
  domainState(d: DomHandle): Promise<[number, number]>;
  domainInfo(d: DomHandle): Promise<{
    state: number;
    maxMemKiB: number;
    memoryKiB: number;
    nrVirtCpu: number;
    cpuTimeNs: bigint;
  }>;
  domainXML(d: DomHandle, flags: number): Promise<string>;
  domainIsActive(d: DomHandle): Promise<boolean>;
  domainIsPersistent(d: DomHandle): Promise<boolean>;
  domainID(d: DomHandle): Promise<number>;
  domainMigrateToURI(d: DomHandle, dconnuri: string, params: RawTypedParam[], flags: number): Promise<void>;
  domainGetJobStats(d: DomHandle, flags: number): Promise<RawJobStats>;
  domainAbortJob(d: DomHandle): Promise<void>;
  domainAbortJobFlags(d: DomHandle, flags: number): Promise<void>;
  domainMigrateSetMaxDowntime(d: DomHandle, ms: number, flags: number): Promise<void>;
  domainMigrateGetMaxDowntime(d: DomHandle, flags: number): Promise<number>;
  domainMigrateSetMaxSpeed(d: DomHandle, mibPerSecond: number, flags: number): Promise<void>;
  domainMigrateGetMaxSpeed(d: DomHandle, flags: number): Promise<number>;
  secretSetValue(s: SecretHandle, value: Uint8Array, flags: number): Promise<void>;
  secretXML(s: SecretHandle, flags: number): Promise<string>;
  secretUndefine(s: SecretHandle): Promise<void>;
}

/** The addon's file name inside `build/Release/`. */
export const ADDON_FILE = 'ephemera_libvirt.node';

/** Default location of the addon: `../build/Release/` relative to this module (src/ or dist/). */
export function defaultAddonPath(): string {
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

/** Thrown when the native addon cannot be loaded; says what to install and how to rebuild. */
export class LibvirtLoadError extends Error {
  override readonly name = 'LibvirtLoadError';
  /** Path the loader tried. */
  readonly path: string;
  constructor(path: string, cause: unknown) {
    const original = cause instanceof Error ? cause.message : String(cause);
    const missing = existsSync(path)
      ? ''
      : ` (and there is no prebuilt binary for ${process.platform}-${process.arch})`;
    super(
      `Cannot load the libvirt Node-API addon at ${path}${missing}: ${original}. ` +
        'Building it needs the Debian package libvirt-dev (headers and pkg-config libvirt.pc), ' +
        'pkg-config and a C++ toolchain (g++, make, python3); run `npm rebuild @ephemera/libvirt-napi` ' +
        '(or `npx node-gyp rebuild` in the package) after installing them. At runtime the shared ' +
        'library libvirt.so.0 from the Debian package libvirt0 must be installed.',
      { cause },
    );
    this.path = path;
  }
}

const require = createRequire(import.meta.url);

/** Loads the addon from `path` (no caching); throws LibvirtLoadError with an actionable message. */
export function loadAddon(path: string = resolveAddonPath()): NativeBinding {
  let binding: NativeBinding;
  try {
    binding = require(path) as NativeBinding;
  } catch (err) {
    throw new LibvirtLoadError(path, err);
  }
  if (!binding.initOk) {
    throw new LibvirtLoadError(path, new Error(`libvirt initialisation failed: ${binding.initError}`));
  }
  return binding;
}
