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
  /** How many seconds the matching `*Max` burst may last (needs that `*Max`). */
  readonly totalBytesSecMaxLength?: number;
  readonly readBytesSecMaxLength?: number;
  readonly writeBytesSecMaxLength?: number;
  readonly totalIopsSecMaxLength?: number;
  readonly readIopsSecMaxLength?: number;
  readonly writeIopsSecMaxLength?: number;
}

/** QEMU's THROTTLE_VALUE_MAX: no limit (nor max x burst length) may exceed it. */
export const IOTUNE_VALUE_MAX = 1_000_000_000_000_000;

/**
 * [IoTune key, libvirt element, Nova flavor extra spec], in libvirt's output order. Nova has no
 * extra spec for the burst lengths, so they come only through the `IoTune` API.
 */
const FIELDS: readonly (readonly [keyof IoTune, string, string | undefined])[] = [
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
  ['totalBytesSecMaxLength', 'total_bytes_sec_max_length', undefined],
  ['readBytesSecMaxLength', 'read_bytes_sec_max_length', undefined],
  ['writeBytesSecMaxLength', 'write_bytes_sec_max_length', undefined],
  ['totalIopsSecMaxLength', 'total_iops_sec_max_length', undefined],
  ['readIopsSecMaxLength', 'read_iops_sec_max_length', undefined],
  ['writeIopsSecMaxLength', 'write_iops_sec_max_length', undefined],
];

/** QEMU's leaky buckets: [base rate, burst rate, burst length] of each kind. */
const BUCKETS: readonly (readonly [keyof IoTune, keyof IoTune, keyof IoTune])[] = [
  ['totalBytesSec', 'totalBytesSecMax', 'totalBytesSecMaxLength'],
  ['readBytesSec', 'readBytesSecMax', 'readBytesSecMaxLength'],
  ['writeBytesSec', 'writeBytesSecMax', 'writeBytesSecMaxLength'],
  ['totalIopsSec', 'totalIopsSecMax', 'totalIopsSecMaxLength'],
  ['readIopsSec', 'readIopsSecMax', 'readIopsSecMaxLength'],
  ['writeIopsSec', 'writeIopsSecMax', 'writeIopsSecMaxLength'],
];

const EXCLUSIVE: readonly (readonly [keyof IoTune, keyof IoTune, keyof IoTune])[] = [
  ['totalBytesSec', 'readBytesSec', 'writeBytesSec'],
  ['totalIopsSec', 'readIopsSec', 'writeIopsSec'],
  ['totalBytesSecMax', 'readBytesSecMax', 'writeBytesSecMax'],
  ['totalIopsSecMax', 'readIopsSecMax', 'writeIopsSecMax'],
];

/**
 * Validates limits the way QEMU's `throttle_is_valid()` does at domain start (libvirt's schema
 * accepts more): non-negative integers up to {@link IOTUNE_VALUE_MAX}, total vs read/write, each
 * `*Max` needs its base and is not below it, each `*MaxLength` needs its `*Max`, and
 * `sizeIopsSec` needs an iops limit. Returns the non-zero ones.
 */
export function checkIoTune(tune: IoTune, field = 'iotune'): Partial<Record<keyof IoTune, number>> {
  return validate(tune, field, `${field}.`, (k) => k);
}

/**
 * {@link checkIoTune}; an error's field is `prefix + label(key)`, and its message names other
 * limits by `label(key)`.
 */
function validate(
  tune: IoTune,
  field: string,
  prefix: string,
  label: (k: keyof IoTune) => string,
): Partial<Record<keyof IoTune, number>> {
  const name = (k: keyof IoTune): string => prefix + label(k);
  if (typeof tune !== 'object' || tune === null)
    throw new LibvirtXmlError('INVALID_VALUE', field, 'expected an object');
  const known = new Set<string>(FIELDS.map(([k]) => k));
  for (const k of Object.keys(tune)) {
    if (!known.has(k)) throw new LibvirtXmlError('INVALID_VALUE', name(k as keyof IoTune), 'unknown QoS limit');
  }
  const out: Partial<Record<keyof IoTune, number>> = {};
  for (const [k] of FIELDS) {
    const v = tune[k];
    if (v === undefined) continue;
    const n = checkInt(v, name(k), 0, IOTUNE_VALUE_MAX);
    if (n > 0) out[k] = n;
  }
  for (const [total, read, write] of EXCLUSIVE) {
    if (out[total] !== undefined && (out[read] !== undefined || out[write] !== undefined)) {
      throw new LibvirtXmlError(
        'INVALID_COMBINATION',
        name(total),
        `cannot be combined with ${label(read)}/${label(write)}`,
      );
    }
  }
  // libvirt defines these, but QEMU refuses to start the domain (after the disks were made).
  for (const [base, max, length] of BUCKETS) {
    const b = out[base];
    const m = out[max];
    const l = out[length];
    if (m !== undefined && b === undefined)
      throw new LibvirtXmlError(
        'INVALID_COMBINATION',
        name(max),
        `needs ${label(base)} (a burst rate without its base rate)`,
      );
    if (m !== undefined && b !== undefined && m < b)
      throw new LibvirtXmlError('INVALID_COMBINATION', name(max), `${m} is below ${label(base)} (${b})`);
    if (l !== undefined && m === undefined)
      throw new LibvirtXmlError(
        'INVALID_COMBINATION',
        name(length),
        `needs ${label(max)} (a burst length without its burst rate)`,
      );
    if (l !== undefined && m !== undefined && l > IOTUNE_VALUE_MAX / m)
      throw new LibvirtXmlError(
        'INVALID_COMBINATION',
        name(length),
        `${label(max)} x ${label(length)} must not exceed ${IOTUNE_VALUE_MAX}`,
      );
  }
  if (
    out.sizeIopsSec !== undefined &&
    out.totalIopsSec === undefined &&
    out.readIopsSec === undefined &&
    out.writeIopsSec === undefined
  ) {
    throw new LibvirtXmlError('INVALID_COMBINATION', name('sizeIopsSec'), 'needs an iops limit');
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
  const specOf = new Map<string, string>();
  for (const [key, , spec] of FIELDS) {
    if (spec === undefined) continue;
    specOf.set(key, spec);
    const raw = extraSpecs[spec];
    if (raw === undefined) continue;
    const s = String(raw).trim();
    if (!/^\d{1,16}$/.test(s))
      throw new LibvirtXmlError(
        'INVALID_VALUE',
        spec,
        `expected a non-negative integer, got ${JSON.stringify(String(raw).slice(0, 32))}`,
      );
    out[key] = Number(s);
  }
  // Errors name the extra spec the operator wrote, not our field.
  validate(out, 'extraSpecs', '', (k) => specOf.get(k) ?? k);
  return out;
}
