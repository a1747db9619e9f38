import { checkAbsPath, checkUuid, diskElement, type DiskSpec } from './disk.js';
import {
  cpuElement,
  type CpuSpec,
  type DeviceSpec,
  extraDeviceElements,
  interfaceElements,
  type NetworkSpec,
} from './devices.js';
import { LibvirtXmlError } from './errors.js';
import { checkEnum, checkInt, checkPattern, checkString, el, serialize, type XmlElement } from './xml.js';

/** Namespace of Ephemera's `<metadata>` child. */
export const EPHEMERA_METADATA_NS = 'https://ephemera.dev/xmlns/libvirt/instance/1';

/** What the domain's lifecycle events do. */
export type LifecycleAction = 'destroy' | 'restart' | 'preserve' | 'rename-restart';

/** Ephemera's data recorded in the domain's `<metadata>`. */
export interface InstanceMetadata {
  /** Instance UUID. */
  readonly instanceId: string;
  /** Display name of the instance (free text, escaped). */
  readonly displayName?: string;
  /** Glance image the root disk came from. */
  readonly imageId?: string;
  /** Flavor name (free text, escaped). */
  readonly flavor?: string;
}

/** A `<domain>`. */
export interface DomainSpec {
  /** `kvm` (hardware) or `qemu` (TCG). */
  readonly type: 'kvm' | 'qemu';
  /** Any text without control characters or `/` (escaped on output), at most 200 characters. */
  readonly name: string;
  readonly uuid: string;
  /** Memory in MiB. */
  readonly memoryMiB: number;
  readonly vcpus: number;
  readonly os?: {
    readonly arch?: 'x86_64' | 'i686' | 'aarch64';
    /** e.g. `pc`, `q35`, `pc-i440fx-7.2`. */
    readonly machine?: string;
    /** Boot device order; not together with per-disk `bootOrder`. */
    readonly boot?: readonly ('hd' | 'cdrom' | 'network' | 'fd')[];
  };
  /** Default `{ acpi: true, apic: true }`. */
  readonly features?: { readonly acpi?: boolean; readonly apic?: boolean; readonly pae?: boolean };
  /** `<cpu mode>`; omitted by default. Same as `cpu.mode` (give one of them). */
  readonly cpuMode?: 'host-passthrough' | 'host-model' | 'maximum';
  /** `<cpu>`: mode, model and topology. */
  readonly cpu?: CpuSpec;
  /** Default `utc`. */
  readonly clock?: 'utc' | 'localtime';
  /** Defaults: destroy, restart, destroy. */
  readonly onPoweroff?: LifecycleAction;
  readonly onReboot?: LifecycleAction;
  readonly onCrash?: LifecycleAction;
  /** Path of the QEMU binary; libvirt picks one when omitted. */
  readonly emulator?: string;
  readonly disks: readonly DiskSpec[];
  /** Guest serial console (COM1) written to this file. */
  readonly serialLogPath?: string;
  /** One NIC (kept for compatibility): written before `interfaces`. */
  readonly network?: NetworkSpec;
  /** NICs, in order. */
  readonly interfaces?: readonly NetworkSpec[];
  /** Extra devices (RNG, watchdog, input, video, ...): names checked, values escaped. */
  readonly devices?: readonly DeviceSpec[];
  /** `<memballoon model='none'/>` when false (default: libvirt's default balloon). */
  readonly memballoon?: boolean;
  readonly metadata?: InstanceMetadata;
}

const MACHINE_RE = /^[A-Za-z0-9_.-]{1,64}$/;
const IMAGE_ID_RE = /^[A-Za-z0-9_.-]{1,128}$/;

/** Checks a domain name: no control characters, no `/`, not blank, at most 200 characters. */
export function checkDomainName(value: unknown, field = 'name'): string {
  const s = checkString(value, field, { maxLength: 200 });
  if (s.includes('/')) throw new LibvirtXmlError('INVALID_VALUE', field, "must not contain '/'");
  if (s.trim().length === 0) throw new LibvirtXmlError('INVALID_VALUE', field, 'must not be blank');
  return s;
}

function metadataElement(m: InstanceMetadata): XmlElement {
  const p = 'ephemera';
  return el('metadata', {}, [
    el(`${p}:instance`, { [`xmlns:${p}`]: EPHEMERA_METADATA_NS }, [
      el(`${p}:id`, {}, [checkUuid(m.instanceId, 'metadata.instanceId')]),
      m.displayName !== undefined &&
        el(`${p}:name`, {}, [checkString(m.displayName, 'metadata.displayName', { maxLength: 255 })]),
      m.imageId !== undefined &&
        el(`${p}:image`, {}, [checkPattern(m.imageId, 'metadata.imageId', IMAGE_ID_RE, 'an image id')]),
      m.flavor !== undefined && el(`${p}:flavor`, {}, [checkString(m.flavor, 'metadata.flavor', { maxLength: 255 })]),
    ]),
  ]);
}

