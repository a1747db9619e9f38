// Connection loss: a private libvirtd (never the shared stack's) is restarted under an open
// connection; the binding must emit `close` and a new connection must work.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPrivateLibvirtd, type PrivateLibvirtd } from '@ephemera/testkit';
import { connect, ErrorCode, LibvirtError, type CloseReason } from '@ephemera/libvirt-napi';

let dir: string;
let daemon: PrivateLibvirtd;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'lvnapi-restart-'));
  daemon = await startPrivateLibvirtd(dir);
});

afterAll(async () => {
  await daemon?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('libvirtd restart', () => {
  it('emits close (eof) on an open connection, rejects later calls, and a new connection works', async () => {
    const conn = await connect(daemon.uri);
    try {
      expect((await conn.libVersion()).major).toBeGreaterThanOrEqual(9);
      expect(conn.isAlive()).toBe(true);
      const reasons: CloseReason[] = [];
      const closed = new Promise<{ reason: CloseReason; at: number }>((resolve) =>
        conn.once('close', (reason) => resolve({ reason, at: performance.now() })),
      );
      conn.on('close', (r) => reasons.push(r));
      const pidBefore = daemon.pid;
      const t0 = performance.now();
      await daemon.restart();
      const restartMs = performance.now() - t0;
      expect(daemon.pid).not.toBe(pidBefore);
      const { reason, at } = await closed;
      expect(reason).toBe('eof');
      expect(conn.lostReason).toBe('eof');
      expect(conn.isAlive()).toBe(false);
      const err = await conn.hostname().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(LibvirtError);
      expect([ErrorCode.VIR_ERR_INTERNAL_ERROR, ErrorCode.VIR_ERR_RPC, ErrorCode.VIR_ERR_INVALID_CONN]).toContain(
        (err as LibvirtError).code,
      );
      console.log(
        `[libvirt-napi] close event ${(at - t0).toFixed(0)} ms after restart() began (restart took ${restartMs.toFixed(0)} ms)`,
      );

      const fresh = await connect(daemon.uri);
      try {
        expect((await fresh.hostname()).length).toBeGreaterThan(0);
        expect(Array.isArray(await fresh.listAllDomains())).toBe(true);
        expect(fresh.isAlive()).toBe(true);
      } finally {
        await fresh.close();
      }
      expect(reasons).toEqual(['eof']);
    } finally {
      await conn.close();
    }
  });

  it('emits close (keepalive) when the daemon stops answering', async () => {
    const conn = await connect(daemon.uri, { keepAlive: { interval: 1, count: 2 } });
    const pid = daemon.pid;
    try {
      await conn.hostname();
      const closed = new Promise<CloseReason>((resolve) => conn.once('close', resolve));
      const t0 = performance.now();
      process.kill(pid, 'SIGSTOP');
      try {
        expect(await closed).toBe('keepalive');
      } finally {
        process.kill(pid, 'SIGCONT');
      }
      const ms = performance.now() - t0;
      expect(ms).toBeLessThan(10_000);
      console.log(`[libvirt-napi] keepalive (1 s x 2) close event ${ms.toFixed(0)} ms after the daemon froze`);
      expect(conn.isAlive()).toBe(false);
      const fresh = await connect(daemon.uri);
      expect((await fresh.hostname()).length).toBeGreaterThan(0);
      await fresh.close();
    } finally {
      await conn.close();
    }
  });
});
