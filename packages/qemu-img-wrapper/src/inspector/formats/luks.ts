// LUKS: an encrypted container; only its header is read (version, payload offset).
import { ImageFormatError, type SafetyIssue } from '../../errors.js';
import { type RegionReader, requireSize } from '../source.js';
import type { InspectedImage } from '../types.js';
import { need, result, u16be, u32be } from './bytes.js';

export function parseLuks(r: RegionReader): InspectedImage {
  const F = 'luks';
  const h = r.read(0, 592);
  need(h, 8, F, 'header');
  const version = u16be(h, 6);
  const issues: SafetyIssue[] = [];
  if (version !== 1) {
    issues.push({ reason: 'unsupported-variant', message: `LUKS version ${version} is not supported by qemu` });
    return result('luks', r, undefined, { format: 'luks', version, payloadOffset: 0 }, issues, { encrypted: true });
  }
  need(h, 112, F, 'header');
  const payloadOffset = u32be(h, 104) * 512;
  const size = requireSize(r);
  const virtualSize = size >= payloadOffset ? size - payloadOffset : undefined;
  if (virtualSize === undefined) {
    throw new ImageFormatError('truncated', 'LUKS payload offset lies beyond the end of the image', F);
  }
  return result('luks', r, virtualSize, { format: 'luks', version, payloadOffset }, issues, { encrypted: true });
}
