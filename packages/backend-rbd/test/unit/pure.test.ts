// Pure logic of the rbd backend: location and mon_host parsing, options, the aio window, block
// chunking, zero detection, the head inspection and the qemu-img argv pieces.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { expectImageBackendError, patternBytes } from '@ephemera/image-backend';
import { RbdBackend } from '../../src/index.js';
import { formatRbdUrl, parseMonHost, parseRbdUrl, readMonHost } from '../../src/locations.js';
import { allowsCloneV2 } from '../../src/options.js';
import { nbdSource, rbdTargetUri } from '../../src/qemu.js';
import { BlockPool, InspectedStream, Window, blocks, isAllZero } from '../../src/stream.js';

const FSID = 'acada594-e091-4f05-9d45-e3735cb2db40';
let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ephemera-rbd-unit-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function* from(chunks: Uint8Array[]): AsyncGenerator<Uint8Array> {
  for (const c of chunks) yield c;
}
async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

describe('rbd:// locations', () => {
  it('parses Glance rbd store locations (URL-quoted parts) and formats them back', () => {
    const u = parseRbdUrl(`rbd://${FSID}/images/9e8f67d9-9029-489a-9b3f-5d532f9d8e53/snap`);
    expect(u).toEqual({ fsid: FSID, pool: 'images', image: '9e8f67d9-9029-489a-9b3f-5d532f9d8e53', snapshot: 'snap' });
    expect(parseRbdUrl(`rbd://${FSID.toUpperCase()}/my%2Dpool/a%3Ab/s`)).toEqual({
      fsid: FSID,
      pool: 'my-pool',
      image: 'a:b',
      snapshot: 's',
    });
    // A decoded space is part of the name, as glance_store and Nova read it (issue 16.2: it was refused here).
    expect(parseRbdUrl(`rbd://${FSID}/my%20pool/a/s`)).toEqual({
      fsid: FSID,
      pool: 'my pool',
      image: 'a',
      snapshot: 's',
    });
    expect(formatRbdUrl({ fsid: FSID, pool: 'my-pool', image: 'a:b', snapshot: 's' })).toBe(
      `rbd://${FSID}/my-pool/a%3Ab/s`,
    );
  });

  it('refuses everything else', () => {
    for (const bad of [
      'rbd://image-only',
      `rbd://${FSID}/images/x`,
      `rbd://${FSID}/images/x/snap/extra`,
      `rbd://not-a-fsid/images/x/snap`,
      `rbd://${FSID}//x/snap`,
      `rbd://${FSID}/images/x/snap?x=1`,
      `rbd://${FSID}/images/x/snap#f`,
      `rbd://${FSID}/images/%2F/snap`,
      `rbd://${FSID}/images/a%40b/snap`,
      `rbd://${FSID}/images/..%2f/snap`,
      `rbd://${FSID}/images/%E0%A4%A/snap`,
      `rbd://${FSID}/images/x%00/snap`,
      `http://${FSID}/images/x/snap`,
      '',
    ]) {
      expect(parseRbdUrl(bad), bad).toBeUndefined();
    }
  });

  it('round-trips any well-formed parts (property)', () => {
    const part = fc
      .string({ minLength: 1, maxLength: 40 })
      .filter((s) => /^[^/@\s\x00-\x1f\x7f]+$/.test(s) && s !== '.' && s !== '..');
    fc.assert(
      fc.property(fc.uuid(), part, part, part, (fsid, pool, image, snapshot) => {
        const u = { fsid: fsid.toLowerCase(), pool, image, snapshot };
        expect(parseRbdUrl(formatRbdUrl(u))).toEqual(u);
      }),
    );
  });
});

