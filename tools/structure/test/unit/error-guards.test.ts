// Issue 17 item 4: each package's `isXError(err, code?)` recognises its errors by a brand, so it
// still works when two copies of a package are loaded (two versions in node_modules, a plugin
// bundling its own). Tested for real: two copies of each built package's dist/, imported side by side.
import { afterAll, describe, expect, it } from 'vitest';
import { importPackageCopy, type PackageCopy } from '@ephemera/testkit';

/** A package's exports, as far as this test uses them: error classes (and the guard, cast where used). */
type Mod = Record<string, new (...args: unknown[]) => Error>;

interface Case {
  /** The guard's export name. */
  guard: string;
  /** Errors of the package, each with the code the guard must match. */
  errors: (m: Mod) => { err: Error; code: string | number }[];
  /** A code of the package that the errors above do not carry. */
  otherCode: string | number;
  /** image-backend also takes an Error whose `code` is one of its codes (copies older than the brand). */
  acceptsShape?: true;
}

const cases: Record<string, Case> = {
  'image-backend': {
    guard: 'isImageBackendError',
    errors: (m) => [
      { err: new m.NotFoundError('gone'), code: 'NOT_FOUND' },
      { err: new m.UnknownBackendError('zfs', []), code: 'UNKNOWN_BACKEND' },
    ],
    otherCode: 'BUSY',
    acceptsShape: true,
  },
  glance: {
    guard: 'isGlanceError',
    errors: (m) => [
      { err: new m.GlanceNotFoundError('GET', '/v2/images/x', ''), code: 'GLANCE_NOT_FOUND' },
      { err: new m.GlanceTimeoutError('slow', 10), code: 'GLANCE_TIMEOUT' },
    ],
    otherCode: 'GLANCE_AUTH',
  },
  driver: {
    guard: 'isDriverError',
    errors: (m) => [
      { err: new m.DriverError('TIMEOUT', 'slow'), code: 'TIMEOUT' },
      { err: new m.ConfigError('images.rbd.pool', 'missing'), code: 'INVALID_CONFIG' },
    ],
    otherCode: 'JOURNAL',
  },
  'libvirt-xml': {
    guard: 'isLibvirtXmlError',
    errors: (m) => [{ err: new m.LibvirtXmlError('INVALID_VALUE', 'disks[0].target', 'bad'), code: 'INVALID_VALUE' }],
    otherCode: 'MISSING_VALUE',
  },
  'qemu-img-wrapper': {
    guard: 'isQemuImgError',
    errors: (m) => [
      { err: new m.QemuImgError({ kind: 'timeout', command: 'info', message: 'slow' }), code: 'QEMU_IMG_TIMEOUT' },
      { err: new m.ImageFormatError('truncated', 'short'), code: 'QEMU_IMG_BAD_IMAGE' },
      {
        err: new m.ImageSafetyError('qcow2', [{ reason: 'backing-file', message: 'has a parent' }]),
        code: 'QEMU_IMG_UNSAFE_IMAGE',
      },
    ],
    otherCode: 'QEMU_IMG_SPAWN',
  },
  'ceph-rbd-napi': {
    guard: 'isRbdError',
    errors: (m) => [
      { err: new m.ImageNotFound(2, 'ioctx.open', 'rbd/x'), code: 'ENOENT' },
      { err: new m.RbdError(5, 'image.read', 'rbd/x'), code: 'EIO' },
    ],
    otherCode: 'EBUSY',
  },
  'libvirt-napi': {
    guard: 'isLibvirtError',
    errors: (m) => [
      { err: new m.LibvirtError({ code: 42, domain: 10, level: 2, message: 'no domain' }), code: 'VIR_ERR_NO_DOMAIN' },
    ],
    otherCode: 'VIR_ERR_OPERATION_INVALID',
  },
};

const copies: PackageCopy[] = [];
afterAll(() => {
  for (const c of copies) c.remove();
});

/** Another copy of the built package (its dist/ and package.json in a temp dir of their own). */
async function copyOf(pkg: string): Promise<Mod> {
  const copy = await importPackageCopy(pkg);
  copies.push(copy);
  return copy.module as Mod;
}

describe('error guards across two copies of a package', () => {
  for (const [pkg, c] of Object.entries(cases)) {
    it(`${pkg}: ${c.guard} of each copy recognises the other copy's errors, with and without a code`, async () => {
      const a = await copyOf(pkg);
      const b = await copyOf(pkg);
      expect(a[c.guard]).not.toBe(b[c.guard]);
      for (const [mine, theirs] of [
        [a, b],
        [b, a],
      ] as const) {
        const guard = mine[c.guard] as unknown as (err: unknown, code?: string | number) => boolean;
        expect(typeof guard, `${pkg} exports ${c.guard}`).toBe('function');
        for (const { err, code } of c.errors(theirs)) {
          expect(guard(err), `${err.name} ${code}`).toBe(true);
          expect(guard(err, code), `${err.name} ${code}`).toBe(true);
          expect(guard(err, c.otherCode), `${err.name} is not ${c.otherCode}`).toBe(false);
          // Same name and code, not made by the package: the brand tells them apart.
          const lookalike = Object.assign(new Error(err.message), {
            name: err.name,
            code: (err as { code?: unknown }).code,
          });
          if (!c.acceptsShape) expect(guard(lookalike, code), `a lookalike ${err.name}`).toBe(false);
        }
        expect(guard(new Error('plain'))).toBe(false);
        expect(guard(Object.assign(new Error('x'), { code: 'EWHATEVER' }))).toBe(false);
        expect(guard(null)).toBe(false);
        expect(guard('NOT_FOUND')).toBe(false);
      }
    });
  }

  it('a guard does not take another package’s errors for its own', async () => {
    const qemu = await copyOf('qemu-img-wrapper');
    const backend = await copyOf('image-backend');
    const unsafe = new backend.UnsafeImageError('backing-file', 'has a parent');
    const isQemuImgError = qemu.isQemuImgError as unknown as (err: unknown) => boolean;
    const isImageBackendError = backend.isImageBackendError as unknown as (err: unknown) => boolean;
    expect(isQemuImgError(unsafe)).toBe(false);
    expect(isImageBackendError(new qemu.ImageSafetyError('qcow2', []))).toBe(false);
  });
});
