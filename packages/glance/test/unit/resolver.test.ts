/**
 * Resolver ranking and handler rules (pure logic: the Glance answers are given as data). The file
 * handler runs on real temp files. The real-Glance/real-Ceph versions are in test/integration.
 */
import { mkdtemp, mkdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  FileHandler,
  formatPlan,
  GlanceDownloadHandler,
  HttpDownloadHandler,
  ImageResolver,
  NoUsablePlanError,
  RbdCloneHandler,
  RbdCopyHandler,
  type GlanceImage,
  type ImageLocationEntry,
  type RbdProbe,
  type ResolverGlance,
  type ResolveTarget,
} from '@ephemera/glance';
import { formatVerdict, isInside } from '../../src/resolver/handlers.js';

const LOCAL = '11111111-2222-3333-4444-555555555555';
const REMOTE = 'aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee';
const ID = '0b0e7b7c-3c39-4d49-9f0b-1f2a3b4c5d6e';

function img(over: Partial<GlanceImage> = {}): GlanceImage {
  return {
    id: ID,
    name: 'i',
    status: 'active',
    disk_format: 'raw',
    container_format: 'bare',
    visibility: 'shared',
    size: 4096,
    virtual_size: 4096,
    checksum: null,
    os_hash_algo: null,
    os_hash_value: null,
    protected: false,
    min_disk: 0,
    min_ram: 0,
    owner: null,
    tags: [],
    created_at: '',
    updated_at: '',
    self: '',
    file: '',
    schema: '',
    ...over,
  };
}

function glance(image: GlanceImage, locations: ImageLocationEntry[], directUrl?: string): ResolverGlance {
  return {
    getImage: async () => image,
    getLocations: async () => ({
      imageId: image.id,
      locations,
      ...(directUrl ? { directUrl } : {}),
      source: 'image' as const,
    }),
    copyImage: async () => image,
  };
}

const readable: RbdProbe = { snapshotReadable: async () => true };
const all = (probe: RbdProbe = readable) => [
  new RbdCloneHandler(probe),
  new RbdCopyHandler(probe),
  new HttpDownloadHandler(),
  new FileHandler(),
  new GlanceDownloadHandler(),
];
const rbdTarget: ResolveTarget = { backend: 'rbd', ceph: { fsid: LOCAL, pools: ['images'] } };
const loc = (url: string, metadata: Record<string, unknown> = {}): ImageLocationEntry => ({ url, metadata });

