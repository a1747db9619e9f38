import { describe, expect, it } from 'vitest';
import { Image, InvalidArgument, METADATA_KEY_MAX_BYTES, METADATA_VALUE_MAX_BYTES } from '@ephemera/ceph-rbd-napi';

// The native image is a trap: validation must refuse bad arguments before any librbd call.
function trappedImage(): Image {
  const never = () => Promise.reject(new Error('must not be called'));
  const fake = { metadataGet: never, metadataSet: never, metadataRemove: never, metadataList: never };
  return new Image(fake as never, {} as never, 'img', null, false);
}

async function refusal(p: Promise<unknown>): Promise<InvalidArgument> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(InvalidArgument);
  expect((err as InvalidArgument).code).toBe('EINVAL');
  return err as InvalidArgument;
}

const badKeys: [string, unknown][] = [
  ['a number', 42],
  ['undefined', undefined],
  ['an empty string', ''],
  ['a NUL inside', 'ephemera\0owner'],
  ['a lone surrogate (not valid UTF-8)', 'owner\uD800'],
  ['one byte too long', 'k'.repeat(METADATA_KEY_MAX_BYTES + 1)],
  // Three-byte characters: within the limit in UTF-16 units, over it in UTF-8 bytes.
  ['too long in UTF-8 bytes', '€'.repeat(Math.floor(METADATA_KEY_MAX_BYTES / 3) + 1)],
];

describe('image metadata: argument validation before any librbd call', () => {
  it.each(badKeys)('metadataGet/Set/Remove refuse a key that is %s', async (_label, key) => {
    const img = trappedImage();
    const errs = [
      await refusal(img.metadataGet(key as string)),
      await refusal(img.metadataSet(key as string, 'v')),
      await refusal(img.metadataRemove(key as string)),
    ];
    expect(errs.map((e) => e.operation)).toEqual(['image.metadataGet', 'image.metadataSet', 'image.metadataRemove']);
    expect(errs.every((e) => e.target === 'img')).toBe(true);
  });

  it('a key of exactly the maximum length in UTF-8 bytes is accepted (reaches librbd)', async () => {
    const img = trappedImage();
    const key = 'k'.repeat(METADATA_KEY_MAX_BYTES - 3) + '€';
    await expect(img.metadataGet(key)).rejects.toThrow('must not be called');
  });

  it.each([
    ['a number', 1],
    ['null', null],
    ['a NUL inside', 'host\0x'],
    ['a lone surrogate', '\uDC00'],
    ['one byte over the maximum', 'v'.repeat(METADATA_VALUE_MAX_BYTES + 1)],
  ] as [string, unknown][])('metadataSet refuses a value that is %s, and never echoes it', async (_label, value) => {
    const err = await refusal(trappedImage().metadataSet('owner', value as string));
    if (typeof value === 'string') expect(err.message).not.toContain(value);
  });

  it('an empty value and a value of exactly the maximum size are accepted', async () => {
    const img = trappedImage();
    await expect(img.metadataSet('owner', '')).rejects.toThrow('must not be called');
    await expect(img.metadataSet('owner', 'é'.repeat(METADATA_VALUE_MAX_BYTES / 2))).rejects.toThrow(
      'must not be called',
    );
  });

  it.each([
    ['options that are not an object', 5],
    ['a start that is not a string', { start: 3 }],
    ['a start with NUL', { start: 'a\0' }],
    ['a negative max', { max: -1 }],
    ['a fractional max', { max: 1.5 }],
    ['a max that is not a number', { max: '10' }],
  ] as [string, unknown][])('metadataList refuses %s', async (_label, opts) => {
    const err = await refusal(trappedImage().metadataList(opts as never));
    expect(err.operation).toBe('image.metadataList');
  });

  it('metadataList passes start and max through (empty start and 0 meaning from the first key, no limit)', async () => {
    const calls: unknown[][] = [];
    const fake = {
      metadataList: (...args: unknown[]) => {
        calls.push(args);
        return Promise.resolve([['a', '1']]);
      },
    };
    const img = new Image(fake as never, {} as never, 'img', null, false);
    expect(await img.metadataList()).toEqual([['a', '1']]);
    await img.metadataList({ start: 'k', max: 3 });
    expect(calls).toEqual([
      ['', 0],
      ['k', 3],
    ]);
  });
});