// Issue 16.2/16.3: the backend and glance's resolver must read rbd:// locations alike (one shared
// parser in @ephemera/image-backend); glance's url.test.ts checks the same examples.
describe('rbd:// locations: the forms glance and the backend used to disagree on', () => {
  it('ignores an upper-case scheme, reads po%20ol and non-ASCII parts, never clones a legacy location', () => {
    expect(parseRbdUrl(`RBD://${FSID}/images/img/snap`)).toBeUndefined();
    expect(parseRbdUrl(`rbd://${FSID}/po%20ol/img/snap`)).toEqual({
      fsid: FSID,
      pool: 'po ol',
      image: 'img',
      snapshot: 'snap',
    });
    expect(parseRbdUrl(`rbd://${FSID}/images/imagé/snap`)).toEqual({
      fsid: FSID,
      pool: 'images',
      image: 'imagé',
      snapshot: 'snap',
    });
    expect(parseRbdUrl(`rbd://${FSID}/images/imag%C3%A9/snap`)).toEqual({
      fsid: FSID,
      pool: 'images',
      image: 'imagé',
      snapshot: 'snap',
    });
    expect(parseRbdUrl('rbd://my%20image')).toBeUndefined();
  });

  it('formatRbdUrl refuses missing, empty and non-string parts with a typed error', () => {
    const ok = { fsid: FSID, pool: 'images', image: 'img', snapshot: 'snap' };
    for (const [part, value, problem] of [
      ['fsid', undefined, 'missing-part'],
      ['pool', null, 'missing-part'],
      ['image', 42, 'missing-part'],
      ['snapshot', '', 'blank-part'],
    ] as const) {
      expect(() => formatRbdUrl({ ...ok, [part]: value } as never), `${part}=${String(value)}`).toThrow(
        expect.objectContaining({ code: 'INVALID_ARGUMENT', problem, part }),
      );
    }
  });
});

describe('mon_host', () => {
  it('picks the v1 address of every monitor', () => {
    expect(parseMonHost('[v2:127.0.0.1:30624,v1:127.0.0.1:30625]')).toEqual([{ host: '127.0.0.1', port: 30625 }]);
    expect(
      parseMonHost(
        '[v2:10.0.0.1:3300,v1:10.0.0.1:6789],[v2:10.0.0.2:3300,v1:10.0.0.2:6789] [v2:10.0.0.3:3300/0,v1:10.0.0.3:6789/0]',
      ),
    ).toEqual([
      { host: '10.0.0.1', port: 6789 },
      { host: '10.0.0.2', port: 6789 },
      { host: '10.0.0.3', port: 6789 },
    ]);
    expect(parseMonHost('10.0.0.1:6789, 10.0.0.2,mon3.example.com')).toEqual([
      { host: '10.0.0.1', port: 6789 },
      { host: '10.0.0.2', port: 6789 },
      { host: 'mon3.example.com', port: 6789 },
    ]);
    expect(parseMonHost('[v2:[::1]:3300,v1:[::1]:6789]')).toEqual([{ host: '::1', port: 6789 }]);
    expect(parseMonHost('[fd00::1]:6790,[v2:10.0.0.9:3300]')).toEqual([
      { host: 'fd00::1', port: 6790 },
      { host: '10.0.0.9', port: 6789 },
    ]);
    expect(parseMonHost('10.0.0.1,10.0.0.1:6789')).toEqual([{ host: '10.0.0.1', port: 6789 }]);
  });

  it('reads mon_host from a ceph.conf ([global], any spelling)', async () => {
    const p = join(dir, 'c.conf');
    await writeFile(
      p,
      '# c\n[global]\nfsid = x\n mon host = [v2:1.2.3.4:3300,v1:1.2.3.4:6789] ; comment\n[client]\nkeyring = /k\n',
    );
    expect(await readMonHost(p)).toBe('[v2:1.2.3.4:3300,v1:1.2.3.4:6789]');
    await writeFile(p, '[osd]\nmon_host = 9.9.9.9\n[client]\nkeyring=/k\n');
    expect(await readMonHost(p)).toBeUndefined();
  });
});