/**
 * Builds the `<domain>` element tree (children in libvirt's order: name, uuid, metadata,
 * memory, vcpu, os, features, cpu, clock, on_*, devices).
 * @throws LibvirtXmlError for any malformed or contradictory field (nothing is emitted).
 */
export function domainElement(spec: DomainSpec): XmlElement {
  if (typeof spec !== 'object' || spec === null)
    throw new LibvirtXmlError('MISSING_VALUE', 'domain', 'expected a domain spec');
  const type = checkEnum(spec.type, 'type', ['kvm', 'qemu']);
  const name = checkDomainName(spec.name);
  const uuid = checkUuid(spec.uuid, 'uuid');
  const memKiB = checkInt(spec.memoryMiB, 'memoryMiB', 1, 16 * 1024 * 1024) * 1024;
  const vcpus = checkInt(spec.vcpus, 'vcpus', 1, 4096);

  if (!Array.isArray(spec.disks)) throw new LibvirtXmlError('MISSING_VALUE', 'disks', 'expected an array');
  const disks = spec.disks.map((d, i) => diskElement(d, `disks[${i}]`));
  const targets = new Set<string>();
  spec.disks.forEach((d, i) => {
    if (targets.has(d.target.dev))
      throw new LibvirtXmlError('INVALID_COMBINATION', `disks[${i}].target.dev`, `'${d.target.dev}' is used twice`);
    targets.add(d.target.dev);
  });
  const diskBoot = spec.disks.some((d) => d.bootOrder !== undefined);
  const orders = spec.disks.flatMap((d) => (d.bootOrder === undefined ? [] : [d.bootOrder]));
  if (new Set(orders).size !== orders.length)
    throw new LibvirtXmlError('INVALID_COMBINATION', 'disks', 'boot orders must be unique');

  const os = spec.os ?? {};
  const boot = os.boot ?? (diskBoot ? [] : ['hd']);
  if (diskBoot && boot.length > 0) {
    throw new LibvirtXmlError(
      'INVALID_COMBINATION',
      'os.boot',
      'per-disk bootOrder cannot be used together with os.boot',
    );
  }
  const osEl = el('os', {}, [
    el(
      'type',
      {
        arch: os.arch === undefined ? undefined : checkEnum(os.arch, 'os.arch', ['x86_64', 'i686', 'aarch64']),
        machine:
          os.machine === undefined ? undefined : checkPattern(os.machine, 'os.machine', MACHINE_RE, 'a machine type'),
      },
      ['hvm'],
    ),
    ...boot.map((b, i) => el('boot', { dev: checkEnum(b, `os.boot[${i}]`, ['hd', 'cdrom', 'network', 'fd']) })),
  ]);

  const f = spec.features ?? { acpi: true, apic: true };
  const featureEls = (['acpi', 'apic', 'pae'] as const).filter((k) => f[k] === true).map((k) => el(k));
  const actions = ['destroy', 'restart', 'preserve', 'rename-restart'] as const;

  const devices = el('devices', {}, [
    spec.emulator !== undefined && el('emulator', {}, [checkAbsPath(spec.emulator, 'emulator')]),
    ...disks,
    ...interfaceElements(spec.network, spec.interfaces),
    ...extraDeviceElements(spec.devices),
    spec.serialLogPath !== undefined &&
      el('serial', { type: 'file' }, [
        el('source', { path: checkAbsPath(spec.serialLogPath, 'serialLogPath') }),
        el('target', { port: 0 }),
      ]),
    spec.memballoon === false && el('memballoon', { model: 'none' }),
  ]);

  return el('domain', { type }, [
    el('name', {}, [name]),
    el('uuid', {}, [uuid]),
    spec.metadata !== undefined && metadataElement(spec.metadata),
    el('memory', { unit: 'KiB' }, [String(memKiB)]),
    el('vcpu', { placement: 'static' }, [String(vcpus)]),
    osEl,
    featureEls.length > 0 && el('features', {}, featureEls),
    cpuElement(spec.cpu, spec.cpuMode, vcpus),
    el('clock', { offset: checkEnum(spec.clock ?? 'utc', 'clock', ['utc', 'localtime']) }),
    el('on_poweroff', {}, [checkEnum(spec.onPoweroff ?? 'destroy', 'onPoweroff', actions)]),
    el('on_reboot', {}, [checkEnum(spec.onReboot ?? 'restart', 'onReboot', actions)]),
    el('on_crash', {}, [checkEnum(spec.onCrash ?? 'destroy', 'onCrash', actions)]),
    devices,
  ]);
}

/** The `<domain>` XML of `spec`, for `virDomainDefineXML`/`virDomainCreateXML`. */
export function domainXml(spec: DomainSpec): string {
  return serialize(domainElement(spec));
}
