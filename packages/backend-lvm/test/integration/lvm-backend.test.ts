// LvmBackend specifics on a real VG (loop device over a sparse file): bytes land exactly at the
// LV's extents on the PV, qcow2 goes through qemu-img convert, resize (in place and relocating),
// wipe on remove, busy disks, capacity, crash leftovers. Everything is detached in afterAll.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { closeSync, openSync } from 'node:fs';
import { open, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  isImageBackendError,
  patternBytes,
  sourceImageFromBytes,
  type DiskRef,
  type ProgressEvent,
} from '@ephemera/image-backend';
import { LvmBackend } from '../../src/index.js';
import { Lvm } from '../../src/lvm.js';
import { LvMapper } from '../../src/mapping.js';
import { attachLoop, listLoops } from '../../src/loop.js';
import { createBackendFixture, type BackendFixture } from '../support/backend-fixture.js';

const exec = promisify(execFile);
const MiB = 1024 * 1024;
let fx: BackendFixture;
let lvm: Lvm;
let mapper: LvMapper;
const holders: ChildProcess[] = [];

const disk = (name = 'disk'): DiskRef => ({ instance: randomUUID(), name });

async function readAt(path: string, offset: number, length: number): Promise<Buffer> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(length);
    await fh.read(buf, 0, length, offset);
    return buf;
  } finally {
    await fh.close();
  }
}

async function expectCode(p: Promise<unknown>, code: string): Promise<void> {
  let err: unknown;
  try {
    await p;
  } catch (e) {
    err = e;
  }
  expect(isImageBackendError(err), `expected ${code}, got ${String(err)}`).toBe(true);
  expect((err as { code: string }).code).toBe(code);
}

/** A child process that holds `device` open (as a VM would). */
function holdOpen(device: string): ChildProcess {
  const fd = openSync(device, 'r');
  const child = spawn('sleep', ['60'], { stdio: [fd, 'ignore', 'ignore'] });
  closeSync(fd);
  holders.push(child);
  return child;
}

async function release(child: ChildProcess): Promise<void> {
  if (child.exitCode === null && child.signalCode === null) {
    const done = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await done;
  }
}

/** The PV byte range of a disk's LV. */
async function rangeOf(d: DiskRef) {
  const lv = await lvm.lv(`${d.instance}_${d.name}`);
  if (!lv) throw new Error('no such LV');
  return mapper.rangeOf(lv);
}

beforeAll(async () => {
  fx = await createBackendFixture({ sizeMiB: 256, extentMiB: 4, busyTimeoutMs: 500 });
  lvm = new Lvm({ volumeGroup: fx.tvg.vg, deviceMapper: fx.backend.deviceMapper, devices: [fx.tvg.pv] });
  mapper = new LvMapper(lvm);
});

afterAll(async () => {
  for (const h of holders) await release(h);
  const pv = fx?.tvg.pv;
  const file = fx?.tvg.file;
  await fx?.destroy();
  const left = (await listLoops()).filter((l) => l.backFile === pv || l.backFile === file);
  expect(left).toEqual([]);
});

