import { CAPABILITIES, type Capability, type ImageBackend } from './types.js';
import {
  DuplicateBackendError,
  IncompatiblePluginError,
  UnknownBackendError,
  UnsupportedOperationError,
} from './errors.js';

/**
 * Version of the image-backend contract this package defines. A plugin sets its `apiVersion`
 * to the value it was built against.
 */
export const IMAGE_BACKEND_API_VERSION = 1;

/**
 * How many older contract versions are still accepted (Proxmox's APIAGE): the registry accepts
 * `[IMAGE_BACKEND_API_VERSION - IMAGE_BACKEND_API_AGE, IMAGE_BACKEND_API_VERSION]`. Bumped with
 * the version when a change is backward compatible (additions), reset to 0 on a breaking change.
 */
export const IMAGE_BACKEND_API_AGE = 0;

/**
 * DI token under which every backend plugin is bound (inversify: `bind(IMAGE_BACKEND).to(X).whenNamed('rbd')`
 * for named selection, `@multiInject(IMAGE_BACKEND)` for discovery). `Symbol.for`, so two copies
 * of this package agree on it.
 */
export const IMAGE_BACKEND: unique symbol = Symbol.for('ephemera.ImageBackend') as never;
/** DI token of the `BackendRegistry`. */
export const BACKEND_REGISTRY: unique symbol = Symbol.for('ephemera.BackendRegistry') as never;

/**
 * Binding constraint for a plugin bound to `IMAGE_BACKEND`: matches the unnamed request of
 * discovery (`@multiInject(IMAGE_BACKEND)`, `getAll`) and the named request for this plugin
 * (`@inject(IMAGE_BACKEND) @named('rbd')`, `get(IMAGE_BACKEND, { name: 'rbd' })`), so one
 * binding serves both. With inversify:
 * `container.bind(IMAGE_BACKEND).to(RbdBackend).inSingletonScope().when(pluginNamed('rbd'))`.
 * (A plain `whenNamed('rbd')` binding is invisible to an unnamed `@multiInject`.)
 */
export function pluginNamed(name: string): (request: { readonly name?: unknown }) => boolean {
  return (request) => request.name === undefined || request.name === name;
}

/** The accepted contract versions, inclusive. */
export interface ApiWindow {
  readonly min: number;
  readonly max: number;
}

/** The window for a given current version and age. */
export function apiWindow(current = IMAGE_BACKEND_API_VERSION, age = IMAGE_BACKEND_API_AGE): ApiWindow {
  return { min: current - age, max: current };
}

const METHODS = [
  'exists',
  'info',
  'createFromImage',
  'createBlank',
  'resize',
  'createSnapshot',
  'listSnapshots',
  'removeSnapshot',
  'rollbackToSnapshot',
  'flatten',
  'directSnapshot',
  'remove',
  'list',
  'capacity',
  'diskSource',
] as const;

/**
 * Checks that `plugin` is a backend this registry can use: a name, an `apiVersion` inside
 * `window`, a full capability map, at least one disk format and every method. Throws
 * `IncompatiblePluginError` naming the plugin, its version and the window.
 */
export function assertCompatiblePlugin(
  plugin: unknown,
  window: ApiWindow = apiWindow(),
): asserts plugin is ImageBackend {
  const p = plugin as Partial<ImageBackend> | null | undefined;
  const name = typeof p?.name === 'string' && p.name.length > 0 ? p.name : '<unnamed>';
  const version = p?.apiVersion;
  if (typeof p !== 'object' || p === null) {
    throw new IncompatiblePluginError(name, version, window, 'not an object');
  }
  if (name === '<unnamed>') throw new IncompatiblePluginError(name, version, window, 'missing name');
  if (typeof version !== 'number' || !Number.isInteger(version)) {
    throw new IncompatiblePluginError(name, version, window, 'apiVersion must be an integer');
  }
  if (version < window.min) {
    throw new IncompatiblePluginError(
      name,
      version,
      window,
      'plugin is too old: rebuild it against a newer @ephemera/image-backend',
    );
  }
  if (version > window.max) {
    throw new IncompatiblePluginError(name, version, window, 'plugin is newer than this host: upgrade the host');
  }
  const caps = p.capabilities as Record<string, unknown> | undefined;
  if (typeof caps !== 'object' || caps === null) {
    throw new IncompatiblePluginError(name, version, window, 'missing capabilities');
  }
  for (const c of CAPABILITIES) {
    if (typeof caps[c] !== 'boolean') {
      throw new IncompatiblePluginError(name, version, window, `capability '${c}' is not a boolean`);
    }
  }
  if (caps['rollback'] === true && caps['snapshot'] !== true) {
    throw new IncompatiblePluginError(name, version, window, "capability 'rollback' requires 'snapshot'");
  }
  if (!Array.isArray(p.diskFormats) || p.diskFormats.length === 0) {
    throw new IncompatiblePluginError(name, version, window, 'diskFormats must list at least one format');
  }
  for (const m of METHODS) {
    if (typeof (p as Record<string, unknown>)[m] !== 'function') {
      throw new IncompatiblePluginError(name, version, window, `missing method ${m}()`);
    }
  }
}

