import { describe, expect, it } from 'vitest';
import * as rbd from '@ephemera/ceph-rbd-napi';
import { importPackageCopy } from '@ephemera/testkit';
import { translateRbdError } from '../../src/errors.js';

type Classes = Record<string, new (errno: number, operation: string, target: string, detail?: string) => Error>;

/** Binding error (class, errno) -> the contract code it becomes, outside and inside a create. */
const TABLE: [cls: string, errno: number, code: string, inCreate: string][] = [
  ['ImageExists', 17, 'ALREADY_EXISTS', 'ALREADY_EXISTS'],
  ['ImageNotFound', 2, 'NOT_FOUND', 'BACKEND_UNAVAILABLE'],
  ['ObjectNotFound', 2, 'BACKEND_UNAVAILABLE', 'BACKEND_UNAVAILABLE'],
  ['ImageBusy', 16, 'BUSY', 'BUSY'],
  ['NoSpace', 28, 'INSUFFICIENT_CAPACITY', 'INSUFFICIENT_CAPACITY'],
  ['DiskQuotaExceeded', 122, 'INSUFFICIENT_CAPACITY', 'INSUFFICIENT_CAPACITY'],
  ['InvalidArgument', 22, 'INVALID_ARGUMENT', 'INVALID_ARGUMENT'],
  ['PermissionDenied', 13, 'BACKEND_UNAVAILABLE', 'BACKEND_UNAVAILABLE'],
  ['Timeout', 110, 'BACKEND_UNAVAILABLE', 'BACKEND_UNAVAILABLE'],
];

function expectTranslated(classes: Classes): void {
  for (const [cls, errno, code, inCreate] of TABLE) {
    const err = new classes[cls]!(errno, 'image.op', 'rbd/d1');
    const out = translateRbdError(err, { clientId: 'eph', id: 'd1' });
    expect(out, cls).toMatchObject({ code, backend: 'rbd', diskId: 'd1', cause: err });
    expect(translateRbdError(err, { clientId: 'eph', id: 'd1', phase: 'create' }), cls).toMatchObject({
      code: inCreate,
    });
    if (cls === 'PermissionDenied') expect((out as Error).message).toContain('client.eph');
  }
}

describe('translateRbdError', () => {
  it('maps each binding error onto the contract; other errors stay as they are', () => {
    expectTranslated(rbd as unknown as Classes);
    const plain = new Error('not ours');
    expect(translateRbdError(plain, { clientId: 'eph' })).toBe(plain);
  });

  it('maps errors from another copy of @ephemera/ceph-rbd-napi the same way', async () => {
    const copy = await importPackageCopy('ceph-rbd-napi');
    try {
      expect(copy.module.ImageNotFound).not.toBe(rbd.ImageNotFound);
      expectTranslated(copy.module as Classes);
    } finally {
      copy.remove();
    }
  });
});
