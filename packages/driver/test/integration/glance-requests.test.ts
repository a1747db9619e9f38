// What a spawn asks Glance: the image record once (the resolver's plan carries it), and when no
// plan can be made of an image that is not active, the spawn still says so (IMAGE_UNUSABLE).
// Real Glance behind a counting pass-through proxy, real Ceph and libvirtd.
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, request, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GlanceClient } from '@ephemera/glance';
import { loadStack } from '@ephemera/testkit';
import { createDriver, loadConfig, type Driver } from '@ephemera/driver';

let dir: string;
let driver: Driver;
let glance: GlanceClient;
let proxy: Server;
const seen: string[] = [];
const images: string[] = [];

beforeAll(async () => {
  const stack = loadStack();
  const upstream = new URL(stack.glance.url);
  proxy = createServer((req, res) => {
    seen.push(`${req.method} ${req.url}`);
    const out = request(
      { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers },
      (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      },
    );
    out.on('error', () => res.destroy());
    req.pipe(out);
  });
  await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
  dir = await mkdtemp(join(tmpdir(), 'eph-glance-requests-'));
  const { config } = loadConfig({
    env: {},
    stack,
    overrides: {
      stateDir: join(dir, 'state'),
      instancesPath: join(dir, 'instances'),
      glance: { url: `http://127.0.0.1:${(proxy.address() as { port: number }).port}` },
      log: { level: 'warn' },
    },
  });
  driver = await createDriver({ config, reconcile: false });
  glance = new GlanceClient({ url: stack.glance.url });
});

afterAll(async () => {
  await driver?.close();
  for (const id of images) await glance.deleteImage(id).catch(() => undefined);
  proxy?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const FLAVOR = { name: 'glance-requests', vcpus: 1, memoryMiB: 64, rootGiB: 0 };
const recordGets = (id: string): number => seen.filter((s) => s === `GET /v2/images/${id}`).length;

describe('Glance requests of a spawn', () => {
  it('a cloneable image: the record is read once', async () => {
    const img = await glance.createImage({ name: 'glance-requests', disk_format: 'raw', container_format: 'bare' });
    images.push(img.id);
    await glance.upload(img.id, Buffer.alloc(1 << 20));
    seen.length = 0;
    const uuid = randomUUID();
    const r = await driver.spawn({ instance: uuid, image: img.id, flavor: FLAVOR });
    try {
      expect(r.rootDisk.method).toBe('cloned');
      expect(recordGets(img.id), seen.join('\n')).toBe(1);
    } finally {
      await driver.destroy(uuid);
    }
  });

  it('an image that is not active: IMAGE_UNUSABLE naming its status, nothing created', async () => {
    const img = await glance.createImage({
      name: 'glance-requests-queued',
      disk_format: 'raw',
      container_format: 'bare',
    });
    images.push(img.id);
    const uuid = randomUUID();
    await expect(driver.spawn({ instance: uuid, image: img.id, flavor: FLAVOR })).rejects.toMatchObject({
      code: 'IMAGE_UNUSABLE',
      message: expect.stringMatching(/is queued, not active/),
    });
    await expect(driver.destroy(uuid)).rejects.toMatchObject({ code: 'INSTANCE_NOT_FOUND' });
  });
});