/** Options of `BackendRegistry`. */
export interface BackendRegistryOptions {
  /** Current contract version (default `IMAGE_BACKEND_API_VERSION`); tests override it. */
  readonly apiVersion?: number;
  /** Accepted age (default `IMAGE_BACKEND_API_AGE`). */
  readonly apiAge?: number;
}

/**
 * The set of backends a host can use, checked once when built. A plain class (no DI import):
 * the driver wires it with inversify as
 * `new BackendRegistry(container.getAll(IMAGE_BACKEND))` or a constructor taking
 * `@multiInject(IMAGE_BACKEND) backends: ImageBackend[]`.
 */
export class BackendRegistry {
  /** The accepted contract window. */
  readonly window: ApiWindow;
  private readonly byName = new Map<string, ImageBackend>();

  /**
   * @throws IncompatiblePluginError if a plugin is outside the window or malformed.
   * @throws DuplicateBackendError if two plugins share a name.
   */
  constructor(backends: Iterable<ImageBackend>, options: BackendRegistryOptions = {}) {
    this.window = apiWindow(options.apiVersion ?? IMAGE_BACKEND_API_VERSION, options.apiAge ?? IMAGE_BACKEND_API_AGE);
    for (const b of backends) {
      assertCompatiblePlugin(b, this.window);
      if (this.byName.has(b.name)) throw new DuplicateBackendError(b.name);
      this.byName.set(b.name, b);
    }
  }

  /** Registered names, in registration order. */
  names(): string[] {
    return [...this.byName.keys()];
  }

  /** Every registered backend. */
  all(): ImageBackend[] {
    return [...this.byName.values()];
  }

  /** Whether `name` is registered. */
  has(name: string): boolean {
    return this.byName.has(name);
  }

  /** The backend called `name`; `UnknownBackendError` (listing the registered ones) otherwise. */
  get(name: string): ImageBackend {
    const b = this.byName.get(name);
    if (!b) throw new UnknownBackendError(name, this.names());
    return b;
  }

  /** The first registered backend among `preferred` (a configured order of choice). */
  select(preferred: string | readonly string[]): ImageBackend {
    const list = typeof preferred === 'string' ? [preferred] : preferred;
    for (const n of list) {
      const b = this.byName.get(n);
      if (b) return b;
    }
    throw new UnknownBackendError(list.join(' | '), this.names());
  }

  /** Closes every backend that has `close()`, reporting the first failure after trying all. */
  async close(): Promise<void> {
    let first: unknown;
    for (const b of this.byName.values()) {
      try {
        await b.close?.();
      } catch (err) {
        first ??= err;
      }
    }
    if (first !== undefined) throw first;
  }
}

/** Whether `backend` claims `capability`. */
export function hasCapability(backend: Pick<ImageBackend, 'capabilities'>, capability: Capability): boolean {
  return backend.capabilities[capability] === true;
}

/**
 * Throws `UnsupportedOperationError(capability, operation)` unless `backend` claims `capability`.
 * Backends call it first thing in capability-gated methods.
 */
export function requireCapability(
  backend: Pick<ImageBackend, 'capabilities' | 'name'>,
  capability: Capability,
  operation: string,
): void {
  if (backend.capabilities[capability] !== true) {
    throw new UnsupportedOperationError(capability, operation, { backend: backend.name });
  }
}
