import { describe, expect, it } from 'vitest';
import {
  ImageFormatError,
  ImageSafetyError,
  QEMU_IMG_ERROR_CODES,
  QemuImg,
  QemuImgError,
  type QemuImgErrorKind,
  isQemuImgError,
} from '@ephemera/qemu-img-wrapper';

const KINDS: QemuImgErrorKind[] = ['exit', 'timeout', 'aborted', 'spawn', 'parse', 'signal', 'invalid-argument'];

describe('error codes', () => {
  it('every error carries one of QEMU_IMG_ERROR_CODES, and every listed code is carried by some error', () => {
    const errors = [
      ...KINDS.map((kind) => new QemuImgError({ kind, command: 'info', message: kind })),
      new ImageFormatError('truncated', 'short'),
      new ImageSafetyError('qcow2', [{ reason: 'backing-file', message: 'has a parent' }]),
    ];
    const carried = errors.map((e) => e.code);
    expect(new Set(carried).size).toBe(carried.length);
    expect([...carried].sort()).toEqual([...QEMU_IMG_ERROR_CODES].sort());
    expect(new QemuImgError({ kind: 'invalid-argument', command: 'convert', message: 'm' }).code).toBe(
      'QEMU_IMG_INVALID_ARGUMENT',
    );
    // The old fields stay.
    expect(errors[1]).toMatchObject({ kind: 'timeout', code: 'QEMU_IMG_TIMEOUT' });
  });

  it('real failures carry their code: refused arguments, a qemu-img binary that does not run', async () => {
    const q = new QemuImg({ binary: '/nonexistent/qemu-img' });
    const refused = await q.create('/nonexistent/x.raw', { format: 'raw' }).catch((e: unknown) => e);
    expect(isQemuImgError(refused, 'QEMU_IMG_INVALID_ARGUMENT')).toBe(true);
    expect(refused).toMatchObject({ kind: 'invalid-argument' });
    // Started through setpriv (parent-death signal), so a missing binary is setpriv's exit 127.
    const missing = await q.create('/nonexistent/x.raw', { format: 'raw', size: 1 << 20 }).catch((e: unknown) => e);
    expect(isQemuImgError(missing, 'QEMU_IMG_EXIT')).toBe(true);
    expect(missing).toMatchObject({ kind: 'exit', code: 'QEMU_IMG_EXIT', exitCode: 127 });
  });

  it('isQemuImgError tells the package’s errors and codes apart', () => {
    const unsafe = new ImageSafetyError('vmdk', [{ reason: 'vmdk-extent', message: 'extent' }]);
    expect(isQemuImgError(unsafe)).toBe(true);
    expect(isQemuImgError(unsafe, 'QEMU_IMG_UNSAFE_IMAGE')).toBe(true);
    expect(isQemuImgError(unsafe, 'QEMU_IMG_BAD_IMAGE')).toBe(false);
    expect(isQemuImgError(Object.assign(new Error('x'), { name: 'QemuImgError', code: 'QEMU_IMG_EXIT' }))).toBe(false);
    expect(isQemuImgError(undefined)).toBe(false);
  });
});