describe('LvmBackend on a real VG', () => {
  it('runs in the mode the kernel allows and claims only what that mode can do', () => {
    expect(fx.backend.name).toBe('lvm');
    expect(fx.backend.deviceMapper).toBe(fx.tvg.deviceMapper);
    expect(fx.backend.capabilities.resize).toBe(true);
    expect(fx.backend.capabilities.clone).toBe(false);
    expect(fx.backend.capabilities.sharedStorage).toBe(false);
    if (!fx.backend.deviceMapper) {
      expect(fx.backend.capabilities.snapshot).toBe(false);
      expect(fx.backend.capabilities.thin).toBe(false);
    }
  });

  it('writes a raw image onto the LV: read back through the mapping and from the PV at the extents, byte-equal; tail zeroed', async () => {
    const d = disk();
    const bytes = patternBytes(3 * MiB + 1234, 7);
    const events: ProgressEvent[] = [];
    const res = await fx.backend.createFromImage(d, sourceImageFromBytes(bytes), {
      sizeBytes: 10 * MiB,
      onProgress: (e) => events.push(e),
    });
    expect(res).toMatchObject({ method: 'imported', bytesWritten: bytes.length, sizeBytes: 12 * MiB });
    expect(events.at(-1)!.percent).toBe(100);
    const src = await fx.backend.diskSource(d);
    expect(src).toMatchObject({ type: 'block', format: 'raw' });
    expect(await fx.backend.mappedDevice(d)).toBe(src.path);
    expect(Buffer.from(await fx.read(d, bytes.length)).equals(Buffer.from(bytes))).toBe(true);
    expect((await fx.read(d, 12 * MiB - bytes.length, bytes.length)).every((b) => b === 0)).toBe(true);
    if (!fx.backend.deviceMapper) {
      expect(src.path).toMatch(/^\/dev\/loop\d+$/);
      const r = await rangeOf(d);
      expect(r.bytes).toBe(12 * MiB);
      expect((await readAt(fx.tvg.file, r.offset, bytes.length)).equals(Buffer.from(bytes))).toBe(true);
    }
    expect(await fx.backend.remove(d)).toBe(true);
  });

  it('imports a qcow2 image through qemu-img convert onto the LV', async () => {
    const raw = patternBytes(5 * MiB, 11);
    const dir = fx.tvg.dir;
    await writeFile(join(dir, 'src.raw'), raw);
    await exec('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', join(dir, 'src.raw'), join(dir, 'src.qcow2')]);
    await exec('qemu-img', ['resize', '-f', 'qcow2', join(dir, 'src.qcow2'), String(6 * MiB)]);
    const qcow = await readFile(join(dir, 'src.qcow2'));
    const d = disk();
    const events: ProgressEvent[] = [];
    const res = await fx.backend.createFromImage(
      d,
      sourceImageFromBytes(qcow, { diskFormat: 'qcow2', virtualSize: 6 * MiB }),
      {
        onProgress: (e) => events.push(e),
      },
    );
    expect(res.sizeBytes).toBe(8 * MiB);
    expect(events.some((e) => e.phase === 'download')).toBe(true);
    expect(events.at(-1)!.percent).toBe(100);
    expect(Buffer.from(await fx.read(d, raw.length)).equals(Buffer.from(raw))).toBe(true);
    expect((await fx.read(d, 3 * MiB, 5 * MiB)).every((b) => b === 0)).toBe(true);
    await fx.backend.remove(d);
    await rm(join(dir, 'src.raw'));
    await rm(join(dir, 'src.qcow2'));
  });

  it('refuses a qcow2 with a backing file, and data that is not what diskFormat says (UnsafeImage, nothing left)', async () => {
    const dir = fx.tvg.dir;
    await exec('qemu-img', ['create', '-f', 'qcow2', join(dir, 'base.qcow2'), '4M']);
    await exec('qemu-img', [
      'create',
      '-f',
      'qcow2',
      '-b',
      join(dir, 'base.qcow2'),
      '-F',
      'qcow2',
      join(dir, 'child.qcow2'),
    ]);
    const d = disk();
    await expectCode(
      fx.backend.createFromImage(
        d,
        sourceImageFromBytes(await readFile(join(dir, 'child.qcow2')), { diskFormat: 'qcow2' }),
      ),
      'UNSAFE_IMAGE',
    );
    await expectCode(
      fx.backend.createFromImage(d, sourceImageFromBytes(patternBytes(MiB, 3), { diskFormat: 'qcow2' })),
      'UNSAFE_IMAGE',
    );
    await expectCode(
      fx.backend.createFromImage(d, sourceImageFromBytes(patternBytes(MiB, 3), { diskFormat: 'vmdk' })),
      'INVALID_ARGUMENT',
    );
    // qcow2 bytes declared raw: streamed through the inspector and refused at the end.
    await expectCode(
      fx.backend.createFromImage(
        d,
        sourceImageFromBytes(await readFile(join(dir, 'base.qcow2')), { diskFormat: 'raw' }),
      ),
      'UNSAFE_IMAGE',
    );
    expect(await fx.backend.list({ instance: d.instance })).toEqual([]);
    expect(await lvm.lvs(d.instance)).toEqual([]);
  });

  it('refuses an empty image and raw data shorter than one sector (UnsafeImage invalid-image-empty, nothing left)', async () => {
    const d = disk();
    for (const [bytes, diskFormat] of [
      [new Uint8Array(0), 'raw'],
      [new Uint8Array(0), 'qcow2'],
      [patternBytes(100, 5), 'raw'],
    ] as const) {
      let err: unknown;
      await fx.backend.createFromImage(d, sourceImageFromBytes(bytes, { diskFormat })).catch((e: unknown) => (err = e));
      expect(isImageBackendError(err), `${diskFormat} ${bytes.length} bytes: ${String(err)}`).toBe(true);
      expect(err, `${diskFormat} ${bytes.length} bytes`).toMatchObject({
        code: 'UNSAFE_IMAGE',
        reason: 'invalid-image-empty',
      });
      expect(await fx.backend.list({ instance: d.instance })).toEqual([]);
      expect(await lvm.lvs(d.instance)).toEqual([]);
    }
  });

  it('resizes in place, and relocates when the next extents are taken, keeping the data and zeroing the new space', async () => {
    const instance = randomUUID();
    const a: DiskRef = { instance, name: 'disk' };
    const b: DiskRef = { instance, name: 'disk.local' };
    const bytes = patternBytes(4 * MiB, 21);
    await fx.backend.createFromImage(a, sourceImageFromBytes(bytes));
    await fx.backend.createBlank(b, 4 * MiB); // right after `a` on the PV
    const before = fx.backend.deviceMapper ? undefined : await rangeOf(a);
    await fx.backend.resize(a, 12 * MiB);
    expect((await fx.backend.info(a)).sizeBytes).toBe(12 * MiB);
    expect(Buffer.from(await fx.read(a, bytes.length)).equals(Buffer.from(bytes))).toBe(true);
    expect((await fx.read(a, 8 * MiB, 4 * MiB)).every((x) => x === 0)).toBe(true);
    if (before) expect((await rangeOf(a)).offset).not.toBe(before.offset); // it moved
    expect((await lvm.lvs(instance)).map((l) => l.name).sort()).toEqual([`${instance}_disk`, `${instance}_disk.local`]);
    // b can grow in place (free extents follow it once a moved away).
    await fx.backend.resize(b, 8 * MiB);
    expect((await fx.backend.info(b)).sizeBytes).toBe(8 * MiB);
    await expectCode(fx.backend.resize(b, 4 * MiB), 'INVALID_ARGUMENT');
    await expectCode(fx.backend.resize(b, 1024 * MiB), 'INSUFFICIENT_CAPACITY');
    await fx.backend.remove(a);
    await fx.backend.remove(b);
  });

  it('a relocating resize keeps the owner tags (the copy becomes the disk)', async () => {
    const instance = randomUUID();
    const a: DiskRef = { instance, name: 'disk' };
    const b: DiskRef = { instance, name: 'disk.local' };
    const owner = { hostId: 'lvm-host-1', version: '9.9.9' };
    await fx.backend.createBlank(a, 4 * MiB, { owner });
    await fx.backend.createBlank(b, 4 * MiB); // right after `a`: `a` must move to grow
    const before = await fx.backend.getOwner(a);
    expect(before).toMatchObject({ hostId: 'lvm-host-1', instance, disk: 'disk', version: '9.9.9' });
    const range = fx.backend.deviceMapper ? undefined : await rangeOf(a);
    await fx.backend.resize(a, 12 * MiB);
    if (range) expect((await rangeOf(a)).offset).not.toBe(range.offset); // it moved
    expect(await fx.backend.getOwner(a)).toEqual(before);
    expect((await fx.backend.list({ instance })).map((d) => d.owner?.hostId ?? null)).toEqual(['lvm-host-1', null]);
    await fx.backend.remove(a);
    await fx.backend.remove(b);
  });

  it('refuses to remove or (without dm) resize a disk a process holds open (Busy), then removes it once released', async () => {
    const d = disk();
    await fx.backend.createBlank(d, 4 * MiB);
    const { path } = await fx.backend.diskSource(d);
    const child = holdOpen(path);
    if (!fx.backend.deviceMapper) await expectCode(fx.backend.resize(d, 8 * MiB), 'BUSY');
    await expectCode(fx.backend.remove(d, { busyTimeoutMs: 300 }), 'BUSY');
    expect(await fx.backend.exists(d)).toBe(true);
    setTimeout(() => child.kill('SIGKILL'), 300);
    expect(await fx.backend.remove(d, { busyTimeoutMs: 10_000 })).toBe(true);
    expect(await fx.backend.exists(d)).toBe(false);
  });

  it('wipes on remove with zero, and leaves the data with none', async () => {
    if (fx.backend.deviceMapper) return; // reading freed extents needs the PV file view
    const bytes = patternBytes(2 * MiB, 31);
    const d1 = disk();
    await fx.backend.createFromImage(d1, sourceImageFromBytes(bytes));
    const r1 = await rangeOf(d1);
    await fx.backend.remove(d1);
    expect((await readAt(fx.tvg.file, r1.offset, bytes.length)).every((x) => x === 0)).toBe(true);

    const keep = await LvmBackend.create({ volumeGroup: fx.tvg.vg, devices: [fx.tvg.pv], wipe: 'none' });
    const d2 = disk();
    await keep.createFromImage(d2, sourceImageFromBytes(bytes));
    const r2 = await rangeOf(d2);
    await keep.remove(d2);
    expect((await readAt(fx.tvg.file, r2.offset, bytes.length)).equals(Buffer.from(bytes))).toBe(true);
    // A blank disk made over those extents never shows them.
    const d3 = disk();
    await fx.backend.createBlank(d3, 4 * MiB);
    expect((await fx.read(d3, bytes.length)).every((x) => x === 0)).toBe(true);
    await fx.backend.remove(d3);
  });

  it('refuses an image larger than the free extents (InsufficientCapacity) before writing anything', async () => {
    const d = disk();
    const { freeBytes } = await fx.backend.capacity();
    let opened = false;
    const img = {
      ...sourceImageFromBytes(new Uint8Array(16)),
      size: freeBytes + 4 * MiB,
      virtualSize: freeBytes + 4 * MiB,
    };
    const spy = {
      ...img,
      open: async (o?: { signal?: AbortSignal }) => {
        opened = true;
        return img.open(o);
      },
    };
    await expectCode(fx.backend.createFromImage(d, spy), 'INSUFFICIENT_CAPACITY');
    expect(opened).toBe(false);
    await expectCode(
      fx.backend.createFromImage(d, sourceImageFromBytes(patternBytes(MiB, 1)), { sizeBytes: freeBytes + MiB }),
      'INSUFFICIENT_CAPACITY',
    );
    expect(await fx.backend.list({ instance: d.instance })).toEqual([]);
  });

  it('finds and cleans what a crash leaves: stray loop mappings at start, a half-done resize copy on remove', async () => {
    if (fx.backend.deviceMapper) return;
    const d = disk();
    await fx.backend.createBlank(d, 4 * MiB);
    const r = await rangeOf(d);
    // A mapping of extents no LV owns (its LV was removed by a process that then died).
    const stray = await attachLoop(fx.tvg.pv, r.offset + r.bytes + 64 * MiB, 4 * MiB);
    // A resize copy that never got renamed.
    await lvm.create(`${d.instance}_${d.name}+resize`, 2);
    const again = await LvmBackend.create({ volumeGroup: fx.tvg.vg, devices: [fx.tvg.pv] });
    expect((await listLoops()).some((l) => l.name === stray)).toBe(false);
    expect((await again.list({ instance: d.instance })).map((x) => x.id)).toEqual([`${d.instance}_disk`]);
    expect(await again.remove(d)).toBe(true);
    expect(await lvm.lvs(d.instance)).toEqual([]);
  });

  it('lists every disk of an instance by LV name prefix and removes them all', async () => {
    const instance = randomUUID();
    for (const name of ['disk', 'disk.local', 'disk.swap', 'disk.config'])
      await fx.backend.createBlank({ instance, name }, 4 * MiB);
    const listed = await fx.backend.list({ instance });
    expect(listed.map((x) => x.disk.name)).toEqual(['disk', 'disk.config', 'disk.local', 'disk.swap']);
    for (const x of listed) expect(await fx.backend.remove(x.disk)).toBe(true);
    expect(await fx.backend.list({ instance })).toEqual([]);
    expect(await fx.tvg.mappingLoops()).toEqual([]);
  });
});
