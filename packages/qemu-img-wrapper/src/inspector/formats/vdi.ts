// VDI (VirtualBox): header, block map bounds and virtual size.
import { ImageFormatError, type SafetyIssue } from '../../errors.js';
import type { RegionReader } from '../source.js';
import type { InspectedImage } from '../types.js';
import { checkVirtualSize, MAX_TABLE_BYTES, need, result, u32le, u64 } from './bytes.js';

export const VDI_SIGNATURE = 0xbeda107f;

export function parseVdi(r: RegionReader): InspectedImage {
  const F = 'vdi';
  const h = r.read(0, 512);
  need(h, 0x180, F, 'header');
  const version = u32le(h, 0x44);
  if (version !== 0x00010001) {
    throw new ImageFormatError('invalid-header', `vdi version 0x${version.toString(16)} is unsupported`, F);
  }
  const imageType = u32le(h, 0x4c);
  const issues: SafetyIssue[] = [];
  if (imageType === 4) {
    issues.push({ reason: 'backing-file', message: 'vdi is a differencing image with a parent' });
  } else if (imageType !== 1 && imageType !== 2) {
    issues.push({ reason: 'unsupported-variant', message: `vdi image type ${imageType} is not normal or fixed` });
  }
  const diskSize = u64(h, 0x170, true);
  const blocks = u32le(h, 0x180);
  if (blocks * 4 > MAX_TABLE_BYTES) {
    issues.push({ reason: 'header-bomb', message: `vdi block map of ${blocks} entries is too large` });
  }
  return result('vdi', r, checkVirtualSize(diskSize, F), { format: 'vdi', imageType }, issues);
}
