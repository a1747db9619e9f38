import { randomBytes } from 'node:crypto';
import { promises as dns } from 'node:dns';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, setWorkerThreads, Timeout, workerThreads, type Cluster, type IoCtx } from '@ephemera/ceph-rbd-napi';
import { adminPools, Cleanup, cleanUpAndClose, DEAD_MON, stack, uniq } from './helpers.js';

const MiB = 1 << 20;
let admin: Cluster;
let images: IoCtx;
let vms: IoCtx;
const cleanup = new Cleanup();

beforeAll(async () => {
  ({ admin, images, vms } = await adminPools());
});
afterAll(() => cleanUpAndClose(cleanup, admin));

describe('concurrency', () => {
  it('200 concurrent clones of one snapshot all succeed without blocking the event loop', async () => {
    const base = uniq('fanout');
    await images.create(base, 64 * MiB);
    const img = await images.open(base);
    await img.createSnapshot('s');
    await img.protectSnapshot('s');
    await img.close();
    cleanup.add(`remove ${base}`, async () => {
      const i = await images.open(base);
      await i.unprotectSnapshot('s');
      await i.removeSnapshot('s');
      await i.close();
      await images.remove(base);
    });

    const names = Array.from({ length: 200 }, (_, i) => `${base}-c${i}`);
    const delay = monitorEventLoopDelay({ resolution: 10 });
    delay.enable();
    const t0 = performance.now();
    const results = await Promise.allSettled(
      names.map((name) => vms.clone({ parent: { ioctx: images, image: base, snap: 's' }, dest: { name } })),
    );
    const cloneMs = performance.now() - t0;
    delay.disable();
    cleanup.add('remove 200 clones', () => Promise.all(names.map((n) => vms.remove(n))));
    const failed = results.filter((r) => r.status === 'rejected');
    expect(failed).toEqual([]);
    const listed = new Set(await vms.list());
    expect(names.every((n) => listed.has(n))).toBe(true);
    const sample = await vms.open(names[137]!);
    expect(await sample.parent()).toEqual(expect.objectContaining({ pool: 'images', image: base, snap: 's' }));
    await sample.close();
    const atSnap = await images.open(base, { snapshot: 's' });
    expect((await atSnap.children()).length).toBe(200);
    await atSnap.close();
    const maxLagMs = delay.max / 1e6;
    console.log(
      `200 concurrent clones: ${cloneMs.toFixed(0)} ms on ${workerThreads()} threads; event loop max lag ${maxLagMs.toFixed(1)} ms`,
    );
    // Blocking the loop in clone calls would lag it by seconds (200 x ~30 ms); the slack is for a
    // loaded 2-core machine.
    expect(maxLagMs).toBeLessThan(1000);
  });

  it('aio: writes 64 MiB with 16 writes in flight and reads it back byte-equal', async () => {
    const name = uniq('aio');
    await vms.create(name, 64 * MiB);
    cleanup.add(`remove ${name}`, () => vms.remove(name));
    const img = await vms.open(name);
    const data = randomBytes(64 * MiB);
    const chunk = MiB;
    const window = 16;

    async function pump(op: (off: number) => Promise<void>): Promise<number> {
      let next = 0;
      let inFlight = 0;
      let maxInFlight = 0;
      const worker = async () => {
        while (next < data.length) {
          const off = next;
          next += chunk;
          inFlight++;
          maxInFlight = Math.max(maxInFlight, inFlight);
          await op(off);
          inFlight--;
        }
      };
      await Promise.all(Array.from({ length: window }, worker));
      return maxInFlight;
    }

    const t0 = performance.now();
    expect(await pump((off) => img.write(off, data.subarray(off, off + chunk)))).toBe(window);
    await img.flush();
    const writeMs = performance.now() - t0;
    const back = Buffer.alloc(data.length);
    const t1 = performance.now();
    expect(
      await pump(async (off) => {
        (await img.read(off, chunk)).copy(back, off);
      }),
    ).toBe(window);
    const readMs = performance.now() - t1;
    expect(back.equals(data)).toBe(true);
    // one 64 MiB read as a single request too
    expect((await img.read(0, 64 * MiB)).equals(data)).toBe(true);
    console.log(
      `aio 64 MiB: write ${((64 / writeMs) * 1000).toFixed(0)} MiB/s, read ${((64 / readMs) * 1000).toFixed(0)} MiB/s (16 in flight)`,
    );
    await img.close();
  });

  it("long blocking Ceph calls run on the binding's own threads: fs and dns stay prompt", async () => {
    // 12 calls that each block a native thread for 3 s (connect to a dead monitor) plus 4 real
    // librbd flattens: with libuv's 4-thread pool (Napi::AsyncWorker) fs/dns would wait seconds.
    setWorkerThreads(20);
    const dir = mkdtempSync(join(tmpdir(), 'rbd-starve-'));
    const file = join(dir, 'f');
    writeFileSync(file, 'x'.repeat(4096));
    const keyringPath = stack().ceph.users.admin.keyringPath;

    const base = uniq('starve');
    await images.create(base, 32 * MiB);
    const img = await images.open(base);
    await img.write(0, randomBytes(32 * MiB));
    await img.createSnapshot('s');
    await img.protectSnapshot('s');
    await img.close();
    const clones = Array.from({ length: 4 }, (_, i) => `${base}-f${i}`);
    await Promise.all(
      clones.map((name) => vms.clone({ parent: { ioctx: images, image: base, snap: 's' }, dest: { name } })),
    );
    cleanup.add(`remove ${base} and clones`, async () => {
      await Promise.all(clones.map((n) => vms.remove(n)));
      const i = await images.open(base);
      await i.unprotectSnapshot('s');
      await i.removeSnapshot('s');
      await i.close();
      await images.remove(base);
    });

    let settled = 0;
    const t0 = performance.now();
    const dead = Array.from({ length: 12 }, () =>
      connect({ monHost: DEAD_MON, clientId: 'admin', keyringPath, timeoutMs: 3000 }).then(
        () => {
          throw new Error('connected to a dead monitor?');
        },
        (e: unknown) => {
          settled++;
          return e;
        },
      ),
    );
    const flattens = clones.map(async (name) => {
      const c = await vms.open(name);
      await c.flatten();
      await c.close();
      settled++;
    });
    await new Promise((r) => setTimeout(r, 300));

    const fsLatencies: number[] = [];
    const dnsLatencies: number[] = [];
    for (let i = 0; i < 10; i++) {
      let t = performance.now();
      await readFile(file);
      fsLatencies.push(performance.now() - t);
      t = performance.now();
      await dns.lookup('localhost');
      dnsLatencies.push(performance.now() - t);
    }
    const busyWhileMeasuring = 16 - settled;
    const errors = await Promise.all(dead);
    await Promise.all(flattens);
    const totalMs = performance.now() - t0;
    rmSync(dir, { recursive: true, force: true });
    setWorkerThreads(8);

    console.log(
      `fs.readFile max ${Math.max(...fsLatencies).toFixed(1)} ms, dns.lookup max ${Math.max(...dnsLatencies).toFixed(1)} ms ` +
        `while ${busyWhileMeasuring} blocking Ceph calls ran; all done in ${totalMs.toFixed(0)} ms`,
    );
    expect(busyWhileMeasuring).toBeGreaterThanOrEqual(12);
    // starved, each would wait for a 3 s connect to give up
    expect(Math.max(...fsLatencies)).toBeLessThan(1000);
    expect(Math.max(...dnsLatencies)).toBeLessThan(1000);
    for (const e of errors) expect(e).toBeInstanceOf(Timeout);
    // the 12 blocked connects ran in parallel, not 4 at a time
    expect(totalMs).toBeLessThan(3000 * 2);
  });
});
