/**
 * Error paths of the client (retries, timeouts, broken bodies, auth) against a throwaway local
 * HTTP server that answers like Glance's image endpoints and misbehaves on purpose. The happy
 * paths run against real Glance in the integration tests.
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import {
  backoffDelay,
  ChecksumMismatchError,
  DEFAULT_RETRY,
  GlanceAbortedError,
  GlanceAuthError,
  GlanceClient,
  GlanceConnectionError,
  GlanceError,
  GlanceHttpError,
  GlanceNotFoundError,
  GlanceTimeoutError,
  KeystoneTokenProvider,
  SizeMismatchError,
  StaticToken,
  type GlanceImage,
  type TokenProvider,
} from '@ephemera/glance';

type Handler = (req: IncomingMessage, res: ServerResponse, body: Buffer) => void;
const servers: Server[] = [];

async function serve(
  handler: Handler,
): Promise<{ url: string; hits: { method: string; url: string; headers: IncomingMessage['headers'] }[] }> {
  const hits: { method: string; url: string; headers: IncomingMessage['headers'] }[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      hits.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
      handler(req, res, Buffer.concat(chunks));
    });
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, hits };
}

afterEach(async () => {
  for (const s of servers.splice(0)) {
    s.closeAllConnections();
    await new Promise<void>((r) => s.close(() => r()));
  }
});

function image(id: string, data: Buffer, over: Partial<GlanceImage> = {}): GlanceImage {
  return {
    id,
    name: 'x',
    status: 'active',
    disk_format: 'raw',
    container_format: 'bare',
    visibility: 'shared',
    size: data.length,
    virtual_size: data.length,
    checksum: createHash('md5').update(data).digest('hex'),
    os_hash_algo: 'sha512',
    os_hash_value: createHash('sha512').update(data).digest('hex'),
    protected: false,
    min_disk: 0,
    min_ram: 0,
    owner: null,
    tags: [],
    created_at: '',
    updated_at: '',
    self: `/v2/images/${id}`,
    file: `/v2/images/${id}/file`,
    schema: '/v2/schemas/image',
    ...over,
  };
}

const fast = { attempts: 3, baseDelayMs: 5, maxDelayMs: 20 };

describe('retries', () => {
  it('retries a GET on 503 and succeeds', async () => {
    const id = randomUUID();
    let n = 0;
    const s = await serve((_q, res) => {
      n++;
      if (n < 3) res.writeHead(503).end('busy');
      else res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(image(id, Buffer.alloc(1))));
    });
    const c = new GlanceClient({ url: s.url, retry: fast });
    expect((await c.getImage(id)).id).toBe(id);
    expect(s.hits.length).toBe(3);
  });

  it('gives up after the bounded attempts with the typed 5xx error', async () => {
    const id = randomUUID();
    const s = await serve((_q, res) => res.writeHead(500).end('{"message": "boom"}'));
    const c = new GlanceClient({ url: s.url, retry: fast });
    const err = await c.getImage(id).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GlanceHttpError);
    expect(err).toMatchObject({ status: 500, imageId: id, method: 'GET' });
    expect(s.hits.length).toBe(3);
  });

  it('never retries a 4xx', async () => {
    const id = randomUUID();
    const s = await serve((_q, res) => res.writeHead(404).end('nope'));
    const c = new GlanceClient({ url: s.url, retry: fast });
    await expect(c.getImage(id)).rejects.toBeInstanceOf(GlanceNotFoundError);
    expect(s.hits.length).toBe(1);
  });

  it('never retries a PATCH after a 5xx (not idempotent)', async () => {
    const s = await serve((_q, res) => res.writeHead(502).end());
    const c = new GlanceClient({ url: s.url, retry: fast });
    await expect(c.updateImage(randomUUID(), [{ op: 'add', path: '/locations/-', value: {} }])).rejects.toMatchObject({
      status: 502,
    });
    expect(s.hits.length).toBe(1);
  });

  it('retries a create safely: the client picks the id and a 409 on a retry means it exists', async () => {
    let created: GlanceImage | undefined;
    const s = await serve((req, res, body) => {
      if (req.method === 'POST') {
        const want = JSON.parse(body.toString()) as { id: string };
        if (!created) {
          created = image(want.id, Buffer.alloc(0), { status: 'queued' });
          res.writeHead(503).end('lost answer');
        } else res.writeHead(409).end('exists');
      } else res.writeHead(200).end(JSON.stringify(created));
    });
    const c = new GlanceClient({ url: s.url, retry: fast });
    const img = await c.createImage({ name: 'n' });
    expect(img.id).toBe(created!.id);
    expect(s.hits.map((h) => h.method)).toEqual(['POST', 'POST', 'GET']);
  });

  it('a retried buffer upload whose first attempt landed (409 on the retry) counts as done', async () => {
    const id = randomUUID();
    const data = randomBytes(1000);
    let puts = 0;
    const s = await serve((req, res) => {
      if (req.method === 'PUT') {
        puts++;
        res.writeHead(puts === 1 ? 503 : 409).end();
      } else res.writeHead(200).end(JSON.stringify(image(id, data)));
    });
    const img = await new GlanceClient({ url: s.url, retry: fast }).upload(id, data);
    expect(img.status).toBe('active');
    expect(s.hits.map((h) => h.method)).toEqual(['PUT', 'PUT', 'GET']);
    // A stream upload is never resent.
    const s2 = await serve((_q, res) => res.writeHead(503).end());
    await expect(
      new GlanceClient({ url: s2.url, retry: fast }).upload(
        id,
        (async function* () {
          yield data;
        })(),
      ),
    ).rejects.toMatchObject({ status: 503 });
    expect(s2.hits.length).toBe(1);
  });

  it('a connection refused is a typed GlanceConnectionError after retries', async () => {
    const s = await serve(() => undefined);
    const url = s.url;
    await new Promise<void>((r) => servers.pop()!.close(() => r()));
    const c = new GlanceClient({ url, retry: fast });
    const id = randomUUID();
    const err = await c.getImage(id).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GlanceConnectionError);
    expect(err).toMatchObject({ imageId: id, code: 'GLANCE_CONNECTION' });
    expect((err as Error).message).toContain('ECONNREFUSED');
  });

  it('connection errors name the endpoint and the cause (refused, DNS), never just "fetch failed"', async () => {
    const s = await serve(() => undefined);
    const url = s.url;
    await new Promise<void>((r) => servers.pop()!.close(() => r()));
    const port = new URL(url).port;
    const refused = await new GlanceClient({ url, retry: fast }).getImage(randomUUID()).catch((e: unknown) => e);
    expect(refused).toMatchObject({ code: 'GLANCE_CONNECTION' });
    expect((refused as Error).message).toContain(`Glance ${url} `);
    expect((refused as Error).message).toContain(`connect ECONNREFUSED 127.0.0.1:${port}`);
    expect((refused as Error).message).not.toContain('fetch failed');
    const dns = await new GlanceClient({ url: 'http://glance.invalid:9292', retry: { attempts: 1 } })
      .getImage(randomUUID())
      .catch((e: unknown) => e);
    expect(dns).toMatchObject({ code: 'GLANCE_CONNECTION' });
    expect((dns as Error).message).toContain('http://glance.invalid:9292');
    expect((dns as Error).message).toMatch(/getaddrinfo (ENOTFOUND|EAI_AGAIN) glance\.invalid/);
  });

  it('a request timeout names the endpoint', async () => {
    const s = await serve(() => undefined);
    const err = await new GlanceClient({ url: s.url, timeoutMs: 150, retry: { attempts: 1 } })
      .listImages()
      .next()
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'GLANCE_TIMEOUT' });
    expect((err as Error).message).toContain(`Glance ${s.url} `);
    expect((err as Error).message).toContain('no answer within 150 ms');
  });

  it('a silent server times out (typed), and the timeout is retried', async () => {
    const s = await serve(() => undefined);
    const c = new GlanceClient({ url: s.url, timeoutMs: 150, retry: { attempts: 2, baseDelayMs: 5 } });
    const t0 = Date.now();
    const err = await c.getImage(randomUUID()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GlanceTimeoutError);
    expect((err as GlanceTimeoutError).timeoutMs).toBe(150);
    expect(s.hits.length).toBe(2);
    expect(Date.now() - t0).toBeLessThan(5_000);
  });

  it('backoff grows exponentially with jitter and stays bounded', () => {
    const p = { attempts: 5, baseDelayMs: 100, maxDelayMs: 1_000 };
    expect(backoffDelay(p, 1, () => 0)).toBe(50);
    expect(backoffDelay(p, 1, () => 1)).toBe(100);
    expect(backoffDelay(p, 3, () => 1)).toBe(400);
    expect(backoffDelay(p, 10, () => 1)).toBe(1_000);
    expect(backoffDelay(p, 10, () => 0)).toBe(500);
    expect(DEFAULT_RETRY.attempts).toBeGreaterThan(1);
  });

  it('rejects a non-UUID image id before sending anything (no path tricks)', async () => {
    const s = await serve((_q, res) => res.writeHead(200).end('{}'));
    const c = new GlanceClient({ url: s.url });
    const err = await c.getImage('../../v2/images').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GlanceError);
    expect((err as GlanceError).code).toBe('GLANCE_BAD_IMAGE_ID');
    expect(s.hits.length).toBe(0);
  });
});

describe('downloads that go wrong', () => {
  const data = randomBytes(256 << 10);

  async function glanceLike(
    file: (res: ServerResponse) => void,
    over: Partial<GlanceImage> = {},
  ): Promise<{ c: GlanceClient; id: string }> {
    const id = randomUUID();
    const s = await serve((req, res) => {
      if (req.url?.endsWith('/file')) file(res);
      else res.writeHead(200).end(JSON.stringify(image(id, data, over)));
    });
    return { c: new GlanceClient({ url: s.url, retry: fast, idleTimeoutMs: 300 }), id };
  }

  it('dies mid-body: GlanceConnectionError with the image id', async () => {
    const { c, id } = await glanceLike((res) => {
      res.writeHead(200, { 'content-length': String(data.length) });
      res.write(data.subarray(0, 1000), () => setTimeout(() => res.socket?.destroy(), 20));
    });
    const dl = await c.download(id);
    const err = await (async () => {
      for await (const _ of dl.stream) void _;
    })().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GlanceConnectionError);
    expect(err).toMatchObject({ imageId: id });
    await expect(dl.result).rejects.toBeInstanceOf(GlanceConnectionError);
  });

  it('stalls mid-body: GlanceTimeoutError after the idle timeout', async () => {
    const { c, id } = await glanceLike((res) => {
      res.writeHead(200, { 'content-length': String(data.length) });
      res.write(data.subarray(0, 1000));
    });
    const dl = await c.download(id);
    const err = await (async () => {
      for await (const _ of dl.stream) void _;
    })().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GlanceTimeoutError);
    expect(err).toMatchObject({ imageId: id, timeoutMs: 300 });
  });

  it('reports monotonic progress, 100 only after verification', async () => {
    const { c, id } = await glanceLike((res) => {
      res.writeHead(200, { 'content-length': String(data.length) });
      let off = 0;
      const step = (): void => {
        if (off >= data.length) return void res.end();
        res.write(data.subarray(off, off + 16384), () => setImmediate(step));
        off += 16384;
      };
      step();
    });
    const seen: number[] = [];
    const dl = await c.download(id, { onProgress: (e) => seen.push(e.percent) });
    dl.stream.resume();
    await dl.result;
    expect(seen.length).toBeGreaterThan(2);
    expect(seen.at(-1)).toBe(100);
    expect(seen.every((p, i) => i === 0 || p > seen[i - 1]!)).toBe(true);
    expect(seen.slice(0, -1).every((p) => p < 100)).toBe(true);
    // A failed verification never reports 100.
    const bad = await glanceLike((res) => res.writeHead(200).end(Buffer.alloc(data.length)));
    const badSeen: number[] = [];
    const dl2 = await bad.c.download(bad.id, { onProgress: (e) => badSeen.push(e.percent) });
    dl2.stream.resume();
    await expect(dl2.result).rejects.toBeInstanceOf(ChecksumMismatchError);
    expect(badSeen).not.toContain(100);
  });

  it('fewer bytes than the recorded size: SizeMismatchError', async () => {
    const { c, id } = await glanceLike((res) => res.writeHead(200).end(data.subarray(0, 1000)));
    const dl = await c.download(id);
    dl.stream.resume();
    await expect(dl.result).rejects.toBeInstanceOf(SizeMismatchError);
  });

  it('other bytes: ChecksumMismatchError at the end; md5 fallback when the algorithm is unknown', async () => {
    const other = Buffer.from(data);
    other[77] ^= 0xff;
    const { c, id } = await glanceLike((res) => res.writeHead(200).end(other), { os_hash_algo: 'made_up_hash' });
    const dl = await c.download(id);
    expect(dl.expected).toMatchObject({ algorithm: 'md5', source: 'checksum' });
    dl.stream.resume();
    await expect(dl.result).rejects.toBeInstanceOf(ChecksumMismatchError);
    const unverified = await c.download(id, { verify: false });
    unverified.stream.resume();
    await expect(unverified.result).resolves.toMatchObject({ verified: false, bytes: data.length });
  });

  it('the caller aborting mid-download: GlanceAbortedError', async () => {
    const { c, id } = await glanceLike((res) => {
      res.writeHead(200, { 'content-length': String(data.length) });
      res.write(data.subarray(0, 1000));
    });
    const ac = new AbortController();
    const dl = await c.download(id, { signal: ac.signal });
    const err = await (async () => {
      for await (const _ of dl.stream) {
        void _;
        ac.abort();
      }
    })().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GlanceAbortedError);
  });

  it('a stream destroyed before reading releases the connection and rejects result', async () => {
    let closed = false;
    const { c, id } = await glanceLike((res) => {
      res.writeHead(200, { 'content-length': String(data.length) });
      res.write(data.subarray(0, 1000));
      res.on('close', () => {
        closed = true;
      });
    });
    const dl = await c.download(id);
    dl.stream.destroy();
    await expect(dl.result).rejects.toBeInstanceOf(GlanceAbortedError);
    for (let i = 0; i < 50 && !closed; i++) await new Promise((r) => setTimeout(r, 20));
    expect(closed).toBe(true);
  });

  it('non-active images are refused before any transfer', async () => {
    const { c, id } = await glanceLike((res) => res.writeHead(500).end(), { status: 'queued' });
    await expect(c.download(id)).rejects.toMatchObject({ code: 'GLANCE_IMAGE_STATE', imageId: id });
  });
});

describe('locations API detection', () => {
  it('uses GET /v2/images/ID/locations when the server has it', async () => {
    const id = randomUUID();
    const s = await serve((req, res) => {
      if (req.url?.endsWith('/locations'))
        res.writeHead(200).end(JSON.stringify([{ url: 'rbd://x', metadata: { store: 'ceph' } }]));
      else res.writeHead(200).end(JSON.stringify(image(id, Buffer.alloc(1), { direct_url: 'rbd://x' })));
    });
    const locs = await new GlanceClient({ url: s.url }).getLocations(id);
    expect(locs).toEqual({
      imageId: id,
      locations: [{ url: 'rbd://x', metadata: { store: 'ceph' } }],
      directUrl: 'rbd://x',
      source: 'locations-api',
    });
  });

  it('falls back to the image record when the route is missing, and remembers', async () => {
    const id = randomUUID();
    const s = await serve((req, res) => {
      if (req.url?.endsWith('/locations')) res.writeHead(404).end('<html>404 Not Found</html>');
      else
        res
          .writeHead(200)
          .end(JSON.stringify(image(id, Buffer.alloc(1), { locations: [{ url: 'file:///a', metadata: {} }] })));
    });
    const c = new GlanceClient({ url: s.url });
    expect((await c.getLocations(id)).source).toBe('image');
    expect((await c.getLocations(id)).locations).toEqual([{ url: 'file:///a', metadata: {} }]);
    expect(s.hits.map((h) => h.url.replace(id, 'ID'))).toEqual([
      '/v2/images/ID/locations',
      '/v2/images/ID',
      '/v2/images/ID',
    ]);
  });

  it('a missing image stays a GlanceNotFoundError', async () => {
    const s = await serve((_q, res) => res.writeHead(404).end('no'));
    await expect(new GlanceClient({ url: s.url }).getLocations(randomUUID())).rejects.toBeInstanceOf(
      GlanceNotFoundError,
    );
  });
});

describe('auth', () => {
  it('sends a static token and no token when keystone-less', async () => {
    const s = await serve((_q, res) => res.writeHead(200).end('{"images": []}'));
    for await (const _ of new GlanceClient({ url: s.url, auth: new StaticToken('tok-1') }).listImages()) void _;
    for await (const _ of new GlanceClient({ url: s.url }).listImages()) void _;
    expect(s.hits[0]!.headers['x-auth-token']).toBe('tok-1');
    expect(s.hits[1]!.headers['x-auth-token']).toBeUndefined();
    expect(JSON.stringify(new StaticToken('secret'))).not.toContain('secret');
  });

  it('on 401 invalidates the token and retries once; a second 401 is GlanceAuthError', async () => {
    let issued = 0;
    const provider: TokenProvider = {
      token: async () => `t${issued}`,
      invalidate: () => {
        issued++;
      },
    };
    const s = await serve((req, res) => {
      if (req.headers['x-auth-token'] === 't1') res.writeHead(200).end('{"images": []}');
      else res.writeHead(401).end('expired');
    });
    const c = new GlanceClient({ url: s.url, auth: provider });
    for await (const _ of c.listImages()) void _;
    expect(s.hits.map((h) => h.headers['x-auth-token'])).toEqual(['t0', 't1']);

    const s2 = await serve((_q, res) => res.writeHead(401).end('no'));
    const err = await new GlanceClient({ url: s2.url, auth: provider }).getImage(randomUUID()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GlanceAuthError);
    expect(s2.hits.length).toBe(2);
  });

  it('Keystone v3 password auth: token from X-Subject-Token, cached until near expiry', async () => {
    let n = 0;
    let lastBody: { auth?: { identity?: { password?: { user?: { name?: string } } }; scope?: unknown } } = {};
    const ks = await serve((req, res, body) => {
      n++;
      lastBody = JSON.parse(body.toString()) as typeof lastBody;
      const expires = new Date(Date.now() + (n === 1 ? 30_000 : 3_600_000)).toISOString();
      res.writeHead(201, { 'x-subject-token': `ks-${n}`, 'content-type': 'application/json' });
      res.end(JSON.stringify({ token: { expires_at: expires } }));
      void req;
    });
    const p = new KeystoneTokenProvider({
      authUrl: `${ks.url}/v3`,
      username: 'nova',
      password: 'pw',
      projectName: 'service',
    });
    expect(ks.hits.length).toBe(0);
    // First token expires within the refresh margin (60 s), so the next call fetches a new one.
    expect(await p.token()).toBe('ks-1');
    expect(await p.token()).toBe('ks-2');
    expect(await p.token()).toBe('ks-2');
    expect(ks.hits.map((h) => `${h.method} ${h.url}`)).toEqual(['POST /v3/auth/tokens', 'POST /v3/auth/tokens']);
    expect(lastBody.auth?.identity?.password?.user?.name).toBe('nova');
    p.invalidate();
    expect(await p.token()).toBe('ks-3');
    expect(JSON.stringify(p)).not.toContain('pw');

    const bad = await serve((_q, res) => res.writeHead(401).end('{"error": "bad creds"}'));
    const q = new KeystoneTokenProvider({
      authUrl: `${bad.url}/v3`,
      username: 'nova',
      password: 'pw',
      projectName: 'service',
    });
    await expect(q.token()).rejects.toBeInstanceOf(GlanceAuthError);
  });
});

describe('GlanceClient url', () => {
  it('strips a trailing /v2 (or /v2/, /v2.1) as the OpenStack clients do, and keeps a path prefix', () => {
    expect(new GlanceClient({ url: 'http://127.0.0.1:9292/v2' }).url).toBe('http://127.0.0.1:9292');
    expect(new GlanceClient({ url: 'http://127.0.0.1:9292/v2/' }).url).toBe('http://127.0.0.1:9292');
    expect(new GlanceClient({ url: 'https://cloud.example/image/v2.1' }).url).toBe('https://cloud.example/image');
    expect(new GlanceClient({ url: 'https://cloud.example/image/' }).url).toBe('https://cloud.example/image');
    expect(new GlanceClient({ url: 'https://cloud.example/v2x' }).url).toBe('https://cloud.example/v2x');
  });
});