describe('resolver', () => {
  it('prefers the clone, lists every alternative and every refusal', async () => {
    const url = `rbd://${LOCAL}/images/${ID}/snap`;
    const r = new ImageResolver(
      glance(img(), [loc(url), loc('rbd://legacy'), loc('swift://x/y'), loc('rbd://a/b')], url),
      all(),
    );
    const plan = await r.resolve(ID, rbdTarget);
    expect(plan.chosen).toMatchObject({ handler: 'rbd-clone', method: 'clone', cost: 1 });
    expect(plan.options.map((o) => o.handler)).toEqual(['rbd-clone', 'rbd-copy', 'glance-download']);
    expect(plan.declined).toEqual(
      expect.arrayContaining([
        expect.objectContaining({
          handler: 'rbd-clone',
          location: 'rbd://legacy',
          reason: expect.stringContaining('not cloneable'),
        }),
        expect.objectContaining({ handler: 'none', location: 'swift://x/y', reason: 'no handler for scheme swift' }),
        expect.objectContaining({
          handler: 'url-parser',
          location: 'rbd://a/b',
          reason: expect.stringContaining('part-count'),
        }),
      ]),
    );
    // direct_url equal to a listed location is not counted twice.
    expect(plan.options.filter((o) => o.source === 'direct_url')).toEqual([]);
    const text = formatPlan(plan);
    expect(text.split('\n')[1]).toBe(`plan: clone by rbd-clone from ${url} (cost 1) - clone images/${ID}@snap`);
    expect(text).toContain('declined: none swift://x/y: no handler for scheme swift');
  });

  it('declines the clone for each unmet condition, with the reason', async () => {
    const url = `rbd://${LOCAL}/images/${ID}/snap`;
    const reasons = async (image: GlanceImage, target: ResolveTarget, probe: RbdProbe = readable) => {
      const plan = await new ImageResolver(glance(image, [loc(url)]), all(probe)).resolve(ID, target);
      return plan.declined.find((d) => d.handler === 'rbd-clone')?.reason;
    };
    expect(await reasons(img({ disk_format: 'qcow2' }), rbdTarget)).toBe(
      'disk_format qcow2 is not raw; clone needs raw',
    );
    expect(await reasons(img(), { backend: 'lvm' })).toBe('target backend lvm cannot use RBD clones');
    expect(await reasons(img(), { backend: 'rbd' })).toBe('no local Ceph cluster configured');
    expect(await reasons(img(), { backend: 'rbd', ceph: { fsid: REMOTE, pools: ['images'] } })).toBe(
      `fsid ${LOCAL} is not the local cluster ${REMOTE}`,
    );
    expect(await reasons(img(), { backend: 'rbd', ceph: { fsid: LOCAL, pools: ['vms'] } })).toBe(
      'pool images is not readable from this node (readable: vms)',
    );
    expect(await reasons(img(), rbdTarget, { snapshotReadable: async () => false })).toBe(
      `snapshot images/${ID}@snap is not readable`,
    );
    expect(await reasons(img(), rbdTarget, { snapshotReadable: async () => 'Permission denied' })).toBe(
      `snapshot images/${ID}@snap is not readable: Permission denied`,
    );
    expect(
      await reasons(img(), rbdTarget, {
        snapshotReadable: async () => {
          throw new Error('librbd exploded');
        },
      }),
    ).toBe(`snapshot images/${ID}@snap is not readable: librbd exploded`);
  });

  it('non-raw images become converted imports; ova containers are refused everywhere', async () => {
    const url = `rbd://${LOCAL}/images/${ID}/snap`;
    const q = await new ImageResolver(glance(img({ disk_format: 'qcow2' }), [loc(url)]), all()).resolve(ID, rbdTarget);
    expect(q.options.map((o) => `${o.handler}:${o.method}:${o.cost}`)).toEqual([
      'rbd-copy:convert-import:30',
      'glance-download:convert-import:50',
    ]);
    const qq = await new ImageResolver(glance(img({ disk_format: 'qcow2' }), [loc(url)]), all()).resolve(ID, {
      backend: 'qcow2',
    });
    expect(qq.chosen).toMatchObject({ handler: 'glance-download', method: 'download', cost: 40 });
    expect(formatVerdict(img({ container_format: 'ova' }), rbdTarget)).toEqual({
      ok: false,
      reason: 'container_format ova is not bare',
    });
    await expect(
      new ImageResolver(glance(img({ container_format: 'ova' }), []), all()).resolve(ID, rbdTarget),
    ).rejects.toBeInstanceOf(NoUsablePlanError);
  });

  it('copies from a reachable remote cluster; ranks equal costs by store preference', async () => {
    const a = `rbd://${REMOTE}/images/${ID}/snap`;
    const r = new ImageResolver(
      glance(img(), [
        loc('https://a.example/x.raw', { store: 'web-a' }),
        loc('https://b.example/x.raw', { store: 'web-b' }),
        loc(a, { store: 'far' }),
      ]),
      all(),
    );
    const plan = await r.resolve(ID, {
      ...rbdTarget,
      remoteClusters: [{ fsid: REMOTE, pools: ['images'] }],
      preferredStores: ['web-b'],
    });
    expect(plan.options.map((o) => `${o.handler}:${o.store ?? '-'}:${o.cost}`)).toEqual([
      'rbd-copy:far:25',
      'http-download:web-b:30',
      'http-download:web-a:30',
      'glance-download:-:40',
    ]);
    expect(plan.declined).toContainEqual(
      expect.objectContaining({ handler: 'rbd-clone', reason: `fsid ${REMOTE} is not the local cluster ${LOCAL}` }),
    );
  });

  it('no usable option at all is a typed error listing the refusals', async () => {
    const r = new ImageResolver(glance(img({ status: 'queued' }), [loc('swift://x')]), all());
    const err = await r.resolve(ID, rbdTarget).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NoUsablePlanError);
    expect((err as NoUsablePlanError).declined.map((d) => d.reason)).toEqual([
      'no handler for scheme swift',
      'image is queued, not active',
    ]);
    expect((err as NoUsablePlanError).imageId).toBe(ID);
  });

  it('refuses two handlers with the same name', () => {
    expect(() => new ImageResolver(glance(img(), []), [new FileHandler(), new FileHandler()])).toThrow(
      /two image handlers/,
    );
  });

  it('a copy-image failure is reported as a declined option, the plan stands', async () => {
    const g = glance(img(), []);
    g.copyImage = async () => {
      const { ImageImportError } = await import('@ephemera/glance');
      throw new ImageImportError(ID, ['local']);
    };
    const plan = await new ImageResolver(g, all()).resolve(
      ID,
      { ...rbdTarget, localStore: 'local' },
      { copyToLocalStore: true },
    );
    expect(plan.chosen.handler).toBe('glance-download');
    expect(plan.declined).toContainEqual(
      expect.objectContaining({
        handler: 'copy-image',
        reason: expect.stringContaining('import failed for store(s) local'),
      }),
    );
  });
});

