import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import {
  BOOT_COUNTER_OFFSET,
  MARKER_OFFSET,
  COUNT_PREFIX,
  MARKER_PREFIX,
  guestImage,
  markerSector,
  readBootCount,
  readCounts,
  readMarker,
  sawPoweroff,
} from '@ephemera/testkit';

const run = promisify(execFile);
const created = new Set<string>();
const tmp = mkdtempSync(join(tmpdir(), 'guest-image-unit-'));

/** A marker unique to this run, so the image is built (not found in the cache) at least once. */
function uniqueMarker(tag: string): string {
  return `EPHEMERA-GUEST unit-${tag}-${randomUUID()}`;
}

async function build(opts: Parameters<typeof guestImage>[0]): Promise<string> {
  const path = await guestImage(opts);
  if (opts?.marker?.startsWith('EPHEMERA-GUEST unit-')) created.add(path);
  return path;
}

function sector(path: string, index: number): Buffer {
  return readFileSync(path).subarray(index * 512, index * 512 + 512);
}

afterAll(() => {
  for (const p of created) rmSync(p, { force: true });
  rmSync(tmp, { recursive: true, force: true });
});

describe('tools/guest-image', () => {
  it('builds a BIOS boot disk: boot signature at 510, marker in sector 1, zero counter, requested size', async () => {
    const marker = uniqueMarker('layout');
    const path = await build({ marker, size: 64 * 1024 });
    expect(path).toMatch(/\/\.cache\/guest-image\/[0-9a-f]{24}\.raw$/);
    const data = readFileSync(path);
    expect(data.length).toBe(64 * 1024);
    expect(data.readUInt16LE(510)).toBe(0xaa55);
    expect(data[510]).toBe(0x55);
    expect(data[511]).toBe(0xaa);
    const s1 = sector(path, 1);
    expect(s1.subarray(0, marker.length).toString('latin1')).toBe(marker);
    expect(s1.subarray(marker.length).every((b) => b === 0)).toBe(true);
    expect(data.readUInt16LE(BOOT_COUNTER_OFFSET)).toBe(0);
    expect(MARKER_OFFSET).toBe(512);
    expect(s1.equals(markerSector(marker))).toBe(true);
  });

  it('caches by content: a second call returns the same file at once, untouched', async () => {
    const marker = uniqueMarker('cache');
    const first = await build({ marker, size: 128 * 1024 });
    const mtime = statSync(first).mtimeMs;
    const started = performance.now();
    const second = await build({ marker, size: 128 * 1024 });
    const elapsed = performance.now() - started;
    expect(second).toBe(first);
    expect(statSync(second).mtimeMs).toBe(mtime);
    expect(elapsed).toBeLessThan(2000);
  });

  it('gives different markers different images with the same boot code', async () => {
    const a = await build({ marker: uniqueMarker('a'), size: 64 * 1024 });
    const b = await build({ marker: uniqueMarker('b'), size: 64 * 1024 });
    expect(a).not.toBe(b);
    expect(sector(a, 0).equals(sector(b, 0))).toBe(true);
    expect(sector(a, 1).equals(sector(b, 1))).toBe(false);
  });

  it('keys the cache on size, fill and format too', async () => {
    const marker = uniqueMarker('keys');
    const paths = new Set([
      await build({ marker, size: 64 * 1024 }),
      await build({ marker, size: 128 * 1024 }),
      await build({ marker, size: 64 * 1024, fill: 'random' }),
      await build({ marker, size: 64 * 1024, format: 'qcow2' }),
    ]);
    expect(paths.size).toBe(4);
  });

  it('builds the counting guest with --mode count: other boot code, same layout, own cache entry', async () => {
    const marker = uniqueMarker('count');
    const poweroff = await build({ marker, size: 64 * 1024 });
    const count = await build({ marker, size: 64 * 1024, mode: 'count' });
    expect(await build({ marker, size: 64 * 1024, mode: 'poweroff' })).toBe(poweroff);
    expect(count).not.toBe(poweroff);
    const [p0, c0] = [sector(poweroff, 0), sector(count, 0)];
    expect(c0.readUInt16LE(510)).toBe(0xaa55);
    expect(c0.equals(p0)).toBe(false);
    // Its boot code has the counter line and not the power-off line; the other sectors are the same.
    expect(c0.includes(Buffer.from(COUNT_PREFIX))).toBe(true);
    expect(c0.includes(Buffer.from('EPHEMERA-POWEROFF'))).toBe(false);
    expect(p0.includes(Buffer.from('EPHEMERA-POWEROFF'))).toBe(true);
    expect(readFileSync(count).subarray(512).equals(readFileSync(poweroff).subarray(512))).toBe(true);
  });

  it('pads with sparse zeros by default', async () => {
    const path = await build({ marker: uniqueMarker('sparse'), size: 64 * 1024 * 1024 });
    const st = statSync(path);
    expect(st.size).toBe(64 * 1024 * 1024);
    expect(st.blocks * 512).toBeLessThan(1024 * 1024); // allocated: a few KiB, not 64 MiB
  });

  it('pads with deterministic non-zero pseudo-random data with --fill random', async () => {
    const size = 3 * 1024 * 1024 + 512;
    const a = readFileSync(await build({ marker: uniqueMarker('ra'), size, fill: 'random' }));
    const b = readFileSync(await build({ marker: uniqueMarker('rb'), size, fill: 'random' }));
    expect(a.length).toBe(size);
    expect(a.readUInt16LE(510)).toBe(0xaa55);
    expect(a.readUInt16LE(BOOT_COUNTER_OFFSET)).toBe(0);
    const padA = a.subarray(4096);
    // same pseudo-random stream for every image: deterministic, independent of the marker
    expect(padA.equals(b.subarray(4096))).toBe(true);
    // real data: no all-zero 512-byte block, and roughly uniform bytes
    for (let off = 0; off < padA.length; off += 512) {
      expect(padA.subarray(off, off + 512).some((x) => x !== 0)).toBe(true);
    }
    const zeros = padA.reduce((n, x) => n + (x === 0 ? 1 : 0), 0);
    expect(zeros / padA.length).toBeLessThan(0.01);
  });

  it('writes 256 MiB of random data in seconds', async () => {
    const started = performance.now();
    const path = await build({ marker: uniqueMarker('fast'), size: 256 * 1024 * 1024, fill: 'random' });
    const elapsed = performance.now() - started;
    expect(statSync(path).size).toBe(256 * 1024 * 1024);
    expect(statSync(path).blocks * 512).toBeGreaterThanOrEqual(256 * 1024 * 1024 - 4096);
    expect(elapsed).toBeLessThan(20_000);
  });

  it('builds qcow2 with the requested virtual size (qemu-img info)', async () => {
    const path = await build({ marker: uniqueMarker('qcow2'), size: 32 * 1024 * 1024, format: 'qcow2' });
    expect(path.endsWith('.qcow2')).toBe(true);
    const { stdout } = await run('qemu-img', ['info', '--output', 'json', path]);
    const info = JSON.parse(stdout) as { format: string; 'virtual-size': number };
    expect(info.format).toBe('qcow2');
    expect(info['virtual-size']).toBe(32 * 1024 * 1024);
    // the raw content inside matches the raw build
    const raw = join(tmp, 'from-qcow2.raw');
    await run('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', path, raw]);
    expect(readFileSync(raw).readUInt16LE(510)).toBe(0xaa55);
  });

  it('copies the image to --out and prints that path', async () => {
    const out = join(tmp, 'sub', 'copy.raw');
    const marker = uniqueMarker('out');
    const cached = await build({ marker, size: 64 * 1024 });
    const path = await guestImage({ marker, size: 64 * 1024, out });
    expect(path).toBe(out);
    expect(readFileSync(out).equals(readFileSync(cached))).toBe(true);
  });

  it('rejects bad options with a clear error and leaves nothing behind', async () => {
    const cacheDir = dirname(await build({ marker: uniqueMarker('dir'), size: 64 * 1024 }));
    const before = readdirSync(cacheDir).sort();
    await expect(guestImage({ size: 1000 })).rejects.toThrow(/--size must be at least 4096/);
    await expect(guestImage({ size: 4096 + 100 })).rejects.toThrow(/multiple of 512/);
    await expect(guestImage({ marker: 'bad\nmarker' })).rejects.toThrow(/printable ASCII/);
    await expect(guestImage({ marker: 'x'.repeat(256) })).rejects.toThrow(/printable ASCII/);
    await expect(guestImage({ fill: 'ones' as 'zero' })).rejects.toThrow(/--fill must be/);
    await expect(guestImage({ format: 'vmdk' as 'raw' })).rejects.toThrow(/--format must be/);
    await expect(guestImage({ mode: 'reboot' as 'count' })).rejects.toThrow(/--mode must be poweroff or count/);
    expect(readdirSync(cacheDir).sort()).toEqual(before);
    expect(before.some((f) => f.startsWith('.build-'))).toBe(false);
    expect(basename(cacheDir)).toBe('guest-image');
  });
});

