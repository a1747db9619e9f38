// QED (QEMU enhanced disk): header, backing file and table sizes.
import { ImageFormatError, type SafetyIssue } from '../../errors.js';
import type { RegionReader } from '../source.js';
import type { InspectedImage } from '../types.js';
import { checkVirtualSize, MAX_TABLE_BYTES, nameOf, need, result, u32le, u64, u64bits } from './bytes.js';

const QED_F_BACKING_FILE = 1;
const QED_F_NEED_CHECK = 2;
const QED_F_BACKING_FORMAT_NO_PROBE = 4;

export function parseQed(r: RegionReader): InspectedImage {
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
