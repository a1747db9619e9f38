/**
 * Domain customisation: a spawn request's typed `domain` options and the embedder's
 * `customizeDomain` hook, applied to the spec the driver built before it is rendered (and then
 * validated by the XML builders and by libvirt's schema at define).
 */
import type { CpuSpec, DeviceSpec, DomainSpec, NetworkSpec } from '@ephemera/libvirt-xml';
import { DriverError } from './errors.js';
import type { Flavor } from './types.js';
import { errMessage } from './util.js';

/** Per-spawn additions to the domain (`SpawnRequest.domain`). */
export interface DomainOptions {
  /** NICs, in order (the default domain has none). QEMU user networking needs no host setup. */
  interfaces?: NetworkSpec[];
  /** CPU mode, model and topology (sockets × dies × cores × threads = the flavor's vcpus). */
  cpu?: CpuSpec;
  /** QEMU machine type for this instance; default `libvirt.machineType`. */
  machine?: string;
  /** Extra devices (RNG, watchdog, input, video, ...): see `DeviceSpec` of `@ephemera/libvirt-xml`. */
  devices?: DeviceSpec[];
}

/** What the {@link DomainHook} is told about the instance. */
export interface DomainHookContext {
  /** Instance UUID. */
  instance: string;
  /** Display name. */
  name: string;
  /** Glance image id. */
  image: string;
  flavor: Flavor;
  /** Backend of the instance's disks. */
  backend: string;
}

/**
 * `CreateDriverOptions.customizeDomain`: gets the frozen spec (the request's `domain` options
 * already applied) and returns the spec to render, e.g. `{ ...spec, interfaces: [...] }`. It runs
 * once to check the request before any disk exists and again with the real disks, so it must be
 * pure. The driver owns `name`, `uuid`, `memoryMiB`, `vcpus`, `disks`, `serialLogPath` and
 * `metadata`: a hook that changes them is refused.
 */
export type DomainHook = (spec: DomainSpec, ctx: DomainHookContext) => DomainSpec;

const OPTION_KEYS = new Set(['interfaces', 'cpu', 'machine', 'devices']);
const OWNED = ['name', 'uuid', 'memoryMiB', 'vcpus', 'disks', 'serialLogPath', 'metadata'] as const;

function deepFreeze<T>(v: T): T {
  if (typeof v === 'object' && v !== null && !Object.isFrozen(v)) {
    for (const c of Object.values(v)) deepFreeze(c);
    Object.freeze(v);
  }
  return v;
}

/**
 * The spec to render: `spec` with `options` applied, then through `hook`.
 * @throws DriverError INVALID_ARGUMENT for malformed options, a hook that throws, returns no spec,
 * mutates its argument or changes a field the driver owns.
 */
export function customizeDomainSpec(
  spec: DomainSpec,
  options: DomainOptions | undefined,
  hook: DomainHook | undefined,
  ctx: DomainHookContext,
): DomainSpec {
  const err = (msg: string, cause?: unknown) =>
    new DriverError('INVALID_ARGUMENT', msg, { instance: ctx.instance, ...(cause ? { cause } : {}) });
  let out = spec;
  if (options !== undefined) {
    if (typeof options !== 'object' || options === null || Array.isArray(options))
      throw err('domain options must be an object');
    const unknown = Object.keys(options).filter((k) => !OPTION_KEYS.has(k));
    if (unknown.length > 0)
      throw err(`unknown domain option(s) ${unknown.join(', ')} (known: ${[...OPTION_KEYS].join(', ')})`);
    out = {
      ...out,
      ...(options.interfaces !== undefined ? { interfaces: [...(out.interfaces ?? []), ...options.interfaces] } : {}),
      ...(options.cpu !== undefined ? { cpu: options.cpu } : {}),
      ...(options.machine !== undefined ? { os: { ...out.os, machine: options.machine } } : {}),
      ...(options.devices !== undefined ? { devices: [...(out.devices ?? []), ...options.devices] } : {}),
    };
  }
  if (hook === undefined) return out;
  // A frozen copy: the hook returns a new spec, and the caller's option objects stay unfrozen.
  const given = deepFreeze(structuredClone(out));
  let result: DomainSpec;
  try {
    // The context is a copy: the hook cannot alter the driver's flavor either.
    result = hook(given, deepFreeze(structuredClone(ctx)));
  } catch (e) {
    throw err(`customizeDomain failed: ${errMessage(e)}`, e);
  }
  if (typeof result !== 'object' || result === null) throw err('customizeDomain must return a domain spec');
  const changed = OWNED.filter((k) => result[k] !== given[k]);
  if (changed.length > 0) throw err(`customizeDomain must not change ${changed.join(', ')} (the driver owns them)`);
  return result;
}
