import { LibvirtXmlError } from './errors.js';
import { checkEnum, checkInt, checkPattern, checkString, el, type XmlElement } from './xml.js';

/** NIC models QEMU emulates on x86. */
export type InterfaceModel = 'virtio' | 'e1000' | 'rtl8139';

/** A network interface (`<interface>`): QEMU user networking, a libvirt network or a host bridge. */
export type NetworkSpec =
  | {
      readonly type: 'user';
      /** Default `virtio`. */
      readonly model?: InterfaceModel;
      /** A unicast MAC (`52:54:00:..`); libvirt picks one when omitted. */
      readonly mac?: string;
    }
  | {
      readonly type: 'network';
      /** Name of a libvirt network. */
      readonly network: string;
      readonly model?: InterfaceModel;
      readonly mac?: string;
    }
  | {
      readonly type: 'bridge';
      /** Name of a host bridge. */
      readonly bridge: string;
      readonly model?: InterfaceModel;
      readonly mac?: string;
    };

/** `<cpu>`: mode, model (mode `custom`) and topology. */
export interface CpuSpec {
  /** Omitted: libvirt's default (`custom` without a model: QEMU's default CPU). */
  readonly mode?: 'host-passthrough' | 'host-model' | 'maximum' | 'custom';
  /** A QEMU CPU model (`qemu64`, `Skylake-Client`, ...): required with, and only with, mode `custom`. */
  readonly model?: string;
  /** sockets × dies × cores × threads must equal the domain's `vcpus`. */
  readonly topology?: {
    readonly sockets: number;
    /** Default 1 (omitted from the XML). */
    readonly dies?: number;
    readonly cores: number;
    readonly threads: number;
  };
}

/**
 * Device kinds {@link DeviceSpec} may add. Disks, interfaces, the serial port and the balloon have
 * typed fields the driver relies on; host devices and filesystems give the guest host resources
 * the driver neither tracks nor migrates: none of them are allowed here.
 */
export const EXTRA_DEVICE_ELEMENTS = [
  'channel',
  'console',
  'controller',
  'graphics',
  'input',
  'panic',
  'redirdev',
  'rng',
  'smartcard',
  'sound',
  'tpm',
  'video',
  'vsock',
  'watchdog',
] as const;

/** An element name {@link DeviceSpec} may use at the top of `<devices>`. */
export type ExtraDeviceElement = (typeof EXTRA_DEVICE_ELEMENTS)[number];

/** An element inside an extra device: a plain name (no namespace), attributes, and children or text. */
export interface DeviceNode {
  /** `[a-z][a-z0-9_-]*`, at most 64 characters. */
  readonly element: string;
  /** Names as `element` (no `xmlns`); values are escaped. */
  readonly attributes?: Readonly<Record<string, string | number>>;
  readonly children?: readonly DeviceNode[];
  /** Text content (escaped); not together with `children`. */
  readonly text?: string;
}

/**
 * An extra `<devices>` child, written as given with every name checked and every value escaped.
 * Libvirt's schema, not this builder, knows each device's vocabulary: the driver defines domains
 * with libvirt's schema validation on, so a misspelt device is refused at define.
 */
export interface DeviceSpec extends DeviceNode {
  readonly element: ExtraDeviceElement;
}

const MAC_RE = /^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/;
const IFACE_RE = /^[A-Za-z0-9_.:-]{1,64}$/;
const CPU_MODEL_RE = /^[A-Za-z0-9_.-]{1,64}$/;
const NODE_NAME_RE = /^[a-z][a-z0-9_-]{0,63}$/;
const MAX_DEPTH = 8;

/** One `<interface>`. */
export function interfaceElement(n: NetworkSpec, field: string): XmlElement {
  if (typeof n !== 'object' || n === null) throw new LibvirtXmlError('INVALID_VALUE', field, 'expected an object');
  const type = checkEnum(n.type, `${field}.type`, ['user', 'network', 'bridge']);
  let mac: XmlElement | undefined;
  if (n.mac !== undefined) {
    const address = checkPattern(n.mac, `${field}.mac`, MAC_RE, 'a MAC address');
    // libvirt refuses a multicast address at define; say so here, with the field.
    if (Number.parseInt(address.slice(0, 2), 16) & 1)
      throw new LibvirtXmlError('INVALID_VALUE', `${field}.mac`, `${address} is not a unicast MAC address`);
    mac = el('mac', { address });
  }
  let source: XmlElement | undefined;
  if (n.type === 'network')
    source = el('source', { network: checkPattern(n.network, `${field}.network`, IFACE_RE, 'a libvirt network name') });
  if (n.type === 'bridge')
    source = el('source', { bridge: checkPattern(n.bridge, `${field}.bridge`, IFACE_RE, 'a bridge name') });
  const model = el('model', { type: checkEnum(n.model ?? 'virtio', `${field}.model`, ['virtio', 'e1000', 'rtl8139']) });
  return el('interface', { type }, [mac, source, model]);
}

/** Every `<interface>`: the legacy single `network` first, then `interfaces`; MACs unique. */
export function interfaceElements(network: NetworkSpec | undefined, interfaces: unknown): XmlElement[] {
  if (interfaces !== undefined && !Array.isArray(interfaces))
    throw new LibvirtXmlError('INVALID_VALUE', 'interfaces', 'expected an array');
  const list: [NetworkSpec, string][] = [
    ...(network === undefined ? [] : [[network, 'network'] as [NetworkSpec, string]]),
    ...((interfaces ?? []) as NetworkSpec[]).map((n, i) => [n, `interfaces[${i}]`] as [NetworkSpec, string]),
  ];
  const macs = new Set<string>();
  return list.map(([n, field]) => {
    const x = interfaceElement(n, field);
    const mac = n.mac?.toLowerCase();
    if (mac !== undefined) {
      if (macs.has(mac)) throw new LibvirtXmlError('INVALID_COMBINATION', `${field}.mac`, `${n.mac} is used twice`);
      macs.add(mac);
    }
    return x;
  });
}

