// Raw: ISO 9660, MBR/GPT, fixed VHD footer, or plain bytes.
import { ImageFormatError } from '../../errors.js';
import { type RegionReader, requireSize } from '../source.js';
import type { InspectedImage } from '../types.js';
import { result, startsWith, u16le, u32be, u32le } from './bytes.js';
import { parseVhdFooter } from './vhd.js';

function partitionTable(b: Uint8Array): 'protective' | 'mbr' | undefined {
  if (b.length < 512 || b[510] !== 0x55 || b[511] !== 0xaa) return undefined;
  let gptProtective = false;
  let any = false;
  for (let i = 0; i < 4; i++) {
    const e = 446 + i * 16;
    const boot = b[e]!;
    const type = b[e + 4]!;
    if (boot !== 0x00 && boot !== 0x80) return undefined;
    if (type !== 0) any = true;
    if (type === 0xee) gptProtective = true;
  }
  if (gptProtective) return 'protective';
  return any ? 'mbr' : undefined;
}

export function parseRawLike(r: RegionReader, head: Uint8Array): InspectedImage {
  const mbr = partitionTable(head);
  let pt: 'gpt' | 'mbr' | undefined = mbr === 'protective' ? 'mbr' : mbr;
  if (mbr === 'protective' && startsWith(r.read(512, 8), 'EFI PART')) pt = 'gpt';
  const pvd = r.read(32768, 256);
  const extra: Partial<InspectedImage> = pt ? { partitionTable: pt } : {};
  if (pvd.length >= 136 && pvd[0] === 1 && startsWith(pvd, 'CD001', 1) && pvd[6] === 1) {
    const blocks = u32le(pvd, 80);
    const blockSize = u16le(pvd, 128);
    const size = requireSize(r);
    return result('iso', r, size, { format: 'iso', volumeBytes: blocks * blockSize }, [], extra);
  }
  const size = requireSize(r);
  if (size < 512) {
    // No format claimed it and it cannot hold even one sector: a cut-off upload, not a disk.
    throw new ImageFormatError('empty', `the image holds only ${size} bytes, less than one 512-byte sector`);
  }
  const t = r.tail(512);
  if (startsWith(t, 'conectix') && t.length === 512 && u32be(t, 60) === 2) {
    try {
      const img = parseVhdFooter(r, t, true);
      if (img.details.format === 'vhd' && img.details.subformat === 'fixed') return img;
    } catch (e) {
      if (!(e instanceof ImageFormatError)) throw e;
    }
  }
  return result('raw', r, size, { format: 'raw' }, [], extra);
}
