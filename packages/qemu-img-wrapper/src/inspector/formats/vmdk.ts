// VMDK: sparse (KDMV) images and descriptor files, with their extents.
import { ImageFormatError, type SafetyIssue } from '../../errors.js';
import type { RegionReader } from '../source.js';
import type { InspectedImage, VmdkExtent } from '../types.js';
import { ascii, checkVirtualSize, MAX_TABLE_BYTES, need, result, startsWith, u32le, u64 } from './bytes.js';

const VMDK_SAFE_CREATE_TYPES = new Set(['monolithicSparse', 'streamOptimized']);
const VMDK_MAX_DESCRIPTOR = 64 * 1024;

interface Descriptor {
  createType: string | undefined;
  parentCid: string | undefined;
  parentHint: string | undefined;
  extents: VmdkExtent[];
  /** Extent lines with values no reader should accept (a negative sector count). */
  malformed: string[];
}

function parseDescriptor(text: string): Descriptor {
  const d: Descriptor = {
    createType: undefined,
    parentCid: undefined,
    parentHint: undefined,
    extents: [],
    malformed: [],
  };
  const nul = text.indexOf('\0');
  if (nul >= 0) text = text.slice(0, nul);
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const kv = /^([A-Za-z.]+)\s*=\s*"?([^"]*)"?$/.exec(line);
    if (kv) {
      const key = kv[1]!.toLowerCase();
      if (key === 'createtype') d.createType = kv[2];
      else if (key === 'parentcid') d.parentCid = kv[2];
      else if (key === 'parentfilenamehint') d.parentHint = kv[2];
      continue;
    }
    // Shaped like qemu's sscanf("%10s %" SCNd64 " %10s \"%511[^\n\r\"]\""), but any access word
    // and any case count: a line we skipped could still be one some reader follows.
    const ext = /^(\S+)\s+([+-]?\d+)\s+(\S+)(?:\s+"([^"\r\n]*)")?/.exec(line);
    if (ext) {
      const sectors = Number(ext[2]);
      if (sectors < 0) d.malformed.push(line);
      d.extents.push({
        access: ext[1]!,
        sectors: Math.max(0, sectors),
        type: ext[3]!,
        filename: ext[4],
      });
    }
  }
  return d;
}

/**
 * True when an extent names the image itself. A stream has no file name and Glance stores images
 * under their id, not the name qemu-img wrote, so "itself" is a bare name in the image's own
 * directory: no directory part, no protocol prefix (qemu opens `nbd:...`/`json:...` as URLs).
 */
function isOwnExtentName(name: string | undefined): boolean {
  if (name === undefined || name === '' || name === '.' || name === '..') return false;
  // eslint-disable-next-line no-control-regex
  return !/[/\\:\x00-\x1f\x7f]/.test(name);
}

function descriptorIssues(d: Descriptor, issues: SafetyIssue[], extra: Partial<InspectedImage>): void {
  const bad = d.extents.filter((e) => e.type !== 'SPARSE');
  if (bad.length) {
    issues.push({
      reason: 'vmdk-extent',
      message: `vmdk has ${bad[0]!.type} extent ${JSON.stringify(bad[0]!.filename ?? '')} that refers to another file`,
    });
  }
  if (d.extents.length > 1) {
    issues.push({ reason: 'vmdk-extent', message: `vmdk descriptor lists ${d.extents.length} extents` });
  }
  if (d.extents.length === 0) {
    issues.push({ reason: 'vmdk-extent', message: 'vmdk descriptor lists no extent' });
  }
  const foreign = d.extents.find((e) => !isOwnExtentName(e.filename));
  if (foreign) {
    issues.push({
      reason: 'vmdk-extent',
      message: `vmdk extent ${JSON.stringify(foreign.filename ?? null)} is not the image itself (a bare file name)`,
    });
  }
  if (d.malformed.length) {
    issues.push({ reason: 'vmdk-extent', message: `vmdk extent line ${JSON.stringify(d.malformed[0])} is malformed` });
  }
  if (d.parentHint !== undefined || (d.parentCid !== undefined && d.parentCid.toLowerCase() !== 'ffffffff')) {
    extra.backingFile = d.parentHint ?? '';
    issues.push({
      reason: 'backing-file',
      message: `vmdk is a delta disk of parent ${JSON.stringify(d.parentHint ?? d.parentCid)}`,
    });
  }
  if (d.createType === undefined || !VMDK_SAFE_CREATE_TYPES.has(d.createType)) {
    issues.push({
      reason: 'vmdk-create-type',
      message: `vmdk createType ${JSON.stringify(d.createType ?? null)} is not monolithicSparse or streamOptimized`,
    });
  }
}

