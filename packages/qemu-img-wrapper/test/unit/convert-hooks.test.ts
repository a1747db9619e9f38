// convert's abort hooks (cooperative stop, then signals) and the HTTP and keyring spellings that
// backend-rbd's conversions into RBD rely on; a real qemu-img against a silent HTTP server.
import { createServer, type Server } from 'node:http';
import type { Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { QemuImg, httpJson, httpLocation, nbdJson, nbdLocation, rbdJson, rbdUri } from '@ephemera/qemu-img-wrapper';
import { tempDir, type TempDir } from './helpers.js';

let dir: TempDir;
beforeAll(async () => {
  dir = await tempDir('qiw-hooks-');
});
afterAll(async () => {
  await dir.remove();
});

/** A server that accepts connections and never answers: qemu's curl driver waits for its own timeout. */
async function silentServer(): Promise<{ url: string; close: () => Promise<void> }> {
  const sockets: Socket[] = [];
  const srv: Server = createServer(() => undefined);
  srv.on('connection', (c) => sockets.push(c));
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}/x`,
    close: async () => {
      for (const c of sockets) c.destroy();
      await new Promise<void>((r) => srv.close(() => r()));
    },
  };
}

describe('convert abort hooks', () => {
  test('an abort calls onAbort first, then kills a qemu-img stuck on a silent server (SIGTERM after the grace), and says why', async () => {
    const silent = await silentServer();
    const ac = new AbortController();
    let cooperative = 0;
    let kills = 0;
    let killsAtAbort = -1;
    const started = performance.now();
    setTimeout(() => ac.abort(new Error('stop')), 500);
    try {
      const out = new QemuImg().convert(httpLocation(silent.url, { timeoutSeconds: 600 }), dir.file('never.raw'), {
        untrusted: false,
        sourceFormat: 'qcow2',
        targetFormat: 'raw',
        signal: ac.signal,
        killGraceMs: 300,
        onAbort: () => {
          cooperative++;
          killsAtAbort = kills;
        },
        onKill: () => kills++,
      });
      await expect(out).rejects.toThrow('stop');
      await expect(out).rejects.toMatchObject({ name: 'QemuImgError', kind: 'aborted' });
    } finally {
      await silent.close();
    }
    expect(cooperative).toBe(1);
    expect(killsAtAbort).toBe(0); // the cooperative stop comes before any signal
    expect(kills).toBeGreaterThanOrEqual(1);
    expect(performance.now() - started).toBeLessThan(5_000);
  });

  test('a timeout kills at once (no cooperative phase) and reports onKill', async () => {
    const silent = await silentServer();
    let cooperative = 0;
    let kills = 0;
    try {
      await expect(
        new QemuImg().convert(httpLocation(silent.url, { timeoutSeconds: 600 }), dir.file('never2.raw'), {
          untrusted: false,
          sourceFormat: 'qcow2',
          targetFormat: 'raw',
          timeoutMs: 400,
          killGraceMs: 300,
          onAbort: () => cooperative++,
          onKill: () => kills++,
        }),
      ).rejects.toMatchObject({ kind: 'timeout' });
    } finally {
      await silent.close();
    }
    expect(cooperative).toBe(0);
    expect(kills).toBeGreaterThanOrEqual(1);
  });
});

describe('HTTP, NBD and keyring spellings', () => {
  test('an NBD export on a Unix socket for the nbd driver as json:, absolute paths only', () => {
    expect(nbdJson(nbdLocation('/run/x/s'))).toBe(
      'json:{"file":{"driver":"nbd","server":{"type":"unix","path":"/run/x/s"}}}',
    );
    expect(JSON.parse(nbdJson(nbdLocation('/run/x/s', 'disk')).slice(5)).file.export).toBe('disk');
    expect(() => nbdJson({ socketPath: 'x/s' })).toThrow(/absolute/);
    expect(() => nbdJson({ socketPath: '/x\ns' })).toThrow(/absolute/);
  });

  test('an HTTP source for the curl driver as json:', () => {
    expect(httpJson({ url: 'http://127.0.0.1:1/t', timeoutSeconds: 600 })).toBe(
      'json:{"file":{"driver":"http","url":"http://127.0.0.1:1/t","timeout":600}}',
    );
    expect(JSON.parse(httpJson({ url: 'https://h/x' }).slice(5)).file.driver).toBe('https');
    expect(() => httpJson({ url: 'file:///etc/passwd' })).toThrow(/http/);
    expect(() => httpJson({ url: 'http://h/x', timeoutSeconds: -1 })).toThrow(/timeout/);
  });

  test('an RBD keyring path (never a key) in the rbd: URI, escaped; refused where it cannot be spelled', () => {
    const t = { pool: 'vms', image: 'u_disk', user: 'ephemera', confPath: '/etc/ceph/a:b.conf', keyringPath: '/k@1' };
    expect(rbdUri(t)).toBe('rbd:vms/u_disk:id=ephemera:conf=/etc/ceph/a\\:b.conf:keyring=/k\\@1');
    expect(() => rbdUri({ ...t, keyringPath: '/k\n' })).toThrow(/keyringPath/);
    expect(() => rbdJson(t)).toThrow(/keyringPath/);
  });
});
