import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile, writeFile, stat, truncate } from 'node:fs/promises';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { QemuImg, QemuImgError, ImageSafetyError } from '@ephemera/qemu-img-wrapper';
import { qemuImgProcesses, tempDir, type TempDir } from './helpers.js';

const pexec = promisify(execFile);
const MiB = 1024 * 1024;
let dir: TempDir;
const argvs: (readonly string[])[] = [];
/** Every run goes through `setpriv --pdeathsig KILL --` (dies with this process): recorded without that prefix. */
const prefixed: boolean[] = [];
const q = new QemuImg({
  onExec: (a) => {
    prefixed.push(a[1] === '--pdeathsig' && a[2] === 'KILL' && a[3] === '--');
    argvs.push(a[1] === '--pdeathsig' ? a.slice(4) : a);
  },
});

async function qemuIo(fmt: string, file: string, cmd: string): Promise<void> {
  await pexec('qemu-io', ['-f', fmt, '-c', cmd, file], { timeout: 30_000 });
}
async function bytesOf(p: string): Promise<Buffer> {
  return readFile(p);
}

beforeAll(async () => {
  dir = await tempDir('qiw-cmd-');
});
afterAll(async () => {
  await dir.remove();
});

describe('create and info', () => {
  test('create qcow2 with cluster size, preallocation and options; typed info', async () => {
    const f = dir.file('a.qcow2');
    await q.create(f, {
      format: 'qcow2',
      size: 64 * MiB,
      clusterSize: 128 * 1024,
      preallocation: 'metadata',
      options: { lazy_refcounts: true, compat: '1.1' },
    });
    argvs.length = 0;
    const info = await q.info(f);
    expect(info).toMatchObject({
      format: 'qcow2',
      virtualSize: 64 * MiB,
      clusterSize: 128 * 1024,
      dirty: false,
      snapshots: [],
      backingFilename: undefined,
      formatSpecific: { type: 'qcow2', data: { compat: '1.1', 'lazy-refcounts': true } },
    });
    // Untrusted by default: prlimit, --force-share and an explicit -f (the detected format).
    expect(argvs).toEqual([
      [
        'prlimit',
        '--as=1073741824',
        '--cpu=30',
        '--',
        'qemu-img',
        'info',
        '--output=json',
        '--force-share',
        '-f',
        'qcow2',
        f,
      ],
    ]);
  });

  test('backing file needs its format; info reports the backing chain', async () => {
    const base = dir.file('base.raw');
    const top = dir.file('top.qcow2');
    await q.create(base, { format: 'raw', size: 4 * MiB });
    await expect(q.create(top, { format: 'qcow2', backing: { file: base, format: '' } })).rejects.toMatchObject({
      kind: 'invalid-argument',
    });
    await q.create(top, { format: 'qcow2', backing: { file: base, format: 'raw' } });
    // Untrusted inspection refuses the overlay; a trusted caller sees the chain.
    await expect(q.info(top)).rejects.toMatchObject({ name: 'ImageSafetyError', reason: 'backing-file' });
    const info = await q.info(top, { untrusted: false, format: 'qcow2', backingChain: true });
    expect(info).toMatchObject({ format: 'qcow2', virtualSize: 4 * MiB, backingFilename: base, backingFormat: 'raw' });
    expect(info.backingChain!.map((i) => [i.format, i.filename])).toEqual([['raw', base]]);
    await expect(q.info(top, { backingChain: true })).rejects.toMatchObject({ kind: 'invalid-argument' });
    const allowed = await q.info(top, { safety: { allowBackingFile: true } });
    expect(allowed.backingFilename).toBe(base);
  });

  test('paths that look like protocols or options are plain files', async () => {
    const cwd = process.cwd();
    process.chdir(dir.path);
    try {
      await q.create('nbd:evil', { format: 'raw', size: MiB });
      await q.create('-evil', { format: 'qcow2', size: MiB });
      expect((await q.info('nbd:evil')).virtualSize).toBe(MiB);
      expect((await q.info('-evil')).format).toBe('qcow2');
    } finally {
      process.chdir(cwd);
    }
  });

  test('errors carry qemu-img stderr', async () => {
    const err = await q.info(dir.file('a.qcow2'), { untrusted: false, format: 'vmdk' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QemuImgError);
    expect(err).toMatchObject({ kind: 'exit', command: 'info', exitCode: 1 });
    expect((err as QemuImgError).stderr).toMatch(/Could not open|not in vmdk format|Invalid/i);
    expect((err as QemuImgError).message).toContain((err as QemuImgError).stderr);
  });

  test('resource limits are enforced (a tiny address space kills qemu-img)', async () => {
    const tiny = new QemuImg({ limits: { addressSpaceBytes: 16 * MiB, cpuSeconds: 5 } });
    const err = await tiny.info(dir.file('a.qcow2')).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QemuImgError);
    expect(['signal', 'exit']).toContain((err as QemuImgError).kind);
  });

  test('timeouts kill the child', async () => {
    const err = await q.info(dir.file('a.qcow2'), { timeoutMs: 1 }).catch((e: unknown) => e);
    expect(err).toMatchObject({ name: 'QemuImgError', kind: 'timeout' });
  });
});