export function parseVmdkSparse(r: RegionReader): InspectedImage {
  const F = 'vmdk';
  const h = r.read(0, 512);
  need(h, 79, F, 'sparse header');
  const version = u32le(h, 4);
  const capacity = u64(h, 12, true);
  const grainSize = u64(h, 20, true);
  const descOffset = u64(h, 28, true);
  const descSize = u64(h, 36, true);
  if (version < 1 || version > 3) throw new ImageFormatError('invalid-header', `vmdk version ${version} is invalid`, F);
  const issues: SafetyIssue[] = [];
  if (capacity === 0) {
    // qemu then opens the descriptor's extents as separate files: the CVE-2024-32498 pattern.
    issues.push({
      reason: 'vmdk-extent',
      message: 'vmdk sparse header has zero capacity, so qemu would follow the descriptor extents',
    });
  }
  const extra: Partial<InspectedImage> = {};
  let d: Descriptor = {
    createType: undefined,
    parentCid: undefined,
    parentHint: undefined,
    extents: [],
    malformed: [],
  };
  if (descOffset !== 0) {
    if (!Number.isSafeInteger(descOffset * 512) || !Number.isSafeInteger(descSize * 512)) {
      throw new ImageFormatError('invalid-header', 'vmdk descriptor location is out of range', F);
    }
    if (descSize * 512 > VMDK_MAX_DESCRIPTOR) {
      issues.push({ reason: 'header-bomb', message: `vmdk descriptor of ${descSize} sectors is too large` });
    } else {
      const text = r.read(descOffset * 512, descSize * 512);
      need(text, descSize * 512, F, 'descriptor');
      d = parseDescriptor(ascii(text));
      descriptorIssues(d, issues, extra);
    }
  } else {
    issues.push({ reason: 'vmdk-create-type', message: 'vmdk sparse file has no embedded descriptor' });
  }
  let virtualSize: number;
  if (capacity === 0) {
    virtualSize = d.extents.reduce((a, e) => a + e.sectors * 512, 0);
  } else {
    virtualSize = capacity * 512;
  }
  if (grainSize === 0 || grainSize > 2048) {
    throw new ImageFormatError('invalid-header', `vmdk grain size ${grainSize} is invalid`, F);
  }
  const gtes = u32le(h, 44);
  if (capacity !== 0 && Number.isSafeInteger(capacity)) {
    const l1Entries = gtes === 0 ? Infinity : Math.ceil(capacity / (gtes * grainSize));
    if (l1Entries * 4 > MAX_TABLE_BYTES || gtes * 4 > MAX_TABLE_BYTES) {
      issues.push({ reason: 'header-bomb', message: 'vmdk grain directory/tables would be huge' });
    }
  }
  return result(
    'vmdk',
    r,
    checkVirtualSize(virtualSize, F),
    { format: 'vmdk', createType: d.createType, descriptorOnly: false, extents: d.extents },
    issues,
    extra,
  );
}

export function parseVmdkDescriptorFile(r: RegionReader): InspectedImage {
  const _F = 'vmdk';
  const text = r.read(0, VMDK_MAX_DESCRIPTOR);
  const d = parseDescriptor(ascii(text));
  const issues: SafetyIssue[] = [
    { reason: 'vmdk-extent', message: 'vmdk is a text descriptor whose extents are other files' },
  ];
  const extra: Partial<InspectedImage> = {};
  descriptorIssues(d, issues, extra);
  const virtualSize = d.extents.reduce((a, e) => a + e.sectors * 512, 0);
  return result(
    'vmdk',
    r,
    Number.isSafeInteger(virtualSize) ? virtualSize : undefined,
    { format: 'vmdk', createType: d.createType, descriptorOnly: true, extents: d.extents },
    issues,
    extra,
  );
}

/** qemu's vmdk_probe for text descriptors: comment lines and spaces, then `version=[123]`. */
export function looksLikeVmdkDescriptor(b: Uint8Array): boolean {
  let p = 0;
  const end = b.length;
  while (p < end) {
    const c = b[p];
    if (c === 0x23 /* # */) {
      while (p < end && b[p] !== 0x0a) p++;
      p++;
      continue;
    }
    if (c === 0x20) {
      while (p < end && b[p] === 0x20) p++;
      if (p < end && b[p] === 0x0a) p++;
      else if (p + 1 < end && b[p] === 0x0d && b[p + 1] === 0x0a) p += 2;
      continue;
    }
    for (const v of ['1', '2', '3']) {
      if (startsWith(b, `version=${v}\n`, p) || startsWith(b, `version=${v}\r\n`, p)) return true;
    }
    return false;
  }
  return false;
}
