import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  HandleClosed,
  InvalidArgument,
  METADATA_VALUE_MAX_BYTES,
  PermissionDenied,
  ReadOnlyImage,
  type Cluster,
  type Image,
  type IoCtx,
} from '@ephemera/ceph-rbd-napi';
import { Cleanup, cleanUpAndClose, connectAs, stack, uniq } from './helpers.js';

const MiB = 1 << 20;
const run = promisify(execFile);
let admin: Cluster;
let ephemera: Cluster;
let vms: IoCtx;
let adminImages: IoCtx;
const cleanup = new Cleanup();

beforeAll(async () => {
  admin = await connectAs('admin');
  ephemera = await connectAs('ephemera');
  // The driver's own user on its own pool: how Ephemera records ownership.
  vms = await ephemera.openIoCtx(stack().ceph.pools.vms);
  adminImages = await admin.openIoCtx(stack().ceph.pools.images);
});
afterAll(() => cleanUpAndClose(cleanup, ephemera, admin));

/** Creates an image in `ioctx` (removed after the file's tests) and opens it. */
async function freshImage(ioctx: IoCtx, prefix: string): Promise<{ name: string; img: Image }> {
  const name = uniq(prefix);
  await ioctx.create(name, 4 * MiB);
  cleanup.add(`remove ${name}`, () => ioctx.remove(name));
  const img = await ioctx.open(name);
  cleanup.add(`close ${name}`, () => img.close());
  return { name, img };
}

/** The `rbd` CLI as client.admin (keyring path, never a key): an independent reader of what librbd stored. */
async function rbdCli(...args: string[]): Promise<string> {
  const u = stack().ceph.users.admin;
  const { stdout } = await run('rbd', ['--conf', u.confPath, '--id', u.id, '--keyring', u.keyringPath, ...args], {
    timeout: 30_000,
  });
  return stdout;
}

