import { LibvirtXmlError } from './errors.js';
import { checkInt, el, type XmlElement } from './xml.js';

/**
 * Disk QoS limits (libvirt `<iotune>`). Omitted or 0 means "no limit". A `total*` limit excludes
 * the `read*`/`write*` limits of the same kind.
 */
export interface IoTune {
  readonly totalBytesSec?: number;
  readonly readBytesSec?: number;
  readonly writeBytesSec?: number;
  readonly totalIopsSec?: number;
  readonly readIopsSec?: number;
  readonly writeIopsSec?: number;
  readonly totalBytesSecMax?: number;
  readonly readBytesSecMax?: number;
  readonly writeBytesSecMax?: number;
  readonly totalIopsSecMax?: number;
  readonly readIopsSecMax?: number;
  readonly writeIopsSecMax?: number;
  /** I/O size that counts as one operation for the iops limits. */
  readonly sizeIopsSec?: number;
}

/** [IoTune key, libvirt element, Nova flavor extra spec], in libvirt's output order. */
const FIELDS: readonly (readonly [keyof IoTune, string, string])[] = [
  ['totalBytesSec', 'total_bytes_sec', 'quota:disk_total_bytes_sec'],
  ['readBytesSec', 'read_bytes_sec', 'quota:disk_read_bytes_sec'],
  ['writeBytesSec', 'write_bytes_sec', 'quota:disk_write_bytes_sec'],
  ['totalIopsSec', 'total_iops_sec', 'quota:disk_total_iops_sec'],
  ['readIopsSec', 'read_iops_sec', 'quota:disk_read_iops_sec'],
  ['writeIopsSec', 'write_iops_sec', 'quota:disk_write_iops_sec'],
  ['totalBytesSecMax', 'total_bytes_sec_max', 'quota:disk_total_bytes_sec_max'],
  ['readBytesSecMax', 'read_bytes_sec_max', 'quota:disk_read_bytes_sec_max'],
  ['writeBytesSecMax', 'write_bytes_sec_max', 'quota:disk_write_bytes_sec_max'],
  ['totalIopsSecMax', 'total_iops_sec_max', 'quota:disk_total_iops_sec_max'],
  ['readIopsSecMax', 'read_iops_sec_max', 'quota:disk_read_iops_sec_max'],
  ['writeIopsSecMax', 'write_iops_sec_max', 'quota:disk_write_iops_sec_max'],
  ['sizeIopsSec', 'size_iops_sec', 'quota:disk_size_iops_sec'],
];

const EXCLUSIVE: readonly (readonly [keyof IoTune, keyof IoTune, keyof IoTune])[] = [
  ['totalBytesSec', 'readBytesSec', 'writeBytesSec'],
  ['totalIopsSec', 'readIopsSec', 'writeIopsSec'],
  ['totalBytesSecMax', 'readBytesSecMax', 'writeBytesSecMax'],
  ['totalIopsSecMax', 'readIopsSecMax', 'writeIopsSecMax'],
];

/** Validates limits (non-negative integers, total vs read/write). Returns the non-zero ones. */
export function checkIoTune(tune: IoTune, field = 'iotune'): Partial<Record<keyof IoTune, number>> {
  if (typeof tune !== 'object' || tune === null) throw new LibvirtXmlError('INVALID_VALUE', field, 'expected an object');
  const known = new Set<string>(FIELDS.map(([k]) => k));
  for (const k of Object.keys(tune)) {
    if (!known.has(k)) throw new LibvirtXmlError('INVALID_VALUE', `${field}.${k}`, 'unknown QoS limit');
  }
  const out: Partial<Record<keyof IoTune, number>> = {};
  for (const [k] of FIELDS) {
    const v = tune[k];
    if (v === undefined) continue;
    const n = checkInt(v, `${field}.${k}`, 0);
    if (n > 0) out[k] = n;
  }
  for (const [total, read, write] of EXCLUSIVE) {
    if (out[total] !== undefined && (out[read] !== undefined || out[write] !== undefined)) {
      throw new LibvirtXmlError('INVALID_COMBINATION', `${field}.${total}`, `cannot be combined with ${read}/${write}`);
    }
  }
  if (out.sizeIopsSec !== undefined && out.totalIopsSec === undefined && out.readIopsSec === undefined && out.writeIopsSec === undefined) {
    throw new LibvirtXmlError('INVALID_COMBINATION', `${field}.sizeIopsSec`, 'needs an iops limit');
  }
  return out;
}

/** The `<iotune>` element, or `undefined` when no limit is set. */
export function iotuneElement(tune: IoTune, field = 'iotune'): XmlElement | undefined {
  const v = checkIoTune(tune, field);
  const children = FIELDS.filter(([k]) => v[k] !== undefined).map(([k, name]) => el(name, {}, [String(v[k])]));
  return children.length ? el('iotune', {}, children) : undefined;
}

/**
 * QoS limits from Nova-style flavor extra specs (`quota:disk_read_bytes_sec` ...). Other keys
 * are ignored; a malformed value is a `LibvirtXmlError`.
 */
export function iotuneFromFlavor(extraSpecs: Readonly<Record<string, string | number>>): IoTune {
  const out: Record<string, number> = {};
  for (const [key, , spec] of FIELDS) {
    const raw = extraSpecs[spec];
    if (raw === undefined) continue;
    const s = String(raw).trim();
    if (!/^\d{1,16}$/.test(s)) throw new LibvirtXmlError('INVALID_VALUE', spec, `expected a non-negative integer, got ${JSON.stringify(String(raw).slice(0, 32))}`);
    out[key] = Number(s);
  }
  checkIoTune(out);
  return out;
}