describe('copy into the local store when no location is usable (Nova clone(copy_to_store=True))', () => {
  const remoteUrl = `rbd://${REMOTE}/images/${ID}/snap`;
  const localUrl = `rbd://${LOCAL}/images/${ID}/snap`;
  // No Glance download handler: a node that only clones/copies from Ceph or fetches over http.
  const noDownload = () => [
    new RbdCloneHandler(readable),
    new RbdCopyHandler(readable),
    new HttpDownloadHandler(),
    new FileHandler(),
  ];
  /** A Glance whose copy-image adds `after` to the image's locations; counts the calls. */
  function copying(before: ImageLocationEntry[], after: ImageLocationEntry[] = []) {
    const calls = { getImage: 0, copyImage: [] as string[][] };
    let locations = before;
    const g: ResolverGlance = {
      getImage: async () => {
        calls.getImage++;
        return img();
      },
      getLocations: async () => ({ imageId: ID, locations, source: 'image' as const }),
      copyImage: async (_id, stores) => {
        calls.copyImage.push(stores);
        locations = [...locations, ...after];
        return img();
      },
    };
    return { g, calls };
  }
  const target: ResolveTarget = { ...rbdTarget, localStore: 'local', allowHttp: false };

  it('copies first, then plans again once', async () => {
    const { g, calls } = copying(
      [loc(remoteUrl), loc('http://example.org/i.raw')],
      [loc(localUrl, { store: 'local' })],
    );
    const plan = await new ImageResolver(g, noDownload()).resolve(ID, target, { copyToLocalStore: true });
    expect(calls.copyImage).toEqual([['local']]);
    expect(calls.getImage).toBe(2);
    expect(plan.copiedToStore).toBe('local');
    expect(plan.chosen).toMatchObject({ handler: 'rbd-clone', method: 'clone', store: 'local', location: localUrl });
    expect(formatPlan(plan)).toContain('copied into store local first');
  });

  it('still nothing usable after the copy: the same NoUsablePlanError, after one copy and one more plan', async () => {
    const { g, calls } = copying([loc(remoteUrl)], [loc('http://example.org/copy.raw', { store: 'local' })]);
    const err = await new ImageResolver(g, noDownload())
      .resolve(ID, target, { copyToLocalStore: true })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NoUsablePlanError);
    expect(calls.copyImage).toEqual([['local']]);
    expect(calls.getImage).toBe(2);
    expect((err as NoUsablePlanError).declined).toContainEqual(
      expect.objectContaining({
        handler: 'http-download',
        location: 'http://example.org/copy.raw',
        reason: 'plain http is not allowed on this node',
      }),
    );
  });

  it('a failed copy gives NoUsablePlanError listing the copy-image failure with the refusals', async () => {
    const { g, calls } = copying([loc(remoteUrl)]);
    g.copyImage = async (_id, stores) => {
      calls.copyImage.push(stores);
      const { ImageImportError } = await import('@ephemera/glance');
      throw new ImageImportError(ID, ['local']);
    };
    const err = await new ImageResolver(g, noDownload())
      .resolve(ID, target, { copyToLocalStore: true })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NoUsablePlanError);
    expect(calls.copyImage).toEqual([['local']]);
    expect((err as NoUsablePlanError).declined).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ handler: 'rbd-clone', location: remoteUrl }),
        expect.objectContaining({
          handler: 'copy-image',
          location: 'store local',
          reason: expect.stringContaining('import failed for store(s) local'),
        }),
      ]),
    );
  });

  it('without copy-to-store (or without a local store) nothing is copied', async () => {
    for (const [t, opts] of [
      [target, {}],
      [rbdTarget, { copyToLocalStore: true }],
    ] as const) {
      const { g, calls } = copying([loc(remoteUrl)], [loc(localUrl, { store: 'local' })]);
      await expect(new ImageResolver(g, noDownload()).resolve(ID, t, opts)).rejects.toBeInstanceOf(NoUsablePlanError);
      expect(calls.copyImage).toEqual([]);
    }
  });
});

