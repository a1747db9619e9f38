import { describe, expect, it } from 'vitest';
import {
  ConnectionShutdown,
  ObjectNotFound,
  HandleClosed,
  ImageBusy,
  ImageExists,
  ImageHasSnapshots,
  ImageNotFound,
  InvalidArgument,
  NoSpace,
  PermissionDenied,
  RbdError,
  ReadOnlyImage,
  Timeout,
} from '@ephemera/ceph-rbd-napi';
import { errnoCode, errnoNumbers, nativeErrorFactory, rbdErrorFromErrno } from '../../src/errors.js';

const E = errnoNumbers as Record<string, number>;

describe('errno -> RbdError subclasses (rbd.pyx table)', () => {
  const table: [number, new (...a: never[]) => RbdError, string][] = [
    [E.ENOENT, ImageNotFound, 'ENOENT'],
    [E.EEXIST, ImageExists, 'EEXIST'],
    [E.EBUSY, ImageBusy, 'EBUSY'],
    [E.ENOTEMPTY, ImageHasSnapshots, 'ENOTEMPTY'],
    [E.EPERM, PermissionDenied, 'EPERM'],
    [E.EACCES, PermissionDenied, 'EACCES'],
    [E.EINVAL, InvalidArgument, 'EINVAL'],
    [E.ENOSPC, NoSpace, 'ENOSPC'],
    [E.ETIMEDOUT, Timeout, 'ETIMEDOUT'],
    [E.EROFS, ReadOnlyImage, 'EROFS'],
    [E.ESHUTDOWN, ConnectionShutdown, 'ESHUTDOWN'],
  ];
  it.each(table)('errno %i -> %o (%s)', (errno, cls, code) => {
    // librbd reports negative errnos; both signs map the same way.
    for (const e of [
      rbdErrorFromErrno(errno, 'ioctx.open', 'pool/img'),
      rbdErrorFromErrno(-errno, 'ioctx.open', 'pool/img'),
    ]) {
      expect(e).toBeInstanceOf(cls);
      expect(e).toBeInstanceOf(RbdError);
      expect(e).toBeInstanceOf(Error);
      expect(e.errno).toBe(errno);
      expect(e.code).toBe(code);
      expect(e.operation).toBe('ioctx.open');
      expect(e.target).toBe('pool/img');
      expect(e.name).toBe(cls.name);
      expect(e.message).toContain(code);
      expect(e.message).toContain('ioctx.open pool/img');
    }
  });

  it('ENOENT of a pool or config is ObjectNotFound, of an image ImageNotFound (a subclass)', () => {
    const pool = rbdErrorFromErrno(-E.ENOENT!, 'cluster.openIoCtx', 'nopool');
    expect(pool).toBeInstanceOf(ObjectNotFound);
    expect(pool).not.toBeInstanceOf(ImageNotFound);
    const img = rbdErrorFromErrno(-E.ENOENT!, 'ioctx.open', 'vms/x');
    expect(img).toBeInstanceOf(ImageNotFound);
    expect(img).toBeInstanceOf(ObjectNotFound);
    expect(E.ESHUTDOWN).toBe(108);
  });

  it('an unknown errno is a plain RbdError with its code', () => {
    const e = rbdErrorFromErrno(E.EXDEV, 'op', 't');
    expect(e.constructor).toBe(RbdError);
    expect(e.code).toBe('EXDEV');
    expect(errnoCode(100000)).toBe('E100000');
  });

  it('the native factory builds HandleClosed for closed handles and typed errors otherwise', () => {
    const closed = nativeErrorFactory('closed', E.EBADF, 'image.read', 'vms/x', 'Bad file descriptor');
    expect(closed).toBeInstanceOf(HandleClosed);
    expect((closed as HandleClosed).code).toBe('EBADF');
    const nf = nativeErrorFactory('errno', E.ENOENT, 'ioctx.open', 'vms/x', 'No such file or directory');
    expect(nf).toBeInstanceOf(ImageNotFound);
    expect(nf.message).toBe('ioctx.open vms/x: No such file or directory (ENOENT)');
  });
});