const MODES = ['host-passthrough', 'host-model', 'maximum', 'custom'] as const;

/** `<cpu>` from `cpu` and the older `cpuMode`, or nothing. */
export function cpuElement(cpu: CpuSpec | undefined, cpuMode: unknown, vcpus: number): XmlElement | undefined {
  if (cpu === undefined) {
    return cpuMode === undefined
      ? undefined
      : el('cpu', { mode: checkEnum(cpuMode, 'cpuMode', ['host-passthrough', 'host-model', 'maximum']) });
  }
  if (typeof cpu !== 'object' || cpu === null) throw new LibvirtXmlError('INVALID_VALUE', 'cpu', 'expected an object');
  if (cpuMode !== undefined && cpu.mode !== undefined)
    throw new LibvirtXmlError('INVALID_COMBINATION', 'cpu.mode', 'give either cpuMode or cpu.mode, not both');
  const mode =
    cpu.mode === undefined
      ? cpuMode === undefined
        ? undefined
        : checkEnum(cpuMode, 'cpuMode', MODES)
      : checkEnum(cpu.mode, 'cpu.mode', MODES);
  let model: XmlElement | undefined;
  if (mode === 'custom') {
    if (cpu.model === undefined) throw new LibvirtXmlError('MISSING_VALUE', 'cpu.model', "required with mode 'custom'");
    model = el('model', { fallback: 'forbid' }, [
      checkPattern(cpu.model, 'cpu.model', CPU_MODEL_RE, 'a CPU model name'),
    ]);
  } else if (cpu.model !== undefined) {
    throw new LibvirtXmlError('INVALID_COMBINATION', 'cpu.model', "only with mode 'custom'");
  }
  let topology: XmlElement | undefined;
  if (cpu.topology !== undefined) {
    const t = cpu.topology;
    const sockets = checkInt(t?.sockets, 'cpu.topology.sockets', 1, 4096);
    const dies = t.dies === undefined ? undefined : checkInt(t.dies, 'cpu.topology.dies', 1, 4096);
    const cores = checkInt(t.cores, 'cpu.topology.cores', 1, 4096);
    const threads = checkInt(t.threads, 'cpu.topology.threads', 1, 4096);
    // libvirt refuses the domain at define otherwise.
    if (sockets * (dies ?? 1) * cores * threads !== vcpus) {
      throw new LibvirtXmlError(
        'INVALID_COMBINATION',
        'cpu.topology',
        `sockets × dies × cores × threads must equal vcpus (${vcpus})`,
      );
    }
    topology = el('topology', { sockets, dies, cores, threads });
  }
  return el('cpu', { mode, match: mode === 'custom' ? 'exact' : undefined }, [model, topology]);
}

function nodeElement(n: DeviceNode, field: string, depth: number): XmlElement {
  if (typeof n !== 'object' || n === null) throw new LibvirtXmlError('INVALID_VALUE', field, 'expected an object');
  if (depth > MAX_DEPTH) throw new LibvirtXmlError('INVALID_VALUE', field, `nested deeper than ${MAX_DEPTH} levels`);
  const name = checkPattern(n.element, `${field}.element`, NODE_NAME_RE, 'a plain element name');
  const attrs: Record<string, string> = {};
  const given = n.attributes ?? {};
  if (typeof given !== 'object' || given === null)
    throw new LibvirtXmlError('INVALID_VALUE', `${field}.attributes`, 'expected an object');
  for (const [k, v] of Object.entries(given)) {
    // `xmlns` would move the element out of libvirt's namespace.
    if (!NODE_NAME_RE.test(k) || k.startsWith('xml'))
      throw new LibvirtXmlError(
        'INVALID_VALUE',
        `${field}.attributes`,
        `${JSON.stringify(k.slice(0, 64))} is not a plain attribute name`,
      );
    attrs[k] =
      typeof v === 'number'
        ? String(checkInt(v, `${field}.attributes.${k}`, Number.MIN_SAFE_INTEGER))
        : checkString(v, `${field}.attributes.${k}`, { maxLength: 4096 });
  }
  if (n.text !== undefined && n.children !== undefined)
    throw new LibvirtXmlError('INVALID_COMBINATION', field, 'give text or children, not both');
  if (n.children !== undefined && !Array.isArray(n.children))
    throw new LibvirtXmlError('INVALID_VALUE', `${field}.children`, 'expected an array');
  const children =
    n.text !== undefined
      ? [checkString(n.text, `${field}.text`)]
      : (n.children ?? []).map((c, i) => nodeElement(c, `${field}.children[${i}]`, depth + 1));
  return el(name, attrs, children);
}

/** The extra `<devices>` children. */
export function extraDeviceElements(devices: unknown): XmlElement[] {
  if (devices === undefined) return [];
  if (!Array.isArray(devices)) throw new LibvirtXmlError('INVALID_VALUE', 'devices', 'expected an array');
  return (devices as DeviceSpec[]).map((d, i) => {
    checkEnum(d?.element, `devices[${i}].element`, EXTRA_DEVICE_ELEMENTS);
    return nodeElement(d, `devices[${i}]`, 1);
  });
}
