// The disk fills up mid-import (issue 11), on the finished local backends with real storage:
// - LVM: the volume group (loop device over a small sparse file) is filled by another LV while a
//   qcow2 image is being downloaded, after the first size check passed;
// - LVM: a raw image whose declared size lies (it delivers more bytes than it declares);
// - LVM: the qcow2 spool directory is a small tmpfs that fills up mid-download;
// - qcow2: the image cache (`_base`) is a small tmpfs that fills up mid-fetch.
// Each: a typed error, and nothing left (no LV, no loop mapping, no temp or cache file).
import { execFile } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LvmBackend, detectDeviceMapper } from '@ephemera/backend-lvm';
import { Qcow2Backend } from '@ephemera/backend-qcow2';
import { isImageBackendError, type SourceImage } from '@ephemera/image-backend';
import { guestImage } from '@ephemera/testkit';
import { createTestVg, type TestVg } from '../lvm-support.js';
import { newUuid, printReport, type ReportRow } from './support.js';

const exec = promisify(execFile);
const MiB = 1024 * 1024;
const lvmEnv = { ...process.env, LVM_SUPPRESS_FD_WARNINGS: '1', LC_ALL: 'C' };
const rows: ReportRow[] = [];
const tmpfsMounts: string[] = [];
let scratch: string;
let qcow2Bytes: Buffer; // 24 MiB virtual, random data, as qcow2
let rawBytes: Buffer; // 24 MiB random raw

/**
 * A SourceImage over `bytes` that calls `midway()` after the first `triggerAfter` bytes were
 * consumed (and waits for it), so a fault lands in the middle of the download. `declaredSize`
 * lets the record lie about the size.
 */
function faultySource(
  bytes: Buffer,
  diskFormat: string,
  opts: { triggerAfter?: number; midway?: () => Promise<void>; declaredSize?: number; virtualSize?: number } = {},
): SourceImage {
  return {
    id: newUuid(),
    size: opts.declaredSize ?? bytes.length,
    virtualSize: opts.virtualSize ?? (diskFormat === 'raw' ? (opts.declaredSize ?? bytes.length) : null),
    diskFormat,
    containerFormat: 'bare',
    locations: [],
    async open() {
      return (async function* () {
        let fired = false;
        for (let off = 0; off < bytes.length; off += MiB) {
          if (!fired && opts.midway && off >= (opts.triggerAfter ?? MiB)) {
            fired = true;
            await opts.midway();
          }
          yield bytes.subarray(off, Math.min(bytes.length, off + MiB));
        }
      })();
    },
  };
}

async function tmpfs(sizeMiB: number): Promise<string> {
  const dir = await mkdtemp(join(scratch, 'tmpfs-'));
  await exec('mount', ['-t', 'tmpfs', '-o', `size=${sizeMiB}m`, 'tmpfs', dir], { timeout: 30_000 });
  tmpfsMounts.push(dir);
  return dir;
}

async function filesUnder(dir: string): Promise<string[]> {
  return (await readdir(dir, { recursive: true }).catch(() => [] as string[])).map(String).sort();
}

beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), 'ephemera-rel-full-'));
  qcow2Bytes = await readFile(
    await guestImage({ marker: 'rel-full-qcow2', size: 24 * MiB, fill: 'random', format: 'qcow2' }),
  );
  rawBytes = await readFile(await guestImage({ marker: 'rel-full-raw', size: 24 * MiB, fill: 'random' }));
}, 300_000);

afterAll(async () => {
  printReport('disk full mid-import (local backends)', rows);
  for (const m of tmpfsMounts)
    await exec('umount', [m]).catch((e) => console.error(`umount ${m}: ${(e as Error).message}`));
  await rm(scratch, { recursive: true, force: true });
});

