// The driver's Glance client honours `glance.timeoutMs` as the download idle timeout too
// (reliability known failure 7: it stayed at the client's 60 s default). A local HTTP server
// plays a Glance whose image download stalls after its first bytes.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GlanceTimeoutError } from '@ephemera/glance';
import { glanceClient, glanceClientOptions, loadConfig } from '@ephemera/driver';

const IMAGE = '0b6c4d2e-4f51-4a7e-9c8e-1f2a3b4c5d6e';
let server: Server;
let url: string;

beforeAll(async () => {
  server = createServer((req, res) => {
    if (req.url === `/v2/images/${IMAGE}`) {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify({
          id: IMAGE,
          status: 'active',
          size: 1 << 20,
          disk_format: 'raw',
          container_format: 'bare',
          checksum: null,
          os_hash_algo: null,
          os_hash_value: null,
        }),
      );
      return;
    }
    if (req.url === `/v2/images/${IMAGE}/file`) {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(1 << 20) });
      res.write(Buffer.alloc(4096)); // then nothing: the download stalls
      return;
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});

describe('driver Glance client', () => {
  it('uses glance.timeoutMs as the download idle timeout', () => {
    const { config } = loadConfig({
      env: {},
      overrides: { glance: { url: 'http://127.0.0.1:9292', timeoutMs: 1_234 } },
    });
    const o = glanceClientOptions(config);
    expect(o.timeoutMs).toBe(1_234);
    expect(o.idleTimeoutMs).toBe(1_234);
    expect(o.retry).toEqual({ attempts: config.glance.retries + 1 });
  });

  it('fails a stalled download after glance.timeoutMs, not the client default (60 s)', async () => {
    const { config } = loadConfig({ env: {}, overrides: { glance: { url, timeoutMs: 400, retries: 0 } } });
    const started = Date.now();
    const dl = await glanceClient(config).download(IMAGE, { verify: false });
    const err = await new Promise<unknown>((resolve) => {
      dl.stream.on('error', resolve);
      dl.stream.on('end', () => resolve(undefined));
      dl.stream.resume();
    });
    expect(err).toBeInstanceOf(GlanceTimeoutError);
    expect((err as GlanceTimeoutError).timeoutMs).toBe(400);
    expect(Date.now() - started).toBeLessThan(10_000);
    await dl.result.catch(() => undefined);
  });
});