describe('options', () => {
  it('clone format 2 needs require_min_compat_client >= mimic', () => {
    expect(allowsCloneV2('luminous')).toBe(false);
    expect(allowsCloneV2('jewel')).toBe(false);
    expect(allowsCloneV2('mimic')).toBe(true);
    expect(allowsCloneV2('Pacific\n')).toBe(true);
    expect(allowsCloneV2('unknown-release')).toBe(false);
  });

  it('RbdBackend.create refuses bad options with InvalidArgument before connecting', async () => {
    const ok = { pool: 'vms', confPath: '/etc/ceph/ceph.conf' };
    const bad: object[] = [
      { ...ok, pool: 'a/b' },
      { ...ok, confPath: 'relative.conf' },
      { ...ok, clientId: 'client.nova' },
      { ...ok, keyringPath: 'k' },
      { ...ok, secretUuid: 'nope' },
      { ...ok, importBlockBytes: 1000 },
      { ...ok, importInFlight: 0 },
      { ...ok, cloneFormat: 3 },
      { ...ok, monitors: [] },
      { ...ok, monitors: [{ host: 'a b', port: 1 }] },
      { ...ok, directSnapshot: { pool: 'images', clientId: 'glance', confPath: 'x' } },
    ];
    for (const o of bad) await expectImageBackendError(RbdBackend.create(o as never), 'INVALID_ARGUMENT');
  });

  it('RbdBackend.create refuses a clientId without secretUuid and a secretUuid without clientId', async () => {
    // A missing conf would be BACKEND_UNAVAILABLE: the refusal must come first, before any I/O.
    const ok = { pool: 'vms', confPath: join(dir, 'missing.conf') };
    const noSecret = RbdBackend.create({ ...ok, clientId: 'nova' });
    await expectImageBackendError(noSecret, 'INVALID_ARGUMENT');
    await expect(noSecret).rejects.toMatchObject({ argument: 'secretUuid' });
    const noClient = RbdBackend.create({ ...ok, secretUuid: '8e70ab7a-6a5f-46ba-bb10-b691cc1fb11f' });
    await expectImageBackendError(noClient, 'INVALID_ARGUMENT');
    await expect(noClient).rejects.toMatchObject({ argument: 'clientId' });
  });

  it('an unreachable conf is BackendUnavailable', async () => {
    await expectImageBackendError(
      RbdBackend.create({ pool: 'vms', confPath: join(dir, 'missing.conf') }),
      'BACKEND_UNAVAILABLE',
    );
  });
});