describe('LVM: the volume group fills up mid-import', () => {
  let vg: TestVg;
  let backend: LvmBackend;
  let lvmArgs: string[];
  let spool: string;

  beforeAll(async () => {
    vg = await createTestVg(64);
    lvmArgs = [...((await detectDeviceMapper()) ? [] : ['--driverloaded', 'n']), '--devices', vg.pv];
    spool = await mkdtemp(join(scratch, 'spool-'));
    backend = await LvmBackend.create({
      volumeGroup: vg.vg,
      devices: [vg.pv],
      wipe: 'none',
      tempDir: spool,
      busyTimeoutMs: 2_000,
    });
  }, 120_000);
  afterAll(async () => {
    await backend?.close?.();
    await vg?.destroy();
  });

  async function nothingLeft(except: string[] = []): Promise<void> {
    expect((await vg.lvs()).filter((l) => !except.includes(l))).toEqual([]);
    expect(await vg.mappings()).toEqual([]);
    expect(await filesUnder(spool)).toEqual([]);
  }

  it('another LV takes the free extents while a qcow2 image downloads: InsufficientCapacityError, nothing left', async () => {
    const tries = 3;
    for (let i = 0; i < tries; i++) {
      const disk = { instance: newUuid(), name: 'disk' };
      // 24 MiB virtual fits the 64 MiB VG when the size check runs; the filler takes every free extent midway.
      const src = faultySource(qcow2Bytes, 'qcow2', {
        virtualSize: 24 * MiB,
        triggerAfter: 2 * MiB,
        midway: async () => {
          await exec('lvcreate', [...lvmArgs, '-an', '-Zn', '-y', '-l', '100%FREE', '-n', 'filler', vg.vg], {
            env: lvmEnv,
            timeout: 60_000,
          });
        },
      });
      const err = await backend.createFromImage(disk, src).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(isImageBackendError(err, 'INSUFFICIENT_CAPACITY'), String(err)).toBe(true);
      await nothingLeft(['filler']);
      expect(await backend.list({ instance: disk.instance })).toEqual([]);
      await exec('lvremove', [...lvmArgs, '-y', `${vg.vg}/filler`], { env: lvmEnv, timeout: 60_000 });
    }
    await nothingLeft();
    rows.push({
      fault: 'LVM VG filled by another LV mid-download (qcow2)',
      tries,
      left: 'nothing',
      note: 'InsufficientCapacityError',
    });
  });

  it("a raw image that delivers more bytes than it declares: refused at the LV's end, nothing left", async () => {
    const tries = 2;
    for (let i = 0; i < tries; i++) {
      const disk = { instance: newUuid(), name: 'disk' };
      const src = faultySource(rawBytes, 'raw', { declaredSize: 8 * MiB });
      const err = await backend.createFromImage(disk, src).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(isImageBackendError(err), String(err)).toBe(true);
      console.log(`lying raw size: ${(err as { code: string }).code}: ${(err as Error).message}`);
      await nothingLeft();
    }
    rows.push({
      fault: 'LVM raw image larger than its declared size',
      tries,
      left: 'nothing',
      note: 'typed error at the LV end',
    });
  });

  it('the qcow2 spool directory (8 MiB tmpfs) fills up mid-download: typed error, nothing left', async () => {
    const small = await tmpfs(8);
    const b = await LvmBackend.create({
      volumeGroup: vg.vg,
      devices: [vg.pv],
      wipe: 'none',
      tempDir: small,
      busyTimeoutMs: 2_000,
    });
    try {
      const disk = { instance: newUuid(), name: 'disk' };
      const err = await b.createFromImage(disk, faultySource(qcow2Bytes, 'qcow2', { virtualSize: 24 * MiB })).then(
        () => undefined,
        (e: unknown) => e,
      );
      console.log(
        `lvm spool full: ${(err as Error)?.name} ${(err as { code?: string })?.code}: ${(err as Error)?.message}`,
      );
      expect(await vg.lvs()).toEqual([]);
      expect(await vg.mappings()).toEqual([]);
      expect(await filesUnder(small)).toEqual([]);
      expect(
        isImageBackendError(err, 'INSUFFICIENT_CAPACITY'),
        `expected InsufficientCapacityError, got ${String(err)}`,
      ).toBe(true);
    } finally {
      await b.close?.();
    }
    rows.push({
      fault: 'LVM qcow2 spool dir full (8 MiB tmpfs) mid-download',
      tries: 1,
      left: 'nothing',
      note: 'typed error',
    });
  });
});

describe('qcow2: the image cache fills up mid-fetch', () => {
  it('another writer fills the _base filesystem (40 MiB tmpfs) while a 24 MiB image is fetched: typed error, no cache, temp or overlay file', async () => {
    const base = await tmpfs(40);
    const instances = await mkdtemp(join(scratch, 'instances-'));
    const b = await Qcow2Backend.create({ instancesDir: instances, baseDir: base, busyTimeoutMs: 2_000 });
    const tries = 2;
    try {
      for (let i = 0; i < tries; i++) {
        const disk = { instance: newUuid(), name: 'disk' };
        // The free-space check passes (24 of 40 MiB); then 30 MiB of someone else's data lands midway.
        const filler = join(base, 'filler');
        const src = faultySource(rawBytes, 'raw', {
          triggerAfter: 4 * MiB,
          midway: async () => {
            await writeFile(filler, Buffer.alloc(30 * MiB, 1)).catch(() => undefined); // fills what is left
          },
        });
        const err = await b.createFromImage(disk, src).then(
          () => undefined,
          (e: unknown) => e,
        );
        console.log(
          `qcow2 base full: ${(err as Error)?.name} ${(err as { code?: string })?.code}: ${(err as Error)?.message}`,
        );
        expect(await filesUnder(base)).toEqual(['filler']);
        expect(await filesUnder(instances)).toEqual([]);
        expect(
          isImageBackendError(err, 'INSUFFICIENT_CAPACITY'),
          `expected InsufficientCapacityError, got ${String(err)}`,
        ).toBe(true);
        await rm(filler);
      }
    } finally {
      await b.close?.();
    }
    rows.push({
      fault: 'qcow2 _base filesystem filled by another writer mid-fetch (raw)',
      tries,
      left: 'nothing',
      note: 'InsufficientCapacityError',
    });
  });

  it('an image larger than the free space of _base is refused before any byte is fetched', async () => {
    const base = await tmpfs(8);
    const instances = await mkdtemp(join(scratch, 'instances-'));
    const b = await Qcow2Backend.create({ instancesDir: instances, baseDir: base, busyTimeoutMs: 2_000 });
    for (const [bytes, format] of [
      [rawBytes, 'raw'],
      [qcow2Bytes, 'qcow2'],
    ] as const) {
      const err = await b
        .createFromImage(
          { instance: newUuid(), name: 'disk' },
          faultySource(bytes, format, format === 'qcow2' ? { virtualSize: 24 * MiB } : {}),
        )
        .then(
          () => undefined,
          (e: unknown) => e,
        );
      expect(isImageBackendError(err, 'INSUFFICIENT_CAPACITY'), String(err)).toBe(true);
      expect(await filesUnder(base)).toEqual([]);
      expect(await filesUnder(instances)).toEqual([]);
    }
    rows.push({
      fault: 'qcow2 image larger than free _base space (raw, qcow2)',
      tries: 2,
      left: 'nothing',
      note: 'InsufficientCapacityError up front',
    });
  });
});
