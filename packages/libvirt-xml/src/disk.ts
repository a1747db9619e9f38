import { LibvirtXmlError } from './errors.js';
import { type IoTune, iotuneElement } from './iotune.js';
import { checkEnum, checkInt, checkPattern, checkString, el, serialize, type XmlElement } from './xml.js';

/** LUKS encryption of a disk: the passphrase is in a libvirt secret (usage `volume`). */
export interface LuksEncryption {
  readonly format: 'luks';
  readonly secretUuid: string;
}

/** A disk that is a file. */
export interface FileSourceSpec {
  readonly type: 'file';
  /** Absolute path. */
  readonly path: string;
  readonly format?: 'raw' | 'qcow2';
  readonly encryption?: LuksEncryption;
}

/** A disk that is a block device. */
export interface BlockSourceSpec {
  readonly type: 'block';
  /** Absolute path of the device. */
  readonly path: string;
  readonly format?: 'raw';
  readonly encryption?: LuksEncryption;
}

/** A Ceph monitor. IPv6 literals may be given with or without brackets. */
export interface NetworkHostSpec {
  readonly host: string;
  readonly port?: number;
}

/** cephx credentials: the user and the libvirt secret (usage `ceph`) that holds its key. Both, always. */
export interface RbdAuthSpec {
  readonly username: string;
  readonly secretUuid: string;
}

/** An RBD image reached by QEMU through librbd. */
export interface RbdSourceSpec {
  readonly type: 'network';
  readonly protocol: 'rbd';
  /** `pool/image` or `pool/namespace/image`. */
  readonly name: string;
  /** One per monitor (msgr v1 address). */
  readonly hosts: readonly NetworkHostSpec[];
  readonly auth?: RbdAuthSpec;
  readonly format?: 'raw';
  readonly encryption?: LuksEncryption;
}

/**
 * Where the disk's data is. Structurally the same as `DiskSource` of `@ephemera/image-backend`,
 * so a backend's `diskSource()` result can be passed as is.
 */
export type DiskSourceSpec = FileSourceSpec | BlockSourceSpec | RbdSourceSpec;

/** QEMU cache modes. */
export type CacheMode = 'default' | 'none' | 'writethrough' | 'writeback' | 'directsync' | 'unsafe';

/** `<driver>` settings. */
export interface DiskDriverSpec {
  /** Default `qemu`. */
  readonly name?: 'qemu';
  /** Default: the source's format, else `raw`. */
  readonly type?: 'raw' | 'qcow2';
  readonly cache?: CacheMode;
  /** `native` needs `cache` `none` or `directsync` (O_DIRECT). */
  readonly io?: 'native' | 'threads' | 'io_uring';
  readonly discard?: 'unmap' | 'ignore';
  readonly detectZeroes?: 'off' | 'on' | 'unmap';
}

/** Guest bus. */
export type DiskBus = 'virtio' | 'scsi' | 'sata' | 'ide' | 'usb';

/** A `<disk>`. */
export interface DiskSpec {
  /** Default `disk`. */
  readonly device?: 'disk' | 'cdrom';
  readonly source: DiskSourceSpec;
  readonly driver?: DiskDriverSpec;
  readonly target: { readonly dev: string; readonly bus?: DiskBus };
  /** Letters, digits, space, `_`, `.`, `+`, `-` (libvirt's pattern); at most 64 characters. */
  readonly serial?: string;
  /** Per-device boot order (1 = first). Not together with `<os><boot>`. */
  readonly bootOrder?: number;
  readonly readonly?: boolean;
  readonly shareable?: boolean;
  /** QoS limits (see `iotuneFromFlavor`). */
  readonly iotune?: IoTune;
}

const UUID_RE = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;
const TARGET_RE = /^(vd|sd|hd|xvd)[a-z]{1,4}$/;
const SERIAL_RE = /^[A-Za-z0-9_.+\- ]{1,64}$/;
const RBD_PART = '[A-Za-z0-9_][A-Za-z0-9_.-]*';
const RBD_NAME_RE = new RegExp(`^${RBD_PART}(/${RBD_PART}){1,2}$`);
const CEPH_USER_RE = /^[A-Za-z0-9_+-]{1,64}$/;
const DNS_RE =
  /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
const IPV4_RE = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/** Checks a libvirt UUID (8-4-4-4-12 hex). */
export function checkUuid(value: unknown, field: string): string {
  return checkPattern(value, field, UUID_RE, 'a UUID');
}

/**
 * Checks an absolute file path (escaped on output; control characters refused). A bare `/`
 * names the root directory, never a file, and libvirt's schema (`absFilePath`) refuses it.
 */