describe('streaming pieces', () => {
  it('blocks() regroups arbitrary chunks into fixed blocks without reusing yielded buffers', async () => {
    const data = patternBytes(10_000, 7);
    await fc.assert(
      fc.asyncProperty(fc.array(fc.integer({ min: 1, max: 3000 }), { minLength: 1, maxLength: 20 }), async (cuts) => {
        const chunks: Uint8Array[] = [];
        let at = 0;
        for (const c of cuts) {
          if (at >= data.length) break;
          chunks.push(data.subarray(at, Math.min(at + c, data.length)));
          at += c;
        }
        if (at < data.length) chunks.push(data.subarray(at));
        const out = await collect(blocks(from(chunks), 4096));
        expect(out.slice(0, -1).every((b) => b.length === 4096)).toBe(true);
        expect(Buffer.concat(out).equals(Buffer.from(data))).toBe(true);
        // No reuse: no two yielded blocks share bytes (they may share a pooled ArrayBuffer, as
        // small Buffers do, but never overlapping ranges of it).
        for (let i = 0; i < out.length; i++) {
          for (let j = i + 1; j < out.length; j++) {
            const a = out[i]!;
            const b = out[j]!;
            if (a.buffer !== b.buffer) continue;
            const disjoint = a.byteOffset + a.length <= b.byteOffset || b.byteOffset + b.length <= a.byteOffset;
            expect(disjoint, `blocks ${i} and ${j} overlap in memory`).toBe(true);
          }
        }
      }),
    );
  });

  it('blocks() yields whole blocks inside one chunk as views of it (no copy), gathers only blocks that straddle chunks', async () => {
    const data = patternBytes(5 * 4096 + 100, 9);
    // One block-sized chunk, one holding two blocks and a bit, then the rest.
    const chunks = [data.subarray(0, 4096), data.subarray(4096, 3 * 4096 + 50), data.subarray(3 * 4096 + 50)];
    const out = await collect(blocks(from(chunks), 4096));
    expect(out.map((b) => b.length)).toEqual([4096, 4096, 4096, 4096, 4096, 100]);
    expect(Buffer.concat(out).equals(Buffer.from(data))).toBe(true);
    const viewOf = (b: Buffer, c: Uint8Array) =>
      b.buffer === c.buffer && b.byteOffset >= c.byteOffset && b.byteOffset + b.length <= c.byteOffset + c.length;
    expect(viewOf(out[0]!, chunks[0]!)).toBe(true);
    expect(viewOf(out[1]!, chunks[1]!)).toBe(true);
    expect(viewOf(out[2]!, chunks[1]!)).toBe(true);
    // Block 3 straddles chunks 1 and 2: gathered into memory of its own.
    expect(out[3]!.buffer).not.toBe(data.buffer);
    expect(viewOf(out[4]!, chunks[2]!)).toBe(true);
  });

  it('blocks() with a pool gathers into buffers given back, never into one still held, and ignores views', async () => {
    const data = patternBytes(8 * 4096, 11);
    // 1000-byte chunks: every block straddles chunks, so each is gathered.
    const chunks: Uint8Array[] = [];
    for (let at = 0; at < data.length; at += 1000) chunks.push(data.subarray(at, at + 1000));
    const pool = new BlockPool(4096, 2);
    const seen: Buffer[] = [];
    const held: Buffer[] = [];
    const copies: Buffer[] = [];
    for await (const b of blocks(from(chunks), 4096, pool)) {
      for (const h of held) expect(b.buffer === h.buffer, 'a block still held was handed out again').toBe(false);
      copies.push(Buffer.from(b));
      seen.push(b);
      held.push(b);
      // Two blocks in flight, as an import with writes outstanding: the oldest comes back.
      if (held.length > 2) pool.give(held.shift()!);
    }
    expect(Buffer.concat(copies).equals(Buffer.from(data))).toBe(true);
    // 8 blocks from 3 buffers (2 held + the one being filled), not 8.
    expect(new Set(seen.map((b) => b.buffer)).size).toBe(3);
    // Without a pool every gathered block has memory of its own (small Buffers may share one
    // pooled ArrayBuffer, in ranges that never overlap).
    const plain = await collect(blocks(from(chunks), 4096));
    expect(plain.length).toBe(8);
    const where = (b: Buffer) => `${plain.findIndex((o) => o.buffer === b.buffer)}:${b.byteOffset}`;
    expect(new Set(plain.map(where)).size).toBe(8);
    // A view of the source's chunk is not the pool's: giving it back changes nothing.
    const big = patternBytes(4096, 3);
    const [view] = await collect(blocks(from([big]), 4096, pool));
    pool.give(view!);
    expect(pool.take().buffer).not.toBe(big.buffer);
    // A view of a pool buffer (a chunk read into it, yielded as a block) goes back to the pool.
    const own = new BlockPool(4096, 2);
    const b = own.take();
    own.give(Buffer.from(b.buffer, b.byteOffset, 4096));
    expect(own.take()).toBe(b);
  });

  it('isAllZero', () => {
    expect(isAllZero(new Uint8Array(3 * 1024 * 1024 + 5))).toBe(true);
    const b = new Uint8Array(3 * 1024 * 1024 + 5);
    b[b.length - 1] = 1;
    expect(isAllZero(b)).toBe(false);
    expect(isAllZero(b.subarray(0, b.length - 1))).toBe(true);
    expect(isAllZero(new Uint8Array(0))).toBe(true);
  });

  it('Window keeps at most N jobs in flight and reports the first failure', async () => {
    const w = new Window(3);
    let running = 0;
    let peak = 0;
    for (let i = 0; i < 20; i++) {
      await w.push(async () => {
        running++;
        peak = Math.max(peak, running);
        await new Promise((r) => setTimeout(r, 2));
        running--;
      });
    }
    await w.drain();
    expect(peak).toBe(3);
    const f = new Window(2);
    await f.push(() => Promise.reject(new Error('boom')));
    await new Promise((r) => setTimeout(r, 1));
    await expect(f.push(async () => undefined)).rejects.toThrow('boom');
    await expect(f.drain()).rejects.toThrow('boom');
  });

  it('InspectedStream decides raw only at the end, and replays the head in front of the rest', async () => {
    const data = patternBytes(300_000, 3);
    const chunks = [data.subarray(0, 1000), data.subarray(1000, 100_000), data.subarray(100_000)];
    const s = new InspectedStream(from(chunks)[Symbol.asyncIterator]());
    expect(await s.readHead()).toBeUndefined();
    expect(Buffer.concat(await collect(s.chunks())).equals(Buffer.from(data))).toBe(true);
    expect(s.end().format).toBe('raw');
  });

  it('InspectedStream decides a qcow2 header from the first bytes', async () => {
    // A minimal qcow2 v3 header: magic, version 3, cluster_bits 16, size 1 GiB, l1 table after header.
    const h = Buffer.alloc(64 * 1024 * 4);
    h.write('QFI\xfb', 0, 'latin1');
    h.writeUInt32BE(3, 4);
    h.writeUInt32BE(16, 20);
    h.writeBigUInt64BE(1n << 30n, 24);
    h.writeUInt32BE(16, 36); // l1_size
    h.writeBigUInt64BE(3n * 65536n, 40); // l1_table_offset
    h.writeBigUInt64BE(65536n, 48); // refcount_table_offset
    h.writeUInt32BE(1, 56); // refcount_table_clusters
    h.writeUInt32BE(4, 96); // refcount_order
    h.writeUInt32BE(104, 100); // header_length
    const s = new InspectedStream(from([h.subarray(0, 512), h.subarray(512)])[Symbol.asyncIterator]());
    const head = await s.readHead();
    expect(head?.format).toBe('qcow2');
    expect(head?.virtualSize).toBe(1 << 30);
  });
});

describe('qemu-img argv', () => {
  it('renders the RBD target with paths only, escaping separators', () => {
    expect(
      rbdTargetUri({
        pool: 'vms',
        image: 'u_disk',
        user: 'ephemera',
        confPath: '/etc/ceph/a:b.conf',
        keyringPath: '/k@1',
      }),
    ).toBe('rbd:vms/u_disk:id=ephemera:conf=/etc/ceph/a\\:b.conf:keyring=/k\\@1');
    expect(() => rbdTargetUri({ pool: 'vms', image: 'x\n', user: 'u', confPath: '/c' })).toThrow();
  });

  it('renders a loopback NBD export for the nbd driver as json:, refusing relative or multi-line paths', () => {
    expect(nbdSource({ type: 'nbd', socketPath: '/tmp/ephemera-nbd-x/s' })).toBe(
      'json:{"file":{"driver":"nbd","server":{"type":"unix","path":"/tmp/ephemera-nbd-x/s"}}}',
    );
    expect(() => nbdSource({ type: 'nbd', socketPath: 'rel/s' })).toThrow(/absolute/);
    expect(() => nbdSource({ type: 'nbd', socketPath: '/a\nb' })).toThrow(/absolute/);
  });
});
