// Golden images across processes (each its own cluster client, as drivers on several hosts): the
// first creates of one image in several processes build it once, and a builder SIGKILLed
// mid-build frees the build lock when its lease ends, so the next create builds it.
import { execFile, execFileSync, spawn } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { patternBytes, type DiskRef, type SourceImage } from '@ephemera/image-backend';
import { cephCli } from '@ephemera/testkit';
import type { IoCtx } from '@ephemera/ceph-rbd-napi';
import type { RbdBackend, RbdBackendOptions } from '../../src/index.js';
import { goldenName } from '../../src/golden.js';
import { removeImageFully } from '../../src/rbd-ops.js';
import { adminCluster, closeAdmin, newBackend, rbdLs, readDisk, stack } from '../support/stack.js';

const run = promisify(execFile);
const MiB = 1024 * 1024;
const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..');
const fixture = join(root, 'packages', 'backend-rbd', 'test', 'integration', 'fixtures', 'golden-create.mjs');
const LEASE_MS = 4_000;
let tmp: string;
let vms: IoCtx;
let backend: RbdBackend;
const made: DiskRef[] = [];
const goldenIds: string[] = [];

interface QcowImage {
  id: string;
  path: string;
  sha512: string;
  md5: string;
  virtualSize: number;
  size: number;
  raw: Uint8Array;
}

async function qcowImage(seed: number): Promise<QcowImage> {
  const raw = new Uint8Array(8 * MiB);
  raw.set(patternBytes(MiB, seed), 0);
  raw.set(patternBytes(MiB, seed + 1), 6 * MiB);
  const r = join(tmp, `${seed}.raw`);
  const path = join(tmp, `${seed}.qcow2`);
  await writeFile(r, raw);
  await run('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', r, path], { timeout: 60_000 });
  const q = await readFile(path);
  const id = randomUUID();
  goldenIds.push(id);
  return {
    id,
    path,
    raw,
    virtualSize: raw.length,
    size: q.length,
    sha512: createHash('sha512').update(q).digest('hex'),
    md5: createHash('md5').update(q).digest('hex'),
  };
}

function backendOptions(): RbdBackendOptions {
  const s = stack();
  const u = s.ceph.users.ephemera;
  return {
    pool: s.ceph.pools.vms,
    confPath: u.confPath,
    clientId: u.id,
    keyringPath: u.keyringPath,
    secretUuid: s.libvirt.cephSecretUuid,
    connectTimeoutMs: 20_000,
    goldenImages: { leaseMs: LEASE_MS, pollMs: 100 },
  };
}

function newDisk(): DiskRef {
  const d = { instance: randomUUID(), name: 'disk' };
  made.push(d);
  return d;
}

