// Bounds-checked readers over header bytes, and the shape of an inspection result.
import { ImageFormatError, type SafetyIssue } from '../../errors.js';
import type { RegionReader } from '../source.js';
import { type FormatDetails, type ImageFormat, type InspectedImage, QEMU_DRIVER } from '../types.js';

const MAX_SAFE = Number.MAX_SAFE_INTEGER;
/** Largest in-memory table (L1, BAT, block map) we let qemu-img allocate from header fields. */
export const MAX_TABLE_BYTES = 64 * 1024 * 1024;

export function need(buf: Uint8Array, length: number, format: string, what: string): void {
  if (buf.length < length) {
    throw new ImageFormatError(
      'truncated',
      `${format} ${what} is truncated (${buf.length} of ${length} bytes)`,
      format,
    );
  }
}
function dv(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}
export function u16be(b: Uint8Array, o: number): number {
  return dv(b).getUint16(o, false);
}
export function u16le(b: Uint8Array, o: number): number {
  return dv(b).getUint16(o, true);
}
export function u32be(b: Uint8Array, o: number): number {
  return dv(b).getUint32(o, false);
}
export function u32le(b: Uint8Array, o: number): number {
  return dv(b).getUint32(o, true);
}
/** A 64-bit field as a number; values above 2^53 are reported as `Infinity`-like MAX+1 sentinel. */
export function u64(b: Uint8Array, o: number, le: boolean): number {
  const v = dv(b).getBigUint64(o, le);
  return v > BigInt(MAX_SAFE) ? Number.POSITIVE_INFINITY : Number(v);
}
export function u64bits(b: Uint8Array, o: number, le: boolean): number[] {
  const v = dv(b).getBigUint64(o, le);
  const bits: number[] = [];
  for (let i = 0; i < 64; i++) if ((v >> BigInt(i)) & 1n) bits.push(i);
  return bits;
}
export function ascii(b: Uint8Array, o = 0, n = b.length - o): string {
  let s = '';
  const end = Math.min(b.length, o + n);
  for (let i = o; i < end; i++) s += String.fromCharCode(b[i]!);
  return s;
}
export function startsWith(b: Uint8Array, magic: string, o = 0): boolean {
  if (b.length < o + magic.length) return false;
  for (let i = 0; i < magic.length; i++) if (b[o + i] !== magic.charCodeAt(i)) return false;
  return true;
}
/** Decodes a file name stored in a header; non-printable bytes are escaped so messages stay readable. */
export function nameOf(b: Uint8Array): string {
  let s = new TextDecoder('utf-8', { fatal: false }).decode(b);
  const nul = s.indexOf('\0');
  if (nul >= 0) s = s.slice(0, nul);
  // eslint-disable-next-line no-control-regex
  return s.replace(/[\x00-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}
export function checkVirtualSize(v: number, format: string): number {
  if (!Number.isSafeInteger(v)) {
    throw new ImageFormatError('invalid-header', `${format} virtual size is out of range`, format);
  }
  return v;
}

export function result(
  format: ImageFormat,
  r: RegionReader,
  virtualSize: number | undefined,
  details: FormatDetails,
  issues: SafetyIssue[],
  extra: Partial<InspectedImage> = {},
): InspectedImage {
  return {
    format,
    qemuFormat: QEMU_DRIVER[format],
    virtualSize,
    inputSize: r.size,
    encrypted: false,
    details,
    issues,
    ...extra,
  };
}