describe('convert', () => {
  let src: string;
  let data: Buffer;
  beforeAll(async () => {
    src = dir.file('src.raw');
    // Random data, a zero hole and an unaligned tail.
    data = Buffer.concat([randomBytes(6 * MiB), Buffer.alloc(3 * MiB), randomBytes(MiB + 4096)]);
    await writeFile(src, data);
  });

  test('raw -> qcow2 -> raw is byte-equal; progress is monotonic and ends at 100', async () => {
    const mid = dir.file('mid.qcow2');
    const out = dir.file('out.raw');
    const p1: number[] = [];
    await q.convert(src, mid, {
      targetFormat: 'qcow2',
      parallel: 4,
      outOfOrder: true,
      cache: 'none',
      sourceCache: 'writeback',
      sparseSize: 4096,
      targetOptions: { cluster_size: 65536, compat: '1.1' },
      onProgress: (p) => p1.push(p),
    });
    const p2: number[] = [];
    await q.convert(mid, out, { sourceFormat: 'qcow2', targetFormat: 'raw', onProgress: (p) => p2.push(p) });
    expect((await bytesOf(out)).equals(data)).toBe(true);
    for (const p of [p1, p2]) {
      expect(p.length).toBeGreaterThan(2);
      expect(p.at(-1)).toBe(100);
      for (let i = 1; i < p.length; i++) expect(p[i]!).toBeGreaterThan(p[i - 1]!);
    }
    const info = await q.info(mid);
    expect(info.clusterSize).toBe(65536);
    // -S 4096 left the zero run unallocated.
    expect(info.actualSize!).toBeLessThan(data.length);
    const conv = argvs.find((a) => a.includes('convert') && a.includes(mid) && a.includes(src))!;
    expect(conv).toEqual([
      'qemu-img',
      'convert',
      '-p',
      '-f',
      'raw',
      '-O',
      'qcow2',
      '-m',
      '4',
      '-W',
      '-t',
      'none',
      '-T',
      'writeback',
      '-S',
      '4096',
      '-o',
      'cluster_size=65536,compat=1.1',
      src,
      mid,
    ]);
  });

  test('-n writes into an existing target', async () => {
    const out = dir.file('existing.raw');
    await q.create(out, { format: 'raw', size: data.length });
    await q.convert(src, out, { sourceFormat: 'raw', targetFormat: 'raw', noCreate: true, targetIsZero: true });
    expect((await bytesOf(out)).equals(data)).toBe(true);
  });

  test('cancel mid-convert: child killed, partial output removed, no 100 event', async () => {
    const big = dir.file('big.raw');
    await writeFile(big, randomBytes(96 * MiB));
    const out = dir.file('cancelled.qcow2');
    const ac = new AbortController();
    const seen: number[] = [];
    const t0 = Date.now();
    const err = await q
      .convert(big, out, {
        targetFormat: 'qcow2',
        compress: true,
        signal: ac.signal,
        onProgress: (p) => {
          seen.push(p);
          if (p > 1) ac.abort();
        },
      })
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ name: 'QemuImgError', kind: 'aborted' });
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect(seen.length).toBeGreaterThan(0);
    expect(seen).not.toContain(100);
    await expect(stat(out)).rejects.toMatchObject({ code: 'ENOENT' });
    expect(await qemuImgProcesses(out)).toEqual([]);
  });

  test('an already-aborted signal runs nothing', async () => {
    argvs.length = 0;
    const out = dir.file('never.qcow2');
    await expect(q.convert(src, out, { targetFormat: 'qcow2', signal: AbortSignal.abort() })).rejects.toMatchObject({
      kind: 'aborted',
    });
    expect(argvs).toEqual([]);
    await expect(stat(out)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  test('a failing convert leaves no partial file and reports stderr', async () => {
    const out = dir.file('fail.qcow2');
    const err = await q
      .convert(src, out, { sourceFormat: 'raw', targetFormat: 'qcow2', targetOptions: { cluster_size: 3 } })
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ name: 'QemuImgError', kind: 'exit' });
    expect((err as QemuImgError).stderr).toMatch(/[Cc]luster size/);
    await expect(stat(out)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  test('untrusted source declared with the wrong format is refused before qemu-img runs', async () => {
    argvs.length = 0;
    const err = await q.convert(src, dir.file('x.raw'), { sourceFormat: 'qcow2', targetFormat: 'raw' }).catch((e) => e);
    expect(err).toBeInstanceOf(ImageSafetyError);
    expect(err).toMatchObject({ reason: 'format-mismatch' });
    expect(argvs).toEqual([]);
  });
});

describe('resize, check, measure', () => {
  test('resize grows; shrinking needs shrink: true', async () => {
    const f = dir.file('r.qcow2');
    await q.create(f, { format: 'qcow2', size: 8 * MiB });
    await q.resize(f, 16 * MiB, { format: 'qcow2' });
    expect((await q.info(f)).virtualSize).toBe(16 * MiB);
    await expect(q.resize(f, 4 * MiB, { format: 'qcow2' })).rejects.toMatchObject({ kind: 'exit' });
    await q.resize(f, 4 * MiB, { format: 'qcow2', shrink: true });
    expect((await q.info(f)).virtualSize).toBe(4 * MiB);
    const raw = dir.file('r.raw');
    await q.create(raw, { format: 'raw', size: MiB });
    await q.resize(raw, 3 * MiB, { format: 'raw', preallocation: 'falloc' });
    expect((await stat(raw)).size).toBe(3 * MiB);
  });

  test('check reports a clean image, and leaks as a result (exit 3) not an error', async () => {
    const f = dir.file('c.qcow2');
    await q.create(f, { format: 'qcow2', size: 8 * MiB });
    await qemuIo('qcow2', f, 'write -P 0x5a 0 1M');
    const clean = await q.check(f);
    expect(clean).toMatchObject({ format: 'qcow2', exitCode: 0, corruptions: 0, leaks: 0, checkErrors: 0 });
    expect(clean.allocatedClusters).toBeGreaterThan(0);
    // A real leak: drop the snapshot table from the header; the snapshot's clusters stay
    // referenced in the refcount table but nothing points at them.
    await q.createSnapshot(f, 's1', { format: 'qcow2' });
    const b = new Uint8Array(await readFile(f));
    new DataView(b.buffer).setUint32(60, 0, false); // nb_snapshots = 0: snapshot clusters leak
    new DataView(b.buffer).setBigUint64(64, 0n, false);
    await writeFile(f, b);
    const leaky = await q.check(f);
    expect(leaky.exitCode).toBe(3);
    expect(leaky.leaks).toBeGreaterThan(0);
    const repaired = await q.check(f, { untrusted: false, format: 'qcow2', repair: 'leaks' });
    expect(repaired.leaksFixed).toBeGreaterThan(0);
    expect((await q.check(f)).exitCode).toBe(0);
    await expect(q.check(f, { repair: 'all' })).rejects.toMatchObject({ kind: 'invalid-argument' });
  });

  test('measure a new size and an existing image', async () => {
    const m = await q.measure({ size: 1024 * MiB }, { targetFormat: 'qcow2' });
    expect(m.fullyAllocated).toBeGreaterThan(1024 * MiB);
    expect(m.required).toBeLessThan(MiB);
    const f = dir.file('m.raw');
    await writeFile(f, randomBytes(2 * MiB));
    await truncate(f, 8 * MiB); // sparse tail
    const e = await q.measure({ source: f }, { targetFormat: 'qcow2', targetOptions: { cluster_size: 65536 } });
    expect(e.required).toBeGreaterThanOrEqual(2 * MiB);
    expect(e.required).toBeLessThan(8 * MiB);
    expect(argvs.at(-1)!.slice(0, 5)).toEqual(['prlimit', '--as=1073741824', '--cpu=30', '--', 'qemu-img']);
    expect(prefixed.length > 0 && prefixed.every(Boolean), 'every run has the parent-death signal').toBe(true);
  });
});

describe('rebase, commit, snapshots', () => {
  test('rebase onto a copy (unsafe) and flatten (safe), with progress', async () => {
    const b1 = dir.file('b1.raw');
    const top = dir.file('rb.qcow2');
    await writeFile(b1, Buffer.alloc(4 * MiB, 0x11));
    await q.create(top, { format: 'qcow2', backing: { file: b1, format: 'raw' } });
    await qemuIo('qcow2', top, 'write -P 0x22 1M 1M');
    const b2 = dir.file('b2.raw');
    await writeFile(b2, await readFile(b1));
    await q.rebase(top, { format: 'qcow2', backing: { file: b2, format: 'raw' }, unsafe: true });
    let info = await q.info(top, { untrusted: false, format: 'qcow2' });
    expect(info.backingFilename).toBe(b2);
    const progress: number[] = [];
    await q.rebase(top, { format: 'qcow2', backing: null, onProgress: (p) => progress.push(p) });
    info = await q.info(top);
    expect(info.backingFilename).toBeUndefined();
    expect(progress.at(-1)).toBe(100);
    const flat = dir.file('rb-flat.raw');
    await q.convert(top, flat, { sourceFormat: 'qcow2', targetFormat: 'raw' });
    const got = await readFile(flat);
    expect(got.subarray(0, MiB).every((x) => x === 0x11)).toBe(true);
    expect(got.subarray(MiB, 2 * MiB).every((x) => x === 0x22)).toBe(true);
  });

  test('commit merges the overlay into its base', async () => {
    const base = dir.file('cb.qcow2');
    const top = dir.file('ct.qcow2');
    await q.create(base, { format: 'qcow2', size: 4 * MiB });
    await q.create(top, { format: 'qcow2', backing: { file: base, format: 'qcow2' } });
    await qemuIo('qcow2', top, 'write -P 0xab 0 2M');
    const progress: number[] = [];
    await q.commit(top, { format: 'qcow2', drop: true, onProgress: (p) => progress.push(p) });
    expect(progress.at(-1)).toBe(100);
    const out = dir.file('cb.raw');
    await q.convert(base, out, { sourceFormat: 'qcow2', targetFormat: 'raw' });
    const got = await readFile(out);
    expect(got.subarray(0, 2 * MiB).every((x) => x === 0xab)).toBe(true);
    expect(got.subarray(2 * MiB).every((x) => x === 0)).toBe(true);
  });

  test('internal snapshots: create, list, apply, delete', async () => {
    const f = dir.file('snap,with=comma.qcow2'); // --image-opts escaping
    await q.create(f, { format: 'qcow2', size: 2 * MiB });
    await qemuIo('qcow2', f, 'write -P 0x01 0 64k');
    await q.createSnapshot(f, 'before', { format: 'qcow2' });
    await qemuIo('qcow2', f, 'write -P 0x02 0 64k');
    const list = await q.listSnapshots(f, { format: 'qcow2' });
    expect(list.map((s) => s.name)).toEqual(['before']);
    expect(list[0]!.id).toBe('1');
    await q.applySnapshot(f, 'before', { format: 'qcow2' });
    const out = dir.file('snap.raw');
    await q.convert(f, out, { sourceFormat: 'qcow2', targetFormat: 'raw' });
    expect((await readFile(out)).subarray(0, 65536).every((x) => x === 0x01)).toBe(true);
    await q.deleteSnapshot(f, 'before', { format: 'qcow2' });
    expect(await q.listSnapshots(f, { format: 'qcow2' })).toEqual([]);
    await expect(q.applySnapshot(f, 'nope', { format: 'qcow2' })).rejects.toMatchObject({ kind: 'exit' });
  });
});