/** Starts a child that creates `disk` from `img`; resolves its result line, exposes `streaming`. */
function child(img: QcowImage, disk: DiskRef, chunkDelayMs = 0) {
  const p = spawn(process.execPath, [fixture], {
    env: {
      ...process.env,
      GOLDEN_JOB: JSON.stringify({ backend: backendOptions(), image: { ...img, raw: undefined }, disk, chunkDelayMs }),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
    timeout: 60_000,
  });
  let out = '';
  let err = '';
  let onStreaming: (() => void) | undefined;
  const streaming = new Promise<void>((r) => (onStreaming = r));
  p.stdout.on('data', (d: Buffer) => {
    out += d.toString();
    if (out.includes('"streaming"')) onStreaming?.();
  });
  p.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const done = new Promise<{ method?: string; reason?: string; error?: string }>((resolve, reject) => {
    p.on('exit', (code, signal) => {
      const last = out.trim().split('\n').at(-1) ?? '';
      if (code === 0 && last.startsWith('{"method"')) resolve(JSON.parse(last));
      else reject(new Error(`child exited ${code ?? signal}: ${out}\n${err}`));
    });
  });
  done.catch(() => undefined);
  return { p, streaming, done };
}

beforeAll(async () => {
  // The children import the compiled packages: build dist/ from the current sources (nx: cached
  // when npm test's build step already built them).
  execFileSync('npx', ['nx', 'run', '@ephemera/backend-rbd:build'], {
    cwd: root,
    timeout: 600_000,
    env: { ...process.env, NX_DAEMON: 'false', NX_NO_CLOUD: 'true', NX_TUI: 'false' },
  });
  tmp = await mkdtemp(join(tmpdir(), 'ephemera-golden-procs-'));
  vms = await (await adminCluster()).openIoCtx(stack().ceph.pools.vms);
  backend = await newBackend({ goldenImages: { leaseMs: LEASE_MS, pollMs: 100 } });
}, 180_000);

afterAll(async () => {
  const failures: string[] = [];
  for (const d of made) await backend.remove(d, { busyTimeoutMs: 60_000 }).catch(() => undefined);
  const names = await rbdLs(stack().ceph.pools.vms);
  for (const id of goldenIds)
    for (const n of names.filter((x) => x.startsWith(goldenName(id)!))) {
      // A killed builder's qemu-img left its watch on its temporary image: evict it, as gc --cache does.
      const img = await vms.open(n, { readOnly: true });
      const watchers = await img.watchers();
      await img.close();
      for (const w of watchers) await cephCli('admin', ['ceph', 'osd', 'blocklist', 'add', w.address, '60']);
      await removeImageFully(vms, n).catch((e: Error) => failures.push(`${n}: ${e.message}`));
    }
  await backend?.close();
  await closeAdmin();
  if (tmp) await rm(tmp, { recursive: true, force: true });
  if (failures.length) throw new Error(failures.join('\n'));
});

async function expectContent(d: DiskRef, raw: Uint8Array): Promise<void> {
  expect(Buffer.from(await readDisk(d, raw.length)).equals(Buffer.from(raw))).toBe(true);
}

function sourceOf(img: QcowImage): SourceImage {
  return {
    id: img.id,
    size: img.size,
    virtualSize: img.virtualSize,
    diskFormat: 'qcow2',
    checksum: img.md5,
    osHashAlgo: 'sha512',
    osHashValue: img.sha512,
    locations: [],
    open: async () => createReadStream(img.path),
  };
}

describe('golden images across processes', () => {
  it('4 processes creating disks from one qcow2 at once: one conversion, 4 clones', async () => {
    const img = await qcowImage(101);
    const disks = Array.from({ length: 4 }, () => newDisk());
    const results = await Promise.all(disks.map((d) => child(img, d).done));
    expect(results.map((r) => r.method)).toEqual(['cloned', 'cloned', 'cloned', 'cloned']);
    expect(results.filter((r) => /golden image \S+ built \(/.test(r.reason ?? ''))).toHaveLength(1);
    for (const d of disks) await expectContent(d, img.raw);
    expect((await rbdLs(stack().ceph.pools.vms)).filter((n) => n.startsWith(goldenName(img.id)!))).toEqual([
      goldenName(img.id),
    ]);
  });

  it('a builder SIGKILLed mid-build: the next create waits out its lease and builds the golden image', async () => {
    const img = await qcowImage(201);
    const killed = child(img, newDisk(), 100);
    await killed.streaming;
    await new Promise((r) => setTimeout(r, 300));
    killed.p.kill('SIGKILL');
    await expect(killed.done).rejects.toThrow(/SIGKILL/);
    const t0 = Date.now();
    const d = newDisk();
    const r = await backend.createFromImage(d, sourceOf(img));
    expect(r.method).toBe('cloned');
    expect(r.reason).toMatch(/golden image \S+ built \(/);
    // It could not build before the dead builder's lease ran out.
    expect(Date.now() - t0).toBeGreaterThanOrEqual(LEASE_MS / 4);
    await expectContent(d, img.raw);
    const names = (await rbdLs(stack().ceph.pools.vms)).filter((n) => n.startsWith(goldenName(img.id)!));
    expect(names).toContain(goldenName(img.id));
    // Only the dead builder's temporary image besides it (never under the golden name).
    expect(names.filter((n) => n !== goldenName(img.id)).every((n) => n.includes('.building-'))).toBe(true);
  });
});