describe('serial log parsing', () => {
  const log =
    '\x1b[2JSeaBIOS (version 1.16.2)\r\nBooting from Hard Disk..\r\nEPHEMERA-BOOT\r\n' +
    'EPHEMERA-MARKER EPHEMERA-GUEST abc 123\r\nEPHEMERA-BOOTS 7\r\nEPHEMERA-POWEROFF\r\n';

  it('reads the marker, boot count and power-off line', () => {
    expect(MARKER_PREFIX).toBe('EPHEMERA-MARKER ');
    expect(readMarker(log)).toBe('EPHEMERA-GUEST abc 123');
    expect(readBootCount(log)).toBe(7);
    expect(sawPoweroff(log)).toBe(true);
  });

  it('returns undefined until a line is complete', () => {
    expect(readMarker('')).toBeUndefined();
    expect(readMarker('EPHEMERA-BOOT\r\nEPHEMERA-MARKER EPHEMERA-GU')).toBeUndefined();
    expect(readMarker('EPHEMERA-MARKER EPHEMERA-GUEST x\r')).toBeUndefined();
    expect(readMarker('EPHEMERA-MARKER EPHEMERA-GUEST x\r\n')).toBe('EPHEMERA-GUEST x');
    expect(readBootCount('EPHEMERA-BOOTS 1')).toBeUndefined();
    expect(sawPoweroff('EPHEMERA-POWEROFF')).toBe(false);
  });

  it("reads the counting guest's counter lines in order, complete lines only", () => {
    expect(COUNT_PREFIX).toBe('EPHEMERA-COUNT ');
    const counting = 'EPHEMERA-BOOTS 1\r\nEPHEMERA-COUNT 0\r\nEPHEMERA-COUNT 1\r\nEPHEMERA-COUNT 2\r\nEPHEMERA-COUNT 3';
    expect(readCounts(counting)).toEqual([0, 1, 2]);
    expect(readCounts(`${counting}\r\nEPHEMERA-BOOT\r\nEPHEMERA-COUNT 0\r\n`)).toEqual([0, 1, 2, 3, 0]);
    expect(readCounts(log)).toEqual([]);
  });

  it('finds the marker after BIOS output on the same line', () => {
    expect(readMarker('Booting from Hard Disk..EPHEMERA-MARKER m\n')).toBe('m');
  });

  it('builds marker sectors and rejects bad markers', () => {
    const s = markerSector('EPHEMERA-GUEST z');
    expect(s.length).toBe(512);
    expect(s.subarray(0, 16).toString('latin1')).toBe('EPHEMERA-GUEST z');
    expect(s.subarray(16).every((b) => b === 0)).toBe(true);
    expect(() => markerSector('')).toThrow(RangeError);
    expect(() => markerSector('a\u00e9')).toThrow(RangeError);
  });
});