describe('file handler on real files', () => {
  let root: string;
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'ephemera-glance-file-'));
    await mkdir(join(root, 'allowed/sub'), { recursive: true });
    await mkdir(join(root, 'allowed-not'), { recursive: true });
    await writeFile(join(root, 'allowed/sub/img.raw'), Buffer.alloc(4096));
    await writeFile(join(root, 'allowed/short.raw'), Buffer.alloc(10));
    await writeFile(join(root, 'allowed-not/img.raw'), Buffer.alloc(4096));
    await symlink(join(root, 'allowed-not/img.raw'), join(root, 'allowed/escape.raw'));
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  const verdict = async (path: string, dirs?: string[]) => {
    const plan = await new ImageResolver(glance(img(), [loc(`file://${path}`)]), all()).resolve(ID, {
      backend: 'lvm',
      ...(dirs ? { fileDirs: dirs } : {}),
    });
    return plan.options.find((o) => o.handler === 'file') ?? plan.declined.find((d) => d.handler === 'file');
  };

  it('accepts a readable file of the right size inside an allowed directory', async () => {
    expect(await verdict(join(root, 'allowed/sub/img.raw'), [join(root, 'allowed')])).toMatchObject({
      method: 'copy',
      cost: 15,
    });
  });
  it('refuses: no dirs, outside (including a sibling with a common prefix), symlink escape, missing, size, directory', async () => {
    const allowed = [join(root, 'allowed')];
    expect(await verdict(join(root, 'allowed/sub/img.raw'))).toMatchObject({
      reason: 'no file directories are allowed on this node',
    });
    expect(await verdict(join(root, 'allowed-not/img.raw'), allowed)).toMatchObject({
      reason: expect.stringContaining('is outside the allowed directories'),
    });
    expect(await verdict(join(root, 'allowed/escape.raw'), allowed)).toMatchObject({
      reason: expect.stringContaining('outside the allowed directories'),
    });
    expect(await verdict(join(root, 'allowed/escape.raw'), allowed)).toMatchObject({
      reason: expect.stringContaining('resolves to'),
    });
    expect(await verdict(join(root, 'allowed/missing.raw'), allowed)).toMatchObject({
      reason: expect.stringContaining('ENOENT'),
    });
    expect(await verdict(join(root, 'allowed/short.raw'), allowed)).toMatchObject({
      reason: expect.stringContaining('has 10 bytes, the image has 4096'),
    });
    expect(await verdict(join(root, 'allowed/sub'), allowed)).toMatchObject({
      reason: expect.stringContaining('not a regular file'),
    });
    expect(await verdict(join(root, 'allowed/sub/img.raw'), ['relative/dir'])).toMatchObject({
      reason: 'no file directories are allowed on this node',
    });
  });
  it('isInside is strict about prefixes', () => {
    expect(isInside('/a/b', '/a/b/c')).toBe(true);
    expect(isInside('/a/b', '/a/bc')).toBe(false);
    expect(isInside('/a/b', '/a/b')).toBe(false);
    expect(isInside('/a/b/', '/a/b/c')).toBe(true);
  });
});
