/**
 * The client and the resolver against the dev stack's real Glance (keystone-less, rbd store on the
 * stack's Ceph). The RBD probe is real: `rbd info` as client.ephemera. Every image is deleted.
 */
import { createHash, randomUUID } from 'node:crypto';
import { readFile, rm, mkdtemp } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { Container } from 'inversify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  GLANCE_TYPES,
  type GlanceClient,
  GlanceNotFoundError,
  type ImageResolver,
  RbdCliProbe,
  formatPlan,
  glanceModule,
  type GlanceImage,
  type ImageHandler,
  type ResolveTarget,
} from '@ephemera/glance';
import { cephCli, guestImage, loadStack, type StackInfo } from '@ephemera/testkit';

const run = promisify(execFile);

describe('against the stack Glance (rbd store)', () => {
  let stack: StackInfo;
  let client: GlanceClient;
  let resolver: ImageResolver;
  let probe: RbdCliProbe;
  let target: ResolveTarget;
  let work: string;
  const created: string[] = [];

  beforeAll(async () => {
    stack = loadStack();
    const eph = stack.ceph.users.ephemera;
    probe = new RbdCliProbe([{ fsid: stack.ceph.fsid, confPath: eph.confPath, id: eph.id }]);
    const container = new Container();
    container.load(
      glanceModule({ client: { url: stack.glance.url, retry: { attempts: 3, baseDelayMs: 100 } }, rbdProbe: probe }),
    );
    client = container.get<GlanceClient>(GLANCE_TYPES.GlanceClient);
    resolver = container.get<ImageResolver>(GLANCE_TYPES.ImageResolver);
    target = { backend: 'rbd', ceph: { fsid: stack.ceph.fsid, pools: [stack.ceph.pools.images] } };
    work = await mkdtemp(join(tmpdir(), 'ephemera-glance-stack-'));
  });

  afterAll(async () => {
    for (const id of created) {
      // Extra locations first (a second URL of the same RBD image would fail the delete).
      const img = await client.getImage(id).catch(() => undefined);
      for (const loc of img?.locations?.slice(1) ?? []) await client.removeLocation(id, loc.url).catch(() => undefined);
      await client.deleteImage(id).catch(() => undefined);
    }
    if (work) await rm(work, { recursive: true, force: true });
  });

  async function upload(path: string, disk_format: 'raw' | 'qcow2', name: string): Promise<GlanceImage> {
    const img = await client.createImage({ name, disk_format, container_format: 'bare', ephemera_test: 'glance' });
    created.push(img.id);
    const data = await readFile(path);
    return client.upload(img.id, data);
  }

  it('uploads the guest image and resolves it to an RBD clone (and the clone really works)', async () => {
    const path = await guestImage();
    const img = await upload(path, 'raw', 'glance-test-guest');
    expect(img.status).toBe('active');
    const url = `rbd://${stack.ceph.fsid}/${stack.ceph.pools.images}/${img.id}/snap`;
    expect(img.direct_url).toBe(url);
    expect(img.locations).toEqual([{ url, metadata: {} }]);

    expect(resolver.handlers.sort()).toEqual(['file', 'glance-download', 'http-download', 'rbd-clone', 'rbd-copy']);
    const plan = await resolver.resolve(img.id, target);
    expect(plan.chosen).toMatchObject({
      handler: 'rbd-clone',
      method: 'clone',
      cost: 1,
      location: url,
      source: 'locations',
    });
    expect(plan.options.map((o) => `${o.handler}:${o.method}:${o.cost}`)).toEqual([
      'rbd-clone:clone:1',
      'rbd-copy:copy:20',
      'glance-download:download:40',
    ]);
    const text = formatPlan(plan);
    expect(text).toContain(`plan: clone by rbd-clone from ${url} (cost 1)`);

    // The plan is executable: clone the snapshot as the restricted user, then remove the clone.
    const clone = `glance-test-${randomUUID().slice(0, 8)}`;
    await cephCli('ephemera', [
      'rbd',
      'clone',
      `${stack.ceph.pools.images}/${img.id}@snap`,
      `${stack.ceph.pools.vms}/${clone}`,
    ]);
    try {
      const info = JSON.parse(
        await cephCli('ephemera', ['rbd', 'info', '--format', 'json', `${stack.ceph.pools.vms}/${clone}`]),
      ) as {
        parent?: { pool: string; image: string; snapshot: string };
      };
      expect(info.parent).toMatchObject({ pool: stack.ceph.pools.images, image: img.id, snapshot: 'snap' });
    } finally {
      await cephCli('ephemera', ['rbd', 'rm', `${stack.ceph.pools.vms}/${clone}`]);
    }

    // And a verified download of the same image gives the guest's bytes.
    const dl = await client.download(img.id);
    const h = createHash('sha512');
    for await (const c of dl.stream) h.update(c as Buffer);
    expect(h.digest('hex')).toBe(
      createHash('sha512')
        .update(await readFile(path))
        .digest('hex'),
    );
    await expect(dl.result).resolves.toMatchObject({ verified: true, algorithm: 'sha512' });
  });

  it('a qcow2 image is declined for cloning and resolves to a converted import', async () => {
    const raw = await guestImage({ marker: 'EPHEMERA-GUEST glance-qcow2' });
    const qcow2 = join(work, 'guest.qcow2');
    await run('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, qcow2], { timeout: 60_000 });
    const img = await upload(qcow2, 'qcow2', 'glance-test-qcow2');
    const plan = await resolver.resolve(img.id, target);
    expect(plan.chosen).toMatchObject({
      handler: 'rbd-copy',
      method: 'convert-import',
      cost: 30,
      detail: expect.stringContaining('qcow2 -> raw'),
    });
    expect(plan.options.map((o) => `${o.handler}:${o.method}`)).toEqual([
      'rbd-copy:convert-import',
      'glance-download:convert-import',
    ]);
    expect(plan.declined).toContainEqual(
      expect.objectContaining({ handler: 'rbd-clone', reason: 'disk_format qcow2 is not raw; clone needs raw' }),
    );
    // A qcow2-backend node uses it as it is.
    const q = await resolver.resolve(img.id, { backend: 'qcow2' });
    expect(q.chosen).toMatchObject({ handler: 'glance-download', method: 'download' });
    expect(q.declined).toContainEqual(
      expect.objectContaining({ handler: 'rbd-clone', reason: 'target backend qcow2 cannot use RBD clones' }),
    );
  });

  it('a second location with another fsid (JSON patch) is declined with the reason', async () => {
    const path = await guestImage();
    const img = await upload(path, 'raw', 'glance-test-2loc');
    const other = randomUUID();
    const foreign = `rbd://${other}/${stack.ceph.pools.images}/${img.id}/snap`;
    const patched = await client.addLocation(img.id, foreign, {});
    expect(patched.locations?.map((l) => l.url)).toEqual([img.direct_url, foreign]);

    const plan = await resolver.resolve(img.id, target);
    expect(plan.chosen).toMatchObject({ handler: 'rbd-clone', location: img.direct_url });
    expect(plan.declined).toEqual(
      expect.arrayContaining([
        {
          handler: 'rbd-clone',
          location: foreign,
          source: 'locations',
          reason: `fsid ${other} is not the local cluster ${stack.ceph.fsid}`,
        },
        { handler: 'rbd-copy', location: foreign, source: 'locations', reason: `no access to Ceph cluster ${other}` },
      ]),
    );
    expect(formatPlan(plan)).toContain(
      `declined: rbd-clone ${foreign}: fsid ${other} is not the local cluster ${stack.ceph.fsid}`,
    );

    // Said to be reachable, the foreign cluster is still refused by the real probe.
    const withRemote = await resolver.resolve(img.id, {
      ...target,
      remoteClusters: [{ fsid: other, pools: [stack.ceph.pools.images] }],
    });
    expect(withRemote.declined).toContainEqual({
      handler: 'rbd-copy',
      location: foreign,
      source: 'locations',
      reason: `snapshot ${stack.ceph.pools.images}/${img.id}@snap is not readable: no configuration for Ceph cluster ${other}`,
    });

    await client.removeLocation(img.id, foreign);
    expect((await client.getLocations(img.id)).locations.map((l) => l.url)).toEqual([img.direct_url]);
  });

  it('an http location (served from loopback) is ranked after the clone', async () => {
    const path = await guestImage();
    const data = await readFile(path);
    const server: Server = createServer((req, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(data.length) });
      res.end(req.method === 'HEAD' ? undefined : data);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    try {
      const port = (server.address() as { port: number }).port;
      const img = await upload(path, 'raw', 'glance-test-http');
      const httpUrl = `http://127.0.0.1:${port}/guest.raw`;
      await client.addLocation(img.id, httpUrl, {});
      const plan = await resolver.resolve(img.id, target);
      expect(plan.options.map((o) => `${o.handler}:${o.cost}`)).toEqual([
        'rbd-clone:1',
        'rbd-copy:20',
        'http-download:32',
        'glance-download:40',
      ]);
      const noHttp = await resolver.resolve(img.id, { ...target, allowHttp: false });
      expect(noHttp.declined).toContainEqual(
        expect.objectContaining({ handler: 'http-download', reason: 'plain http is not allowed on this node' }),
      );
      await client.removeLocation(img.id, httpUrl);
    } finally {
      await new Promise<void>((r) => server.close(() => r()));
    }
  });

  it('the RBD probe is real: a missing snapshot or pool is not readable', async () => {
    const ok = await probe.snapshotReadable({
      fsid: stack.ceph.fsid,
      pool: stack.ceph.pools.images,
      image: 'no-such-image',
      snapshot: 'snap',
    });
    expect(ok).toEqual(expect.stringMatching(/No such file|not found|error opening/i));
    const denied = await probe.snapshotReadable({
      fsid: stack.ceph.fsid,
      pool: 'no-such-pool',
      image: 'x',
      snapshot: 'snap',
    });
    expect(typeof denied).toBe('string');
  });

  it('errors are typed: a missing image is GlanceNotFoundError with status and id', async () => {
    const id = randomUUID();
    const err = await client.getImage(id).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GlanceNotFoundError);
    expect(err).toMatchObject({ status: 404, imageId: id });
    await expect(resolver.resolve(id, target)).rejects.toBeInstanceOf(GlanceNotFoundError);
  });

  it('plugs in a backend handler through inversify', async () => {
    const path = await guestImage();
    const img = await upload(path, 'raw', 'glance-test-plugin');
    const container = new Container();
    container.load(glanceModule({ client, rbdProbe: probe, handlers: ['glance-download'] }));
    const special: ImageHandler = {
      name: 'rbd-special',
      schemes: ['rbd'],
      assess: async (loc) =>
        loc.parsed.kind === 'rbd' ? { accept: true, cost: 0.5, method: 'clone' } : { accept: false, reason: 'no' },
    };
    container.bind<ImageHandler>(GLANCE_TYPES.ImageHandler).toConstantValue(special);
    const r = container.get<ImageResolver>(GLANCE_TYPES.ImageResolver);
    expect(r.handlers.sort()).toEqual(['glance-download', 'rbd-special']);
    const plan = await r.resolve(img.id, target);
    expect(plan.chosen.handler).toBe('rbd-special');
  });
});
