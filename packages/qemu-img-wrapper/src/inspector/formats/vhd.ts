// VHD (qemu: vpc)
import { ImageFormatError, type SafetyIssue } from '../../errors.js';
import type { RegionReader } from '../source.js';
import type { InspectedImage } from '../types.js';
import { ascii, checkVirtualSize, MAX_TABLE_BYTES, need, result, startsWith, u16be, u32be, u64 } from './bytes.js';

const VHD_MAX_GEOMETRY = 65535 * 16 * 255;

export function parseVhdFooter(r: RegionReader, footer: Uint8Array, atTail: boolean): InspectedImage {
  const F = 'vhd';
  need(footer, 512, F, 'footer');
  const creatorApp = ascii(footer, 28, 4);
  const currentSize = u64(footer, 48, false);
  const cyls = u16be(footer, 56);
  const heads = footer[58]!;
  const secs = footer[59]!;
  const diskType = u32be(footer, 60);
  if (diskType !== 2 && diskType !== 3 && diskType !== 4) {
    throw new ImageFormatError('invalid-header', `vhd disk type ${diskType} is invalid`, F);
  }
  const subformat = diskType === 2 ? 'fixed' : diskType === 3 ? 'dynamic' : 'differencing';
  // qemu 7.2 vpc_open: CHS geometry unless the creator is known to use current_size.
  const useChs = !['win ', 'qem2', 'd2v ', 'CTXS', 'tap\0'].includes(creatorApp);
  let sectors = cyls * heads * secs;
  if (!useChs || sectors === VHD_MAX_GEOMETRY) sectors = Math.floor(currentSize / 512);
  const issues: SafetyIssue[] = [];
  const extra: Partial<InspectedImage> = {};
  if (diskType === 4) {
    extra.backingFile = '';
    issues.push({ reason: 'backing-file', message: 'vhd is a differencing disk with a parent' });
  }
  if (diskType !== 2) {
    // Dynamic/differencing: the dynamic header names the BAT qemu loads into memory.
    const dataOffset = u64(footer, 16, false);
    if (!Number.isSafeInteger(dataOffset))
      throw new ImageFormatError('invalid-header', 'vhd data offset is invalid', F);
    const dh = r.read(dataOffset, 1024);
    need(dh, 1024, F, 'dynamic header');
    if (!startsWith(dh, 'cxsparse')) throw new ImageFormatError('invalid-header', 'vhd dynamic header is missing', F);
    const entries = u32be(dh, 28);
    if (entries * 4 > MAX_TABLE_BYTES) {
      issues.push({ reason: 'header-bomb', message: `vhd block table of ${entries} entries is too large` });
    }
  }
  void atTail;
  return result('vhd', r, checkVirtualSize(sectors * 512, F), { format: 'vhd', subformat, creatorApp }, issues, extra);
}
