// The format registry: which parser claims an image, by its magic bytes, in order of precedence.
import { ImageFormatError } from '../../errors.js';
import type { RegionReader } from '../source.js';
import type { InspectedImage } from '../types.js';
import { result, startsWith, u32le } from './bytes.js';
import { parseLuks } from './luks.js';
import { parseQcow2 } from './qcow2.js';
import { parseQed } from './qed.js';
import { parseRawLike } from './raw.js';
import { parseVdi, VDI_SIGNATURE } from './vdi.js';
import { parseVhdFooter } from './vhd.js';
import { parseVhdx } from './vhdx.js';
import { looksLikeVmdkDescriptor, parseVmdkDescriptorFile, parseVmdkSparse } from './vmdk.js';

/**
 * Detects the format of an image from its headers and collects safety issues. Pure: all input
 * comes through `r`, so it runs unchanged on files, buffers and streams.
 */
export function detectFormat(r: RegionReader): InspectedImage {
  const head = r.read(0, 512);
  // read() returns nothing only at the end of the input: there is no data at all.
  if (head.length === 0) throw new ImageFormatError('empty', 'the image is empty (0 bytes)');
  if (startsWith(head, 'QFI\xfb')) return parseQcow2(r);
  if (startsWith(head, 'QED\0')) return parseQed(r);
  if (startsWith(head, 'KDMV')) return parseVmdkSparse(r);
  if (startsWith(head, 'COWD')) {
    return result('vmdk', r, undefined, { format: 'vmdk', createType: 'vmdk3', descriptorOnly: false, extents: [] }, [
      { reason: 'unsupported-variant', message: 'legacy VMDK3 (COWD) images are not supported' },
    ]);
  }
  if (startsWith(head, 'vhdxfile')) return parseVhdx(r);
  if (startsWith(head, 'conectix')) {
    const f = r.read(0, 512);
    return parseVhdFooter(r, f, false);
  }
  if (startsWith(head, 'LUKS\xba\xbe')) return parseLuks(r);
  if (head.length >= 0x48 && u32le(head, 0x40) === VDI_SIGNATURE) return parseVdi(r);
  if (looksLikeVmdkDescriptor(head)) return parseVmdkDescriptorFile(r);
  return parseRawLike(r, head);
}