describe('image metadata (rbd_metadata_*)', () => {
  it('set, get, overwrite, list and remove round-trip, and the rbd CLI sees the same pairs', async () => {
    const { name, img } = await freshImage(vms, 'meta');
    expect(await img.metadataList()).toEqual([]);
    await img.metadataSet('ephemera.host', 'compute-1');
    await img.metadataSet('ephemera.instance', '6f1c2d4e-0000-4000-8000-000000000001');
    await img.metadataSet('ephemera.disk', 'root');
    expect(await img.metadataGet('ephemera.host')).toBe('compute-1');
    await img.metadataSet('ephemera.host', 'compute-2');
    expect(await img.metadataGet('ephemera.host')).toBe('compute-2');
    // Sorted by key, as RADOS orders omap keys.
    expect(await img.metadataList()).toEqual([
      ['ephemera.disk', 'root'],
      ['ephemera.host', 'compute-2'],
      ['ephemera.instance', '6f1c2d4e-0000-4000-8000-000000000001'],
    ]);
    expect(JSON.parse(await rbdCli('image-meta', 'list', '--format', 'json', `vms/${name}`))).toEqual({
      'ephemera.disk': 'root',
      'ephemera.host': 'compute-2',
      'ephemera.instance': '6f1c2d4e-0000-4000-8000-000000000001',
    });
    expect(await img.metadataRemove('ephemera.disk')).toBe(true);
    expect(await img.metadataGet('ephemera.disk')).toBeUndefined();
    expect((await img.metadataList()).map(([k]) => k)).toEqual(['ephemera.host', 'ephemera.instance']);
  });

  it('a missing key: get resolves undefined, remove resolves false; an empty value is a value', async () => {
    const { img } = await freshImage(vms, 'meta-missing');
    expect(await img.metadataGet('never-set')).toBeUndefined();
    expect(await img.metadataRemove('never-set')).toBe(false);
    await img.metadataSet('empty', '');
    expect(await img.metadataGet('empty')).toBe('');
    expect(await img.metadataList()).toEqual([['empty', '']]);
  });

  it('lists every pair past librbd pages (150 keys), and start (exclusive) / max select a window', async () => {
    const { img } = await freshImage(vms, 'meta-many');
    const keys = Array.from({ length: 150 }, (_, i) => `k${String(i).padStart(3, '0')}`);
    // Concurrent sets: each is its own job on the worker threads.
    await Promise.all(keys.map((k) => img.metadataSet(k, `value of ${k}`)));
    const all = await img.metadataList();
    expect(all.map(([k]) => k)).toEqual(keys);
    expect(all.every(([k, v]) => v === `value of ${k}`)).toBe(true);
    expect((await img.metadataList({ start: 'k069', max: 10 })).map(([k]) => k)).toEqual(keys.slice(70, 80));
    expect((await img.metadataList({ start: 'k100' })).map(([k]) => k)).toEqual(keys.slice(101));
    expect((await img.metadataList({ max: 130 })).map(([k]) => k)).toEqual(keys.slice(0, 130));
    expect(await img.metadataList({ start: 'k149' })).toEqual([]);
  });

  it('large values: the largest allowed value round-trips through get and list, many 8 KiB values list whole', async () => {
    const { name, img } = await freshImage(vms, 'meta-large');
    const big = 'x'.repeat(METADATA_VALUE_MAX_BYTES - 1) + 'y';
    await img.metadataSet('big', big);
    expect(await img.metadataGet('big')).toBe(big);
    expect(await rbdCli('image-meta', 'get', `vms/${name}`, 'big')).toBe(`${big}\n`);
    const values = Array.from({ length: 70 }, (_, i) => String(i % 10).repeat(8192));
    await Promise.all(values.map((v, i) => img.metadataSet(`v${String(i).padStart(2, '0')}`, v)));
    const listed = await img.metadataList();
    expect(listed.length).toBe(71);
    expect(listed[0]).toEqual(['big', big]);
    expect(listed.slice(1).map(([, v]) => v)).toEqual(values);
  });

  it('unicode keys and values round-trip byte for byte (UTF-8)', async () => {
    const { name, img } = await freshImage(vms, 'meta-utf8');
    const pairs: [string, string][] = [
      ['besitzer.größe', 'Ærøskøbing — 東京 🚀'],
      ['ключ', 'значение'],
      ['😀', 'emoji key'],
    ];
    for (const [k, v] of pairs) await img.metadataSet(k, v);
    for (const [k, v] of pairs) expect(await img.metadataGet(k)).toBe(v);
    const listed = await img.metadataList();
    expect(new Map(listed)).toEqual(new Map(pairs));
    // RADOS orders keys by their UTF-8 bytes.
    const byBytes = [...pairs].sort(([a], [b]) => Buffer.compare(Buffer.from(a), Buffer.from(b))).map(([k]) => k);
    expect(listed.map(([k]) => k)).toEqual(byBytes);
    expect(await rbdCli('image-meta', 'get', `vms/${name}`, 'ключ')).toBe('значение\n');
  });

  it('an image opened read-only, or at a snapshot, reads metadata but refuses set and remove with ReadOnlyImage (EROFS)', async () => {
    const { name, img } = await freshImage(vms, 'meta-ro');
    await img.metadataSet('owner', 'compute-1');
    await img.createSnapshot('s');
    cleanup.add(`remove snapshot ${name}@s`, async () => {
      const i = await vms.open(name);
      await i.removeSnapshot('s');
      await i.close();
    });
    // Set after the snapshot: metadata belongs to the image, not to a snapshot.
    await img.metadataSet('later', 'after-snap');
    for (const opts of [{ readOnly: true }, { snapshot: 's' }]) {
      const ro = await vms.open(name, opts);
      try {
        expect(await ro.metadataGet('owner')).toBe('compute-1');
        expect(await ro.metadataList()).toEqual([
          ['later', 'after-snap'],
          ['owner', 'compute-1'],
        ]);
        const set = await ro.metadataSet('owner', 'intruder').catch((e: unknown) => e);
        expect(set).toBeInstanceOf(ReadOnlyImage);
        expect((set as ReadOnlyImage).code).toBe('EROFS');
        expect((set as ReadOnlyImage).operation).toBe('image.metadataSet');
        expect((set as ReadOnlyImage).message).not.toContain('intruder');
        const removed = await ro.metadataRemove('owner').catch((e: unknown) => e);
        expect(removed).toBeInstanceOf(ReadOnlyImage);
      } finally {
        await ro.close();
      }
    }
    expect(await img.metadataGet('owner')).toBe('compute-1');
  });

  it('client.ephemera on images (rbd-read-only): can get and list, cannot set or remove', async () => {
    const { name, img } = await freshImage(adminImages, 'meta-perm');
    await img.metadataSet('glance.owner', 'admin');
    const images = await ephemera.openIoCtx(stack().ceph.pools.images);
    try {
      // A writable open needs a watch, which the read-only profile refuses.
      expect(await images.open(name).catch((e: unknown) => e)).toBeInstanceOf(PermissionDenied);
      const ro = await images.open(name, { readOnly: true });
      try {
        expect(await ro.metadataGet('glance.owner')).toBe('admin');
        expect(await ro.metadataList()).toEqual([['glance.owner', 'admin']]);
        expect(await ro.metadataSet('glance.owner', 'ephemera').catch((e: unknown) => e)).toBeInstanceOf(ReadOnlyImage);
        expect(await ro.metadataRemove('glance.owner').catch((e: unknown) => e)).toBeInstanceOf(ReadOnlyImage);
      } finally {
        await ro.close();
      }
    } finally {
      await images.close();
    }
    expect(await img.metadataList()).toEqual([['glance.owner', 'admin']]);
  });

  it('a conf_ key is a librbd config override: an unknown option is refused with InvalidArgument and not stored', async () => {
    const { img } = await freshImage(vms, 'meta-conf');
    const err = await img.metadataSet('conf_no_such_option', '1').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidArgument);
    expect((err as InvalidArgument).operation).toBe('image.metadataSet');
    expect(await img.metadataList()).toEqual([]);
  });

  it('a closed image rejects every metadata call with HandleClosed', async () => {
    const name = uniq('meta-closed');
    await vms.create(name, MiB);
    cleanup.add(`remove ${name}`, () => vms.remove(name));
    const img = await vms.open(name);
    await img.close();
    for (const p of [img.metadataGet('k'), img.metadataSet('k', 'v'), img.metadataRemove('k'), img.metadataList()]) {
      expect(await p.catch((e: unknown) => e)).toBeInstanceOf(HandleClosed);
    }
  });
});