export function checkAbsPath(value: unknown, field: string): string {
  const s = checkString(value, field);
  if (!s.startsWith('/')) throw new LibvirtXmlError('INVALID_VALUE', field, 'must be an absolute path');
  if (s === '/') throw new LibvirtXmlError('INVALID_VALUE', field, 'must be an absolute path to a file, not "/"');
  return s;
}

function isIpv6(s: string): boolean {
  if (!/^[0-9A-Fa-f:.]+$/.test(s) || !s.includes(':')) return false;
  const dbl = s.split('::');
  if (dbl.length > 2) return false;
  const parts = (p: string) => (p === '' ? [] : p.split(':'));
  const groups = [...parts(dbl[0]!), ...(dbl.length === 2 ? parts(dbl[1]!) : [])];
  let count = 0;
  for (const [i, g] of groups.entries()) {
    if (i === groups.length - 1 && g.includes('.')) {
      if (!IPV4_RE.test(g)) return false;
      count += 2;
    } else if (/^[0-9A-Fa-f]{1,4}$/.test(g)) count += 1;
    else return false;
  }
  return dbl.length === 2 ? count <= 7 : count === 8;
}

/** Normalises a monitor host: IPv4, IPv6 (brackets removed) or a DNS name. */
export function checkHost(value: unknown, field: string): string {
  if (typeof value !== 'string') throw new LibvirtXmlError('INVALID_VALUE', field, 'expected a host');
  const v = value.startsWith('[') && value.endsWith(']') ? value.slice(1, -1) : value;
  if (IPV4_RE.test(v) || isIpv6(v) || (DNS_RE.test(v) && !/^[\d.]+$/.test(v))) return v;
  throw new LibvirtXmlError(
    'INVALID_VALUE',
    field,
    `${JSON.stringify(value.slice(0, 64))} is not an IPv4/IPv6 address or a DNS name`,
  );
}

function encryptionElement(enc: LuksEncryption, field: string): XmlElement {
  checkEnum(enc?.format, `${field}.format`, ['luks']);
  return el('encryption', { format: 'luks' }, [
    el('secret', { type: 'passphrase', uuid: checkUuid(enc.secretUuid, `${field}.secretUuid`) }),
  ]);
}

/**
 * Builds the `<disk>` element tree. Children in the order libvirt itself writes them:
 * driver, auth, source, target, iotune, readonly, shareable, serial, encryption, boot.
 * @throws LibvirtXmlError for any malformed or contradictory field.
 */
