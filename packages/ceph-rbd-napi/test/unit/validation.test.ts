import { constants as bufferConstants } from 'node:buffer';
import { describe, expect, it } from 'vitest';
import {
  connect,
  featureMask,
  featureNames,
  InvalidArgument,
  RbdFeature,
  setWorkerThreads,
} from '@ephemera/ceph-rbd-napi';

describe('features', () => {
  it('names <-> mask round trip', () => {
    const mask = featureMask(['layering', 'exclusive-lock', 'object-map', 'fast-diff', 'deep-flatten']);
    expect(mask).toBe(61);
    expect(featureNames(mask)).toEqual(['layering', 'exclusive-lock', 'object-map', 'fast-diff', 'deep-flatten']);
    expect(featureMask(RbdFeature.layering)).toBe(1);
  });
  it('rejects unknown names and bad masks with InvalidArgument', () => {
    expect(() => featureMask(['layering', 'warp-drive' as never])).toThrow(InvalidArgument);
    expect(() => featureMask(-1)).toThrow(InvalidArgument);
    expect(() => featureMask(1.5)).toThrow(InvalidArgument);
  });
});

describe('connect() validates before touching the cluster', () => {
  const cases: [string, unknown][] = [
    ['missing timeout', { monHost: '127.0.0.1:1' }],
    ['zero timeout', { monHost: '127.0.0.1:1', timeoutMs: 0 }],
    ['infinite timeout', { monHost: '127.0.0.1:1', timeoutMs: Infinity }],
    ['client. prefix in clientId', { clientId: 'client.admin', timeoutMs: 1000 }],
    ['NUL in a path', { confPath: '/etc/ceph\0/x', timeoutMs: 1000 }],
    ['non-string option', { timeoutMs: 1000, options: { rbd_cache: true } }],
  ];
  it.each(cases)('%s -> InvalidArgument', async (_label, opts) => {
    const err = await connect(opts as never).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidArgument);
    expect((err as InvalidArgument).code).toBe('EINVAL');
    expect((err as InvalidArgument).operation).toBe('connect');
  });

  it('an option value (possibly a secret) never appears in the error', async () => {
    const secret = 'AQBsecretsecretsecretsecretsecret==';
    const err = (await connect({ timeoutMs: 1000, options: { key: secret, bogus: 1 as never } }).catch(
      (e: unknown) => e,
    )) as Error;
    expect(err).toBeInstanceOf(InvalidArgument);
    expect(`${err.message}\n${err.stack}`).not.toContain(secret);
  });

  it('Image.read refuses a length no Buffer can hold, before any I/O', async () => {
    const { Image } = await import('@ephemera/ceph-rbd-napi');
    const fake = { read: () => Promise.reject(new Error('must not be called')) };
    const img = new Image(fake as never, {} as never, 'x', null, false);
    // One past the largest Buffer this Node can allocate (2^32 on Node 20, far more on Node 22+).
    await expect(img.read(0, bufferConstants.MAX_LENGTH + 1)).rejects.toBeInstanceOf(InvalidArgument);
    await expect(img.read(-1, 1)).rejects.toBeInstanceOf(InvalidArgument);
  });

  it('setWorkerThreads rejects out-of-range sizes', () => {
    expect(() => setWorkerThreads(0)).toThrow(InvalidArgument);
    expect(() => setWorkerThreads(2.5)).toThrow(InvalidArgument);
  });
});
