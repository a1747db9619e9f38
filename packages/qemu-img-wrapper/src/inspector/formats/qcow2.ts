// qcow2 (https://gitlab.com/qemu-project/qemu/-/blob/master/docs/interop/qcow2.txt)
import { ImageFormatError, type SafetyIssue } from '../../errors.js';
import type { RegionReader } from '../source.js';
import type { InspectedImage } from '../types.js';
import { checkVirtualSize, nameOf, need, result, u32be, u64, u64bits } from './bytes.js';

const QCOW2_KNOWN_INCOMPAT = 0b11111; // dirty, corrupt, external data, compression type, extended L2
const QCOW2_EXT_BACKING_FORMAT = 0xe2792aca;
const QCOW2_EXT_DATA_FILE = 0x44415441;
const QCOW2_MAX_L1_BYTES = 32 * 1024 * 1024;
const QCOW2_MAX_REFTABLE_BYTES = 8 * 1024 * 1024;
const QCOW2_MAX_SNAPSHOTS = 65536;
const QCOW2_MAX_EXTENSIONS = 64;

export function parseQcow2(r: RegionReader): InspectedImage {
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
    issues.push({
      reason: 'header-bomb',
      message: `qcow2 refcount table of ${refcountClusters} clusters is too large`,
    });
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
      throw new ImageFormatError(
        'invalid-header',
        `qcow2 header extension 0x${type.toString(16)} overruns the header`,
        F,
      );
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