export function diskElement(spec: DiskSpec, field = 'disk'): XmlElement {
  if (typeof spec !== 'object' || spec === null)
    throw new LibvirtXmlError('MISSING_VALUE', field, 'expected a disk spec');
  const device = checkEnum(spec.device ?? 'disk', `${field}.device`, ['disk', 'cdrom']);
  const src = spec.source;
  if (typeof src !== 'object' || src === null)
    throw new LibvirtXmlError('MISSING_VALUE', `${field}.source`, 'required');
  const sf = `${field}.source`;

  let sourceEl: XmlElement;
  let authEl: XmlElement | undefined;
  let type: 'file' | 'block' | 'network';
  let srcFormat: 'raw' | 'qcow2' | undefined;
  switch (src.type) {
    case 'file':
      type = 'file';
      sourceEl = el('source', { file: checkAbsPath(src.path, `${sf}.path`) });
      srcFormat = src.format === undefined ? undefined : checkEnum(src.format, `${sf}.format`, ['raw', 'qcow2']);
      break;
    case 'block':
      type = 'block';
      sourceEl = el('source', { dev: checkAbsPath(src.path, `${sf}.path`) });
      srcFormat = src.format === undefined ? undefined : checkEnum(src.format, `${sf}.format`, ['raw']);
      break;
    case 'network': {
      type = 'network';
      checkEnum(src.protocol, `${sf}.protocol`, ['rbd']);
      const name = checkPattern(src.name, `${sf}.name`, RBD_NAME_RE, 'an rbd pool/image name');
      if (!Array.isArray(src.hosts) || src.hosts.length === 0) {
        throw new LibvirtXmlError('MISSING_VALUE', `${sf}.hosts`, 'an rbd disk needs at least one monitor host');
      }
      const hosts = src.hosts.map((h, i) =>
        el('host', {
          name: checkHost(h?.host, `${sf}.hosts[${i}].host`),
          port: h.port === undefined ? undefined : checkInt(h.port, `${sf}.hosts[${i}].port`, 1, 65535),
        }),
      );
      sourceEl = el('source', { protocol: 'rbd', name }, hosts);
      srcFormat = src.format === undefined ? undefined : checkEnum(src.format, `${sf}.format`, ['raw']);
      if (src.auth !== undefined) {
        const a = src.auth as Partial<RbdAuthSpec>;
        if (typeof a !== 'object' || a === null || a.username === undefined || a.secretUuid === undefined) {
          throw new LibvirtXmlError(
            'INVALID_COMBINATION',
            `${sf}.auth`,
            'username and secretUuid are required together',
          );
        }
        authEl = el(
          'auth',
          {
            username: checkPattern(
              a.username,
              `${sf}.auth.username`,
              CEPH_USER_RE,
              "a cephx user id (without 'client.')",
            ),
          },
          [el('secret', { type: 'ceph', uuid: checkUuid(a.secretUuid, `${sf}.auth.secretUuid`) })],
        );
      }
      break;
    }
    default:
      throw new LibvirtXmlError(
        'INVALID_VALUE',
        `${sf}.type`,
        `must be file, block or network, got ${JSON.stringify((src as { type?: unknown }).type)}`,
      );
  }
  if ((src as { auth?: unknown }).auth !== undefined && type !== 'network') {
    throw new LibvirtXmlError('INVALID_COMBINATION', `${sf}.auth`, 'auth applies to network (rbd) disks only');
  }

  const d = spec.driver ?? {};
  const df = `${field}.driver`;
  const driverType = d.type === undefined ? (srcFormat ?? 'raw') : checkEnum(d.type, `${df}.type`, ['raw', 'qcow2']);
  if (srcFormat !== undefined && driverType !== srcFormat) {
    throw new LibvirtXmlError(
      'INVALID_COMBINATION',
      `${df}.type`,
      `'${driverType}' contradicts the source format '${srcFormat}'`,
    );
  }
  const cache =
    d.cache === undefined
      ? undefined
      : checkEnum(d.cache, `${df}.cache`, ['default', 'none', 'writethrough', 'writeback', 'directsync', 'unsafe']);
  const io = d.io === undefined ? undefined : checkEnum(d.io, `${df}.io`, ['native', 'threads', 'io_uring']);
  if (io === 'native' && cache !== 'none' && cache !== 'directsync') {
    throw new LibvirtXmlError('INVALID_COMBINATION', `${df}.io`, "io='native' needs cache 'none' or 'directsync'");
  }
  const discard = d.discard === undefined ? undefined : checkEnum(d.discard, `${df}.discard`, ['unmap', 'ignore']);
  const detectZeroes =
    d.detectZeroes === undefined ? undefined : checkEnum(d.detectZeroes, `${df}.detectZeroes`, ['off', 'on', 'unmap']);
  const driverEl = el('driver', {
    name: checkEnum(d.name ?? 'qemu', `${df}.name`, ['qemu']),
    type: driverType,
    cache,
    io,
    discard,
    detect_zeroes: detectZeroes,
  });

  const t = spec.target;
  if (typeof t !== 'object' || t === null) throw new LibvirtXmlError('MISSING_VALUE', `${field}.target`, 'required');
  const targetEl = el('target', {
    dev: checkPattern(t.dev, `${field}.target.dev`, TARGET_RE, 'a target device like vda, sdb, hdc'),
    bus:
      t.bus === undefined
        ? undefined
        : checkEnum(t.bus, `${field}.target.bus`, ['virtio', 'scsi', 'sata', 'ide', 'usb']),
  });

  const encryption = src.encryption === undefined ? undefined : encryptionElement(src.encryption, `${sf}.encryption`);
  const serial =
    spec.serial === undefined
      ? undefined
      : checkPattern(
          spec.serial,
          `${field}.serial`,
          SERIAL_RE,
          "a serial (letters, digits, ' ', '_', '.', '+', '-'; at most 64)",
        );
  const boot = spec.bootOrder === undefined ? undefined : checkInt(spec.bootOrder, `${field}.bootOrder`, 1, 65535);
  if (spec.readonly !== undefined && typeof spec.readonly !== 'boolean')
    throw new LibvirtXmlError('INVALID_VALUE', `${field}.readonly`, 'must be a boolean');
  if (spec.shareable !== undefined && typeof spec.shareable !== 'boolean')
    throw new LibvirtXmlError('INVALID_VALUE', `${field}.shareable`, 'must be a boolean');

  return el('disk', { type, device }, [
    driverEl,
    authEl,
    sourceEl,
    targetEl,
    spec.iotune === undefined ? undefined : iotuneElement(spec.iotune, `${field}.iotune`),
    spec.readonly === true && el('readonly'),
    spec.shareable === true && el('shareable'),
    serial !== undefined && el('serial', {}, [serial]),
    encryption,
    boot !== undefined && el('boot', { order: boot }),
  ]);
}

/** The `<disk>` XML of `spec` (for `virDomainAttachDevice` or embedding). */
export function diskXml(spec: DiskSpec): string {
  return serialize(diskElement(spec));
}
