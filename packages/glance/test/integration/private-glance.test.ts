/**
 * The client and the resolver against a real, private glance-api (Debian's Zed, two file stores):
 * tests here tamper with stored bytes, copy between stores, and kill Glance mid-download, which must
 * not happen to the shared stack's Glance.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, symlink, writeFile, open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ChecksumMismatchError,
  GlanceAuthError,
  GlanceClient,
  GlanceConnectionError,
  GlanceHttpError,
  GlanceNotFoundError,
  IdentityHeaders,
  ImageResolver,
  FileHandler,
  GlanceDownloadHandler,
  HttpDownloadHandler,
  NoUsablePlanError,
  formatPlan,
  type GlanceImage,
} from '@ephemera/glance';
import { startPrivateGlance, type PrivateGlance } from '../support/private-glance.js';

const auth = new IdentityHeaders({ projectId: 'p-ephemera', userId: 'u-tests', roles: ['admin', 'member'] });

describe('GlanceClient against a private glance-api', () => {
  let g: PrivateGlance;
  let client: GlanceClient;
  let work: string;
  const created: string[] = [];

  beforeAll(async () => {
    g = await startPrivateGlance();
    client = new GlanceClient({ url: g.url, auth, retry: { attempts: 3, baseDelayMs: 50 } });
    work = await mkdtemp(join(tmpdir(), 'ephemera-glance-work-'));
  });

  afterAll(async () => {
    for (const id of created) await client.deleteImage(id).catch(() => undefined);
    await g?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  async function uploadRaw(data: Buffer, props: Record<string, unknown> = {}): Promise<GlanceImage> {
    const img = await client.createImage({
      name: `t-${Date.now()}`,
      disk_format: 'raw',
      container_format: 'bare',
      ...props,
    });
    created.push(img.id);
    return client.upload(img.id, Readable.from([data.subarray(0, 1000), data.subarray(1000)]));
  }

  it('creates, streams an upload, lists, sets properties and deletes', async () => {
    const data = randomBytes(3 << 20);
    const img = await uploadRaw(data, { ephemera_test: 'yes' });
    expect(img.status).toBe('active');
    expect(img.size).toBe(data.length);
    expect(img.os_hash_algo).toBe('sha512');
    expect(img.os_hash_value).toBe(createHash('sha512').update(data).digest('hex'));
    expect(img.ephemera_test).toBe('yes');

    const listed: string[] = [];
    for await (const i of client.listImages({ limit: 1, status: 'active' })) listed.push(i.id);
    expect(listed).toContain(img.id);

    let after = await client.setProperties(img.id, { ephemera_test: 'changed', ephemera_new: 'x' });
    expect(after.ephemera_test).toBe('changed');
    expect(after.ephemera_new).toBe('x');
    after = await client.removeProperties(img.id, ['ephemera_new', 'not_there']);
    expect(after.ephemera_new).toBeUndefined();

    await client.deleteImage(img.id);
    const err = await client.getImage(img.id).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GlanceNotFoundError);
    expect(err).toMatchObject({ status: 404, imageId: img.id, code: 'GLANCE_NOT_FOUND' });
  });

  it('downloads as a stream verified against os_hash_value', async () => {
    const data = randomBytes(5 << 20);
    const img = await uploadRaw(data);
    const dl = await client.download(img.id);
    expect(dl.expected).toMatchObject({ algorithm: 'sha512', source: 'os_hash_value' });
    const chunks: Buffer[] = [];
    for await (const c of dl.stream) chunks.push(c as Buffer);
    expect(Buffer.concat(chunks).equals(data)).toBe(true);
    await expect(dl.result).resolves.toMatchObject({ verified: true, bytes: data.length, algorithm: 'sha512' });

    const dest = join(work, 'ok.raw');
    const progress: number[] = [];
    const r = await client.downloadToFile(img.id, dest, { onProgress: (e) => progress.push(e.percent) });
    expect(progress.at(-1)).toBe(100);
    expect(progress.filter((p) => p === 100).length).toBe(1);
    expect(progress.every((p, i) => i === 0 || p > progress[i - 1]!)).toBe(true);
    expect(r.verified).toBe(true);
    expect((await readFile(dest)).equals(data)).toBe(true);
  });

  it('a download whose bytes do not match the checksum fails and leaves nothing', async () => {
    const data = randomBytes(2 << 20);
    const img = await uploadRaw(data);
    // Tamper with the stored bytes (same size) behind Glance's back.
    const stored = join(g.storeDirs.fast, img.id);
    const fh = await open(stored, 'r+');
    await fh.write(Buffer.from('tampered!'), 0, 9, 1 << 20);
    await fh.close();

    const destDir = await mkdtemp(join(work, 'bad-'));
    const err = await client.downloadToFile(img.id, join(destDir, 'image.raw')).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ChecksumMismatchError);
    expect(err).toMatchObject({
      imageId: img.id,
      algorithm: 'sha512',
      bytes: data.length,
      code: 'GLANCE_CHECKSUM_MISMATCH',
    });
    expect(await readdir(destDir)).toEqual([]);

    // A stream consumer sees the error at the very end, after all bytes.
    const dl = await client.download(img.id);
    let seen = 0;
    const streamErr = await (async () => {
      for await (const c of dl.stream) seen += (c as Buffer).length;
    })().catch((e: unknown) => e);
    expect(streamErr).toBeInstanceOf(ChecksumMismatchError);
    expect(seen).toBe(data.length);
    await expect(dl.result).rejects.toBeInstanceOf(ChecksumMismatchError);

    // Falls back to the MD5 checksum when told nothing better.
    const md5 = await client.download(img.id, { image: { ...img, os_hash_algo: null, os_hash_value: null } });
    expect(md5.expected).toMatchObject({ algorithm: 'md5', source: 'checksum' });
    md5.stream.resume();
    await expect(md5.result).rejects.toBeInstanceOf(ChecksumMismatchError);
  });

  it('4xx answers are typed and carry the status and image id', async () => {
    const data = randomBytes(4096);
    const img = await uploadRaw(data);
    // Uploading to an active image is a 409.
    const conflict = await client.upload(img.id, data).catch((e: unknown) => e);
    expect(conflict).toMatchObject({ status: 409, imageId: img.id, code: 'GLANCE_CONFLICT' });
    // A bad JSON patch is a 400, not retried.
    const bad = await client
      .updateImage(img.id, [{ op: 'replace', path: '/status', value: 'active' }])
      .catch((e: unknown) => e);
    expect(bad).toBeInstanceOf(GlanceHttpError);
    expect((bad as GlanceHttpError).status).toBeGreaterThanOrEqual(400);
    expect((bad as GlanceHttpError).status).toBeLessThan(500);
    // Without identity headers this Glance refuses the caller.
    const anon = new GlanceClient({ url: g.url });
    const denied = await anon.getImage(img.id).catch((e: unknown) => e);
    expect(denied).toBeInstanceOf(GlanceAuthError);
    expect(denied).toMatchObject({ status: 401, imageId: img.id });
  });

  it('reads locations (falls back from the newer locations API on Zed) and direct_url', async () => {
    const img = await uploadRaw(randomBytes(8192));
    const locs = await client.getLocations(img.id);
    expect(locs.source).toBe('image');
    expect(locs.locations).toEqual([{ url: `file://${join(g.storeDirs.fast, img.id)}`, metadata: { store: 'fast' } }]);
    expect(locs.directUrl).toBe(`file://${join(g.storeDirs.fast, img.id)}`);
    expect(await client.stores()).toEqual(
      expect.arrayContaining([expect.objectContaining({ id: 'fast' }), expect.objectContaining({ id: 'slow' })]),
    );
    expect(await client.importMethods()).toContain('copy-image');
  });

  it('copy-image into another store, polled to completion; the resolver then prefers the configured store', async () => {
    const data = randomBytes(1 << 20);
    const img = await uploadRaw(data);
    const polls: string[] = [];
    const progress: number[] = [];
    const copied = await client.copyImage(img.id, ['slow'], {
      pollIntervalMs: 200,
      timeoutMs: 60_000,
      onPoll: (i) => polls.push(`${i.stores}|${i.os_glance_importing_to_stores ?? ''}`),
      onProgress: (e) => progress.push(e.percent),
    });
    expect(progress[0]).toBe(0);
    expect(progress.at(-1)).toBe(100);
    expect(progress.every((p, i) => i === 0 || p > progress[i - 1]!)).toBe(true);
    expect(copied.stores?.split(',').sort()).toEqual(['fast', 'slow']);
    expect(polls.length).toBeGreaterThan(0);
    expect((await readFile(join(g.storeDirs.slow, img.id))).equals(data)).toBe(true);

    const resolver = new ImageResolver(client, [
      new FileHandler(),
      new GlanceDownloadHandler(),
      new HttpDownloadHandler(),
    ]);
    const base = { backend: 'qcow2' as const, fileDirs: [g.storeDirs.fast, g.storeDirs.slow] };
    const slowFirst = await resolver.resolve(img.id, { ...base, preferredStores: ['slow', 'fast'] });
    expect(slowFirst.chosen).toMatchObject({ handler: 'file', method: 'copy', store: 'slow', cost: 15 });
    expect(slowFirst.options.map((o) => o.store ?? o.handler)).toEqual(['slow', 'fast', 'glance-download']);
    const fastFirst = await resolver.resolve(img.id, { ...base, preferredStores: ['fast'] });
    expect(fastFirst.chosen.store).toBe('fast');

    // Copy-image into a store that does not exist: a typed 4xx, no retry.
    const err = await client.copyImage(img.id, ['nope']).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GlanceHttpError);
    expect((err as GlanceHttpError).status).toBeGreaterThanOrEqual(400);
    expect((err as GlanceHttpError).status).toBeLessThan(500);
    expect((err as GlanceHttpError).imageId).toBe(img.id);
    const tasks = await client.imageTasks(img.id);
    expect(tasks).toEqual([expect.objectContaining({ type: 'api_image_import', status: 'success' })]);
  });

  it('resolver: copies into the local store first when asked and no clone is possible', async () => {
    const img = await uploadRaw(randomBytes(1 << 20));
    const resolver = new ImageResolver(client, [new FileHandler(), new GlanceDownloadHandler()]);
    const target = { backend: 'lvm' as const, fileDirs: [g.storeDirs.slow], localStore: 'slow' };
    const before = await resolver.resolve(img.id, target);
    expect(before.chosen.handler).toBe('glance-download');
    expect(before.declined).toEqual(
      expect.arrayContaining([
        expect.objectContaining({
          handler: 'file',
          reason: expect.stringContaining('outside the allowed directories'),
        }),
      ]),
    );
    const plan = await resolver.resolve(img.id, target, {
      copyToLocalStore: true,
      copy: { pollIntervalMs: 200, timeoutMs: 60_000 },
    });
    expect(plan.copiedToStore).toBe('slow');
    expect(plan.chosen).toMatchObject({ handler: 'file', store: 'slow', method: 'copy' });
    expect(formatPlan(plan)).toContain('copied into store slow first');
  });

  it('resolver: with no usable location at all, copy-to-store copies first and plans again once', async () => {
    // A node that reads only file:// copies under the slow store and has no Glance download handler.
    const resolver = new ImageResolver(client, [new FileHandler()]);
    const target = { backend: 'lvm' as const, fileDirs: [g.storeDirs.slow], localStore: 'slow' };
    const copy = { pollIntervalMs: 200, timeoutMs: 60_000 };
    const img = await uploadRaw(randomBytes(1 << 20));
    const unusable = await resolver.resolve(img.id, target).catch((e: unknown) => e);
    expect(unusable).toBeInstanceOf(NoUsablePlanError);
    expect((await client.getImage(img.id)).stores).toBe('fast');

    const plan = await resolver.resolve(img.id, target, { copyToLocalStore: true, copy });
    expect(plan.copiedToStore).toBe('slow');
    expect(plan.chosen).toMatchObject({
      handler: 'file',
      store: 'slow',
      method: 'copy',
      location: `file://${join(g.storeDirs.slow, img.id)}`,
    });
    expect((await client.getImage(img.id)).stores?.split(',').sort()).toEqual(['fast', 'slow']);

    // Still unusable after the copy (no file directory at all): the same typed error, after one copy.
    const other = await uploadRaw(randomBytes(1 << 20));
    const err = await resolver
      .resolve(other.id, { ...target, fileDirs: [] }, { copyToLocalStore: true, copy })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NoUsablePlanError);
    expect((err as NoUsablePlanError).declined).toContainEqual(
      expect.objectContaining({
        handler: 'file',
        location: `file://${join(g.storeDirs.slow, other.id)}`,
        reason: 'no file directories are allowed on this node',
      }),
    );
    expect((await client.getImage(other.id)).stores?.split(',').sort()).toEqual(['fast', 'slow']);
    // Exactly one copy-image (the task may still say `processing` once the store is listed).
    expect(await client.imageTasks(other.id)).toEqual([
      expect.objectContaining({
        type: 'api_image_import',
        input: expect.objectContaining({ import_req: expect.objectContaining({ method: { name: 'copy-image' } }) }),
      }),
    ]);
  });

  it('a file:// location outside the allowed directories (or escaping by symlink) is refused', async () => {
    const img = await uploadRaw(randomBytes(4096));
    const stored = join(g.storeDirs.fast, img.id);
    const elsewhere = await mkdtemp(join(work, 'allowed-'));
    const resolver = new ImageResolver(client, [new FileHandler(), new GlanceDownloadHandler()]);
    const outside = await resolver.resolve(img.id, { backend: 'qcow2', fileDirs: [elsewhere] });
    expect(outside.chosen.handler).toBe('glance-download');
    expect(outside.declined).toContainEqual({
      handler: 'file',
      location: `file://${stored}`,
      source: 'locations',
      reason: `${stored} is outside the allowed directories (${elsewhere})`,
    });
    // Glance's own store file replaced by a symlink leading out of the allowed directory.
    const outsideCopy = join(elsewhere, 'copy.raw');
    await writeFile(outsideCopy, await readFile(stored));
    await rm(stored);
    await symlink(outsideCopy, stored);
    const escaped = await resolver.resolve(img.id, { backend: 'qcow2', fileDirs: [g.storeDirs.fast] });
    expect(escaped.chosen.handler).toBe('glance-download');
    expect(escaped.declined.filter((d) => d.handler === 'file').map((d) => d.reason)).toEqual([
      `${stored} resolves to ${outsideCopy}, outside the allowed directories`,
    ]);
    // Glance itself refuses file:// locations through the API (restricted scheme): a typed 400.
    const refused = await client
      .addLocation(img.id, `file://${outsideCopy}`, { store: 'fast' })
      .catch((e: unknown) => e);
    expect(refused).toMatchObject({ status: 400, imageId: img.id });
  });
});

describe('Glance stopped mid-download', () => {
  it('gives a typed connection error carrying the image id', async () => {
    const g = await startPrivateGlance();
    try {
      const client = new GlanceClient({ url: g.url, auth, retry: { attempts: 2, baseDelayMs: 50 } });
      const data = randomBytes(32 << 20);
      const img = await client.createImage({ name: 'big', disk_format: 'raw', container_format: 'bare' });
      await client.upload(img.id, data);
      const dl = await client.download(img.id);
      let got = 0;
      const err = await (async () => {
        for await (const c of dl.stream) {
          if (got === 0) await g.kill();
          got += (c as Buffer).length;
        }
      })().catch((e: unknown) => e);
      expect(got).toBeGreaterThan(0);
      expect(got).toBeLessThan(data.length);
      expect(err).toBeInstanceOf(GlanceConnectionError);
      expect(err).toMatchObject({ imageId: img.id, code: 'GLANCE_CONNECTION' });
      await expect(dl.result).rejects.toBeInstanceOf(GlanceConnectionError);
      // With Glance gone, a new call fails (after retries) with a typed connection error too.
      const again = await client.getImage(img.id).catch((e: unknown) => e);
      expect(again).toBeInstanceOf(GlanceConnectionError);
      expect((again as Error).message).toContain('ECONNREFUSED');
    } finally {
      await g.stop();
    }
  });
});
