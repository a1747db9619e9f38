// VHDX: headers, region table, metadata (virtual size, parent locator).
import { ImageFormatError, type SafetyIssue } from '../../errors.js';
import type { RegionReader } from '../source.js';
import type { InspectedImage } from '../types.js';
import { checkVirtualSize, need, result, startsWith, u16le, u32le, u64 } from './bytes.js';

function guid(b: Uint8Array, o: number): string {
  const h = (i: number): string => b[o + i]!.toString(16).padStart(2, '0');
  return (
    h(3) +
    h(2) +
    h(1) +
    h(0) +
    '-' +
    h(5) +
    h(4) +
    '-' +
    h(7) +
    h(6) +
    '-' +
    h(8) +
    h(9) +
    '-' +
    h(10) +
    h(11) +
    h(12) +
    h(13) +
    h(14) +
    h(15)
  ).toUpperCase();
}
const VHDX_REGION_BAT = '2DC27766-F623-4200-9D64-115E9BFD4A08';
const VHDX_REGION_METADATA = '8B7CA206-4790-4B9A-B8FE-575F050F886E';
const VHDX_META_FILE_PARAMETERS = 'CAA16737-FA36-4D43-B3B6-33F0AA44E76B';
const VHDX_META_VIRTUAL_DISK_SIZE = '2FA54224-CD1B-4876-B211-5DBED83BF4B8';
const VHDX_META_PARENT_LOCATOR = 'A8D35F2D-B30B-454D-ABF7-D3D84834AB0C';
const VHDX_MAX_ENTRIES = 2047;

export function parseVhdx(r: RegionReader): InspectedImage {
  const F = 'vhdx';
  const issues: SafetyIssue[] = [];
  // Active header: the one of the two (at 64 KiB and 128 KiB) with the higher sequence number.
  let logSize = 0;
  let bestSeq = -1;
  for (const off of [64 * 1024, 128 * 1024]) {
    const hh = r.read(off, 80);
    need(hh, 80, F, 'header');
    if (!startsWith(hh, 'head')) continue;
    const seq = u64(hh, 8, true);
    if (seq > bestSeq) {
      bestSeq = seq;
      logSize = u32le(hh, 68);
    }
  }
  if (bestSeq < 0) throw new ImageFormatError('invalid-header', 'vhdx has no valid header', F);
  const rt = r.read(192 * 1024, 16);
  need(rt, 16, F, 'region table');
  if (!startsWith(rt, 'regi'))
    throw new ImageFormatError('invalid-header', 'vhdx region table signature is missing', F);
  const count = u32le(rt, 8);
  if (count > VHDX_MAX_ENTRIES)
    throw new ImageFormatError('invalid-header', `vhdx region table has ${count} entries`, F);
  const entries = r.read(192 * 1024 + 16, count * 32);
  need(entries, count * 32, F, 'region table');
  let metaOffset = -1;
  let metaLength = 0;
  for (let i = 0; i < count; i++) {
    const id = guid(entries, i * 32);
    const fileOffset = u64(entries, i * 32 + 16, true);
    const length = u32le(entries, i * 32 + 24);
    const required = u32le(entries, i * 32 + 28) & 1;
    if (id === VHDX_REGION_METADATA) {
      metaOffset = fileOffset;
      metaLength = length;
    } else if (id !== VHDX_REGION_BAT && required) {
      issues.push({ reason: 'unknown-feature', message: `vhdx has an unknown required region ${id}` });
    }
  }
  if (metaOffset < 0 || !Number.isSafeInteger(metaOffset)) {
    throw new ImageFormatError('invalid-header', 'vhdx has no metadata region', F);
  }
  const mt = r.read(metaOffset, 32);
  need(mt, 32, F, 'metadata table');
  if (!startsWith(mt, 'metadata'))
    throw new ImageFormatError('invalid-header', 'vhdx metadata signature is missing', F);
  const mcount = u16le(mt, 10);
  if (mcount > VHDX_MAX_ENTRIES) throw new ImageFormatError('invalid-header', `vhdx metadata has ${mcount} entries`, F);
  const me = r.read(metaOffset + 32, mcount * 32);
  need(me, mcount * 32, F, 'metadata table');
  let virtualSize: number | undefined;
  let hasParent = false;
  const extra: Partial<InspectedImage> = {};
  for (let i = 0; i < mcount; i++) {
    const id = guid(me, i * 32);
    const itemOffset = u32le(me, i * 32 + 16);
    const itemLength = u32le(me, i * 32 + 20);
    if (itemOffset + itemLength > metaLength) {
      throw new ImageFormatError('invalid-header', `vhdx metadata item ${id} lies outside its region`, F);
    }
    if (id === VHDX_META_VIRTUAL_DISK_SIZE) {
      const v = r.read(metaOffset + itemOffset, 8);
      need(v, 8, F, 'virtual disk size');
      virtualSize = u64(v, 0, true);
    } else if (id === VHDX_META_FILE_PARAMETERS) {
      const v = r.read(metaOffset + itemOffset, 8);
      need(v, 8, F, 'file parameters');
      if (u32le(v, 4) & 2) hasParent = true;
    } else if (id === VHDX_META_PARENT_LOCATOR) {
      hasParent = true;
    }
  }
  if (virtualSize === undefined) throw new ImageFormatError('invalid-header', 'vhdx has no virtual disk size', F);
  if (hasParent) {
    extra.backingFile = '';
    issues.push({ reason: 'backing-file', message: 'vhdx is a differencing disk with a parent' });
  }
  return result('vhdx', r, checkVirtualSize(virtualSize, F), { format: 'vhdx', hasParent, logSize }, issues, extra);
}
