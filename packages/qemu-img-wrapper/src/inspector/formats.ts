import { ImageFormatError, type SafetyIssue } from '../errors.js';
import { requireSize, type RegionReader } from './source.js';
import { QEMU_DRIVER, type FormatDetails, type ImageFormat, type InspectedImage, type VmdkExtent } from './types.js';

// ---------------------------------------------------------------------------------------------
// Little helpers over byte arrays (bounds-checked by the callers through `need`).

const MAX_SAFE = Number.MAX_SAFE_INTEGER;
/** Largest in-memory table (L1, BAT, block map) we let qemu-img allocate from header fields. */
const MAX_TABLE_BYTES = 64 * 1024 * 1024;

function need(buf: Uint8Array, length: number, format: string, what: string): void {
  if (buf.length < length) {
    throw new ImageFormatError('truncated', `${format} ${what} is truncated (${buf.length} of ${length} bytes)`, format);
  }
}
function dv(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}
function u16be(b: Uint8Array, o: number): number {
  return dv(b).getUint16(o, false);
}
function u16le(b: Uint8Array, o: number): number {
  return dv(b).getUint16(o, true);
}
function u32be(b: Uint8Array, o: number): number {
  return dv(b).getUint32(o, false);
}
function u32le(b: Uint8Array, o: number): number {
  return dv(b).getUint32(o, true);
}
/** A 64-bit field as a number; values above 2^53 are reported as `Infinity`-like MAX+1 sentinel. */
function u64(b: Uint8Array, o: number, le: boolean): number {
  const v = dv(b).getBigUint64(o, le);
  return v > BigInt(MAX_SAFE) ? Number.POSITIVE_INFINITY : Number(v);
}
function u64bits(b: Uint8Array, o: number, le: boolean): number[] {
  const v = dv(b).getBigUint64(o, le);
  const bits: number[] = [];
  for (let i = 0; i < 64; i++) if ((v >> BigInt(i)) & 1n) bits.push(i);
  return bits;
}
function ascii(b: Uint8Array, o = 0, n = b.length - o): string {
  let s = '';
  const end = Math.min(b.length, o + n);
  for (let i = o; i < end; i++) s += String.fromCharCode(b[i]!);
  return s;
}
function startsWith(b: Uint8Array, magic: string, o = 0): boolean {
  if (b.length < o + magic.length) return false;
  for (let i = 0; i < magic.length; i++) if (b[o + i] !== magic.charCodeAt(i)) return false;
  return true;
}
/** Decodes a file name stored in a header; non-printable bytes are escaped so messages stay readable. */
function nameOf(b: Uint8Array): string {
  let s = new TextDecoder('utf-8', { fatal: false }).decode(b);
  const nul = s.indexOf('\0');
  if (nul >= 0) s = s.slice(0, nul);
  // eslint-disable-next-line no-control-regex
  return s.replace(/[\x00-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}
function checkVirtualSize(v: number, format: string): number {
  if (!Number.isSafeInteger(v)) {
    throw new ImageFormatError('invalid-header', `${format} virtual size is out of range`, format);
  }
  return v;
}

function result(
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

// ---------------------------------------------------------------------------------------------
// qcow2 (https://gitlab.com/qemu-project/qemu/-/blob/master/docs/interop/qcow2.txt)

const QCOW2_KNOWN_INCOMPAT = 0b11111; // dirty, corrupt, external data, compression type, extended L2
const QCOW2_EXT_BACKING_FORMAT = 0xe2792aca;
const QCOW2_EXT_DATA_FILE = 0x44415441;
const QCOW2_MAX_L1_BYTES = 32 * 1024 * 1024;
const QCOW2_MAX_REFTABLE_BYTES = 8 * 1024 * 1024;
const QCOW2_MAX_SNAPSHOTS = 65536;
const QCOW2_MAX_EXTENSIONS = 64;

function parseQcow2(r: RegionReader): InspectedImage {
  const F = 'qcow2';
  const h = r.read(0, 112);
  need(h, 72, F, 'header');
  const version = u32be(h, 4);
  if (version === 1) throw new ImageFormatError('unknown-format', 'qcow version 1 images are not supported', F);
  if (version !== 2 && version !== 3) {
    throw new ImageFormatError('invalid-header', `qcow2 version ${version} is not 2 or 3`, F);
  }
  const backingOffset = u64(h, 8, false);
  const backingSize = u32be(h, 16);
  const clusterBits = u32be(h, 20);
  const size = u64(h, 24, false);
  const cryptMethod = u32be(h, 32);
  const l1Size = u32be(h, 36);
  const refcountClusters = u32be(h, 56);
  const snapshotCount = u32be(h, 60);
  if (clusterBits < 9 || clusterBits > 21) {
    throw new ImageFormatError('invalid-header', `qcow2 cluster_bits ${clusterBits} is outside 9..21`, F);
  }
  if (cryptMethod > 2) throw new ImageFormatError('invalid-header', `qcow2 crypt_method ${cryptMethod} is unknown`, F);
  const cluster = 2 ** clusterBits;
  let incompat: number[] = [];
  let compat: number[] = [];
  let autoclear: number[] = [];
  let refcountOrder = 4;
  let headerLength = 72;
  let compressionType = 0;
  if (version === 3) {
    need(h, 104, F, 'version 3 header');
    incompat = u64bits(h, 72, false);
    compat = u64bits(h, 80, false);
    autoclear = u64bits(h, 88, false);
    refcountOrder = u32be(h, 96);
    headerLength = u32be(h, 100);
    if (refcountOrder > 6) throw new ImageFormatError('invalid-header', `qcow2 refcount_order ${refcountOrder} > 6`, F);
    if (headerLength < 104 || headerLength > cluster || headerLength % 8 !== 0) {
      throw new ImageFormatError('invalid-header', `qcow2 header_length ${headerLength} is invalid`, F);
    }
    if (headerLength > 104) {
      need(h, 105, F, 'header');
      compressionType = h[104]!;
    }
  }
  const issues: SafetyIssue[] = [];
  const extra: Partial<InspectedImage> = { encrypted: cryptMethod !== 0 };

  const unknown = incompat.filter((b) => b >= 32 || ((1 << b) & QCOW2_KNOWN_INCOMPAT) === 0);
  if (unknown.length) {
    issues.push({
      reason: 'unknown-feature',
      message: `qcow2 has unknown incompatible feature bits ${unknown.join(',')}`,
    });
  }
  if (incompat.includes(1)) issues.push({ reason: 'corrupt', message: 'qcow2 is marked corrupt' });
  if (incompat.includes(3) && compressionType > 1) {
    issues.push({ reason: 'unknown-feature', message: `qcow2 compression type ${compressionType} is unknown` });
  }
  if (!incompat.includes(3) && compressionType !== 0) {
    throw new ImageFormatError('invalid-header', 'qcow2 compression type set without its feature bit', F);
  }
  if (l1Size * 8 > QCOW2_MAX_L1_BYTES) {
    issues.push({ reason: 'header-bomb', message: `qcow2 L1 table of ${l1Size} entries exceeds qemu's limit` });
  }
  if (refcountClusters * cluster > QCOW2_MAX_REFTABLE_BYTES) {
    issues.push({ reason: 'header-bomb', message: `qcow2 refcount table of ${refcountClusters} clusters is too large` });
  }
  if (snapshotCount > QCOW2_MAX_SNAPSHOTS) {
    issues.push({ reason: 'header-bomb', message: `qcow2 claims ${snapshotCount} snapshots` });
  }

  // Header extensions, up to the backing file name or the end of the first cluster.
  const extEnd = backingOffset !== 0 ? Math.min(backingOffset, cluster) : cluster;
  let off = headerLength;
  for (let i = 0; ; i++) {
    if (off + 8 > extEnd) break;
    if (i >= QCOW2_MAX_EXTENSIONS) {
      issues.push({ reason: 'header-bomb', message: `qcow2 has more than ${QCOW2_MAX_EXTENSIONS} header extensions` });
      break;
    }
    const eh = r.read(off, 8);
    need(eh, 8, F, 'header extension');
    const type = u32be(eh, 0);
    const len = u32be(eh, 4);
    if (type === 0) break;
    if (off + 8 + len > extEnd) {
      throw new ImageFormatError('invalid-header', `qcow2 header extension 0x${type.toString(16)} overruns the header`, F);
    }
    if (type === QCOW2_EXT_BACKING_FORMAT || type === QCOW2_EXT_DATA_FILE) {
      if (len > 4096) throw new ImageFormatError('invalid-header', 'qcow2 header extension string is too long', F);
      const data = r.read(off + 8, len);
      need(data, len, F, 'header extension');
      if (type === QCOW2_EXT_BACKING_FORMAT) extra.backingFormat = nameOf(data);
      else extra.dataFile = nameOf(data);
    }
    off += 8 + Math.ceil(len / 8) * 8;
  }

  if (incompat.includes(2) || extra.dataFile !== undefined) {
    extra.dataFile ??= '';
    issues.push({
      reason: 'data-file',
      message: extra.dataFile
        ? `qcow2 stores its data in an external file ${JSON.stringify(extra.dataFile)}`
        : 'qcow2 has the external data file feature bit set',
    });
  }
  if (backingOffset !== 0) {
    if (backingSize === 0 || backingSize > 1023) {
      throw new ImageFormatError('invalid-header', `qcow2 backing file name length ${backingSize} is invalid`, F);
    }
    if (backingOffset + backingSize > cluster) {
      throw new ImageFormatError('invalid-header', 'qcow2 backing file name lies outside the first cluster', F);
    }
    const name = r.read(backingOffset, backingSize);
    need(name, backingSize, F, 'backing file name');
    extra.backingFile = nameOf(name);
    issues.push({
      reason: 'backing-file',
      message: `qcow2 has a backing file ${JSON.stringify(extra.backingFile)}`,
    });
  }
  return result(
    'qcow2',
    r,
    checkVirtualSize(size, F),
    {
      format: 'qcow2',
      version,
      clusterBits,
      incompatibleFeatureBits: incompat,
      compatibleFeatureBits: compat,
      autoclearFeatureBits: autoclear,
      compressionType,
      cryptMethod,
      l1Size,
      snapshotCount,
      refcountOrder,
    },
    issues,
    extra,
  );
}

// ---------------------------------------------------------------------------------------------
// QED

const QED_F_BACKING_FILE = 1;
const QED_F_NEED_CHECK = 2;
const QED_F_BACKING_FORMAT_NO_PROBE = 4;

function parseQed(r: RegionReader): InspectedImage {
  const F = 'qed';
  const h = r.read(0, 64);
  need(h, 64, F, 'header');
  const clusterSize = u32le(h, 4);
  const tableSize = u32le(h, 8);
  const headerSize = u32le(h, 12);
  const features = u64bits(h, 16, true);
  const imageSize = u64(h, 48, true);
  const backingOffset = u32le(h, 56);
  const backingSize = u32le(h, 60);
  const pow2 = (n: number): boolean => n > 0 && (n & (n - 1)) === 0;
  if (!pow2(clusterSize) || clusterSize < 4096 || clusterSize > 64 * 1024 * 1024) {
    throw new ImageFormatError('invalid-header', `qed cluster size ${clusterSize} is invalid`, F);
  }
  if (!pow2(tableSize) || tableSize > 16) {
    throw new ImageFormatError('invalid-header', `qed table size ${tableSize} is invalid`, F);
  }
  if (headerSize === 0 || headerSize > 1024) {
    throw new ImageFormatError('invalid-header', `qed header size ${headerSize} is invalid`, F);
  }
  const issues: SafetyIssue[] = [];
  if (tableSize * clusterSize > MAX_TABLE_BYTES) {
    issues.push({ reason: 'header-bomb', message: `qed L1 table of ${tableSize * clusterSize} bytes is too large` });
  }
  const extra: Partial<InspectedImage> = {};
  const known = QED_F_BACKING_FILE | QED_F_NEED_CHECK | QED_F_BACKING_FORMAT_NO_PROBE;
  const unknown = features.filter((b) => b >= 31 || ((1 << b) & known) === 0);
  if (unknown.length) {
    issues.push({ reason: 'unknown-feature', message: `qed has unknown feature bits ${unknown.join(',')}` });
  }
  if (features.includes(0) || backingOffset !== 0) {
    if (backingSize > 1023 || backingOffset + backingSize > headerSize * clusterSize) {
      throw new ImageFormatError('invalid-header', 'qed backing file name is out of range', F);
    }
    const name = r.read(backingOffset, backingSize);
    need(name, backingSize, F, 'backing file name');
    extra.backingFile = nameOf(name);
    issues.push({ reason: 'backing-file', message: `qed has a backing file ${JSON.stringify(extra.backingFile)}` });
  }
  return result(
    'qed',
    r,
    checkVirtualSize(imageSize, F),
    { format: 'qed', clusterSize, featureBits: features },
    issues,
    extra,
  );
}

// ---------------------------------------------------------------------------------------------
// VMDK

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
  const d: Descriptor = { createType: undefined, parentCid: undefined, parentHint: undefined, extents: [], malformed: [] };
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

function parseVmdkSparse(r: RegionReader): InspectedImage {
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
  let d: Descriptor = { createType: undefined, parentCid: undefined, parentHint: undefined, extents: [], malformed: [] };
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

function parseVmdkDescriptorFile(r: RegionReader): InspectedImage {
  const F = 'vmdk';
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
function looksLikeVmdkDescriptor(b: Uint8Array): boolean {
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

// ---------------------------------------------------------------------------------------------
// VHD (qemu: vpc)

const VHD_MAX_GEOMETRY = 65535 * 16 * 255;

function parseVhdFooter(r: RegionReader, footer: Uint8Array, atTail: boolean): InspectedImage {
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
    if (!Number.isSafeInteger(dataOffset)) throw new ImageFormatError('invalid-header', 'vhd data offset is invalid', F);
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

// ---------------------------------------------------------------------------------------------
// VHDX

function guid(b: Uint8Array, o: number): string {
  const h = (i: number): string => b[o + i]!.toString(16).padStart(2, '0');
  return (
    h(3) + h(2) + h(1) + h(0) + '-' + h(5) + h(4) + '-' + h(7) + h(6) + '-' + h(8) + h(9) + '-' +
    h(10) + h(11) + h(12) + h(13) + h(14) + h(15)
  ).toUpperCase();
}
const VHDX_REGION_BAT = '2DC27766-F623-4200-9D64-115E9BFD4A08';
const VHDX_REGION_METADATA = '8B7CA206-4790-4B9A-B8FE-575F050F886E';
const VHDX_META_FILE_PARAMETERS = 'CAA16737-FA36-4D43-B3B6-33F0AA44E76B';
const VHDX_META_VIRTUAL_DISK_SIZE = '2FA54224-CD1B-4876-B211-5DBED83BF4B8';
const VHDX_META_PARENT_LOCATOR = 'A8D35F2D-B30B-454D-ABF7-D3D84834AB0C';
const VHDX_MAX_ENTRIES = 2047;

function parseVhdx(r: RegionReader): InspectedImage {
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
  if (!startsWith(rt, 'regi')) throw new ImageFormatError('invalid-header', 'vhdx region table signature is missing', F);
  const count = u32le(rt, 8);
  if (count > VHDX_MAX_ENTRIES) throw new ImageFormatError('invalid-header', `vhdx region table has ${count} entries`, F);
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
  if (!startsWith(mt, 'metadata')) throw new ImageFormatError('invalid-header', 'vhdx metadata signature is missing', F);
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

// ---------------------------------------------------------------------------------------------
// VDI

const VDI_SIGNATURE = 0xbeda107f;

function parseVdi(r: RegionReader): InspectedImage {
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

// ---------------------------------------------------------------------------------------------
// LUKS

function parseLuks(r: RegionReader): InspectedImage {
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

// ---------------------------------------------------------------------------------------------
// Raw: ISO 9660, MBR/GPT, fixed VHD footer, or plain bytes.

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

function parseRawLike(r: RegionReader, head: Uint8Array): InspectedImage {
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
    return result(
      'vmdk',
      r,
      undefined,
      { format: 'vmdk', createType: 'vmdk3', descriptorOnly: false, extents: [] },
      [{ reason: 'unsupported-variant', message: 'legacy VMDK3 (COWD) images are not supported' }],
    );
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
