import { randomBytes } from 'node:crypto';
import { readFile, writeFile, readdir } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  ImageFormatError,
  QemuImg,
  ImageSafetyError,
  inspectImageBuffer,
  inspectImageFile,
  inspectImageStream,
  safetyCheck,
  type UnsafeImageReason,
} from '@ephemera/qemu-img-wrapper';
import { chunks, qemuImg, tempDir, type TempDir } from './helpers.js';

let dir: TempDir;
const passwdHead = (await readFile('/etc/passwd')).subarray(0, 8);

beforeAll(async () => {
  dir = await tempDir('qiw-mal-');
});
afterAll(async () => {
  await dir.remove();
});

/** Overwrites bytes of a file. */
async function patch(path: string, edits: [offset: number, bytes: Uint8Array][]): Promise<void> {
  const b = new Uint8Array(await readFile(path));
  for (const [o, e] of edits) b.set(e, o);
  await writeFile(path, b);
}
function be32(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n, false);
  return b;
}
function be64(n: bigint): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, n, false);
  return b;
}
function le32(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n, true);
  return b;
}
function le64(n: bigint): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, n, true);
  return b;
}
const text = (s: string): Uint8Array => new TextEncoder().encode(s);

/** Index of a byte sequence in a file. */
async function find(path: string, needle: Uint8Array): Promise<number> {
  return Buffer.from(await readFile(path)).indexOf(Buffer.from(needle));
}

interface Bad {
  file: string;
  declared: string;
  reason: UnsafeImageReason;
  /** True when stock qemu-img really reads host data through this image (shown below). */
  leaksHostFile?: boolean;
}
const bad: Bad[] = [];

describe('crafted malicious images', () => {
  beforeAll(async () => {
    // 1. qcow2 whose backing file is /etc/passwd.
    const backing = dir.file('backing-passwd.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', '-u', '-b', '/etc/passwd', '-F', 'raw', backing, '1M');
    bad.push({ file: backing, declared: 'qcow2', reason: 'backing-file', leaksHostFile: true });

    // 2. qcow2 with an external raw data file, re-pointed at /etc/passwd (same-length name:
    //    extra slashes).
    const dataFile = dir.file('data-passwd.qcow2');
    const dataName = dir.file('d'.repeat(20));
    await qemuImg('create', '-q', '-f', 'qcow2', '-o', `data_file=${dataName},data_file_raw=on`, dataFile, '1M');
    const at = await find(dataFile, text(dataName));
    expect(at).toBeGreaterThan(0);
    await patch(dataFile, [[at, text('/'.repeat(dataName.length - 10) + 'etc/passwd')]]);
    bad.push({ file: dataFile, declared: 'qcow2', reason: 'data-file', leaksHostFile: true });

    // 3. VMDK text descriptor with a FLAT extent on a host file.
    const flat = dir.file('flat.vmdk');
    await writeFile(
      flat,
      '# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="monolithicFlat"\n' +
        'RW 8 FLAT "/etc/passwd" 0\n',
    );
    bad.push({ file: flat, declared: 'vmdk', reason: 'vmdk-extent', leaksHostFile: true });

    // 4. Sparse VMDK with capacity 0 whose embedded descriptor names a FLAT host extent
    //    (the CVE-2024-32498 shape): qemu follows the descriptor.
    const sparse = dir.file('sparse-cve.vmdk');
    await qemuImg('create', '-q', '-f', 'vmdk', sparse, '1M');
    const desc =
      '# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="monolithicFlat"\n' +
      'RW 8 FLAT "/etc/passwd" 0\n\0';
    await patch(sparse, [
      [12, new Uint8Array(8)],
      [512, text(desc)],
    ]);
    bad.push({ file: sparse, declared: 'vmdk', reason: 'vmdk-extent', leaksHostFile: true });

    // 5. A genuine qcow2 uploaded as raw.
    const labelled = dir.file('qcow2-as-raw.img');
    await qemuImg('create', '-q', '-f', 'qcow2', labelled, '1M');
    bad.push({ file: labelled, declared: 'raw', reason: 'format-mismatch' });

    // 6. Random bytes declared qcow2.
    const random = dir.file('random.qcow2');
    await writeFile(random, randomBytes(256 * 1024));
    bad.push({ file: random, declared: 'qcow2', reason: 'format-mismatch' });

    // 7. Unknown incompatible feature bit; 8. corrupt bit; 9. L1 header bomb; 10. snapshot bomb.
    for (const [name, offset, bytes, reason] of [
      ['unknown-feature.qcow2', 72, be64(1n << 20n), 'unknown-feature'],
      ['corrupt.qcow2', 72, be64(2n), 'corrupt'],
      ['l1-bomb.qcow2', 36, be32(0xffffffff), 'header-bomb'],
      ['snap-bomb.qcow2', 60, be32(0x7fffffff), 'header-bomb'],
    ] as const) {
      const f = dir.file(name);
      await qemuImg('create', '-q', '-f', 'qcow2', f, '1M');
      await patch(f, [[offset, bytes]]);
      bad.push({ file: f, declared: 'qcow2', reason });
    }

    // 12-15. Table-size header bombs in the other formats.
    for (const [name, fmt, edits] of [
      [
        'qed-l1-bomb.qed',
        'qed',
        [
          [4, le32(64 * 1024 * 1024)],
          [8, le32(16)],
        ],
      ],
      ['vdi-bmap-bomb.vdi', 'vdi', [[0x180, le32(0x10000000)]]],
      ['vhd-bat-bomb.vhd', 'vpc', [[512 + 28, be32(0x10000000)]]],
      [
        'vmdk-gd-bomb.vmdk',
        'vmdk',
        [
          [12, le64(1n << 40n)],
          [44, le32(1)],
        ],
      ],
    ] as [string, string, [number, Uint8Array][]][]) {
      const f = dir.file(name);
      await qemuImg('create', '-q', '-f', fmt, f, '1M');
      await patch(f, edits);
      bad.push({ file: f, declared: fmt === 'vpc' ? 'vhd' : fmt, reason: 'header-bomb' });
    }

    // 11. VMDK delta disk naming a parent.
    const delta = dir.file('delta.vmdk');
    await qemuImg('create', '-q', '-f', 'vmdk', delta, '1M');
    const d2 =
      '# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=12345678\ncreateType="monolithicSparse"\n' +
      'parentFileNameHint="/etc/passwd"\nRW 2048 SPARSE "delta.vmdk"\n\0';
    await patch(delta, [[512, text(d2)]]);
    bad.push({ file: delta, declared: 'vmdk', reason: 'backing-file' });
  });

  test('stock qemu-img really follows the host-file references (the threat is real)', async () => {
    for (const b of bad.filter((x) => x.leaksHostFile)) {
      const out = `${b.file}.leak.raw`;
      await qemuImg('convert', '-f', b.declared, '-O', 'raw', b.file, out);
      expect(new Uint8Array(await readFile(out)).subarray(0, 8), b.file).toEqual(new Uint8Array(passwdHead));
    }
  });

  test('every crafted image is rejected with its typed reason (file, buffer and stream)', async () => {
    expect(bad.length).toBe(15);
    for (const b of bad) {
      const bytes = new Uint8Array(await readFile(b.file));
      for (const img of [
        await inspectImageFile(b.file),
        inspectImageBuffer(bytes),
        await inspectImageStream(chunks(bytes, 5, 1000)),
      ]) {
        let err: unknown;
        try {
          safetyCheck(img, { declaredFormat: b.declared });
        } catch (e) {
          err = e;
        }
        expect(err, b.file).toBeInstanceOf(ImageSafetyError);
        expect((err as ImageSafetyError).reason, b.file).toBe(b.reason);
        expect((err as ImageSafetyError).message.length).toBeGreaterThan(10);
      }
    }
  });

  test('the wrapper never runs qemu-img on them (info, convert, check, measure)', async () => {
    const argvs: (readonly string[])[] = [];
    const q = new QemuImg({ onExec: (a) => argvs.push(a) });
    for (const b of bad) {
      const target = `${b.file}.out`;
      await expect(q.info(b.file, { format: b.declared })).rejects.toBeInstanceOf(ImageSafetyError);
      // Without a declared format, content-level problems are still caught (a mislabelled
      // image is then simply its detected format, so it is not tried here).
      if (b.reason !== 'format-mismatch') await expect(q.info(b.file)).rejects.toBeInstanceOf(ImageSafetyError);
      await expect(q.convert(b.file, target, { sourceFormat: b.declared, targetFormat: 'raw' })).rejects.toBeInstanceOf(
        ImageSafetyError,
      );
      await expect(q.check(b.file, { format: b.declared })).rejects.toBeInstanceOf(ImageSafetyError);
      await expect(q.measure({ source: b.file, format: b.declared }, { targetFormat: 'qcow2' })).rejects.toBeInstanceOf(
        ImageSafetyError,
      );
    }
    expect(argvs).toEqual([]);
    expect((await readdir(dir.path)).filter((f) => f.endsWith('.out'))).toEqual([]);
  });

  test('allowBackingFile / allowDataFile let trusted callers through', async () => {
    const backing = bad.find((b) => b.reason === 'backing-file' && b.file.endsWith('.qcow2'))!;
    const img = await inspectImageFile(backing.file);
    expect(img.backingFile).toBe('/etc/passwd');
    expect(img.backingFormat).toBe('raw');
    expect(() => safetyCheck(img, { declaredFormat: 'qcow2', allowBackingFile: true })).not.toThrow();
    const data = await inspectImageFile(bad.find((b) => b.reason === 'data-file')!.file);
    expect(data.dataFile).toMatch(/\/etc\/passwd$/);
    expect(() => safetyCheck(data, { allowDataFile: true })).not.toThrow();
  });
});

describe('truncated and malformed headers are ImageFormatErrors', () => {
  test.each([
    ['qcow2 header cut at 40 bytes', 'qcow2', 40, 'truncated'],
    ['qcow2 v3 header cut at 90 bytes', 'qcow2', 90, 'truncated'],
    ['vmdk sparse header cut at 60 bytes', 'vmdk', 60, 'truncated'],
    ['vhdx cut inside the region table', 'vhdx', 200 * 1024, 'truncated'],
    ['qed header cut at 30 bytes', 'qed', 30, 'truncated'],
    ['vdi header cut at 0x100', 'vdi', 0x100, 'truncated'],
  ])('%s', async (_name, fmt, cut, reason) => {
    const f = dir.file(`trunc-${fmt}-${cut}`);
    await qemuImg('create', '-q', '-f', fmt, f, '1M');
    const bytes = new Uint8Array(await readFile(f)).subarray(0, cut);
    await writeFile(f, bytes);
    for (const run of [
      () => inspectImageFile(f),
      async () => inspectImageBuffer(bytes),
      () => inspectImageStream(chunks(bytes, 9, 333)),
    ]) {
      const err = await run().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(ImageFormatError);
      expect((err as ImageFormatError).reason).toBe(reason);
    }
    const argvs: unknown[] = [];
    await expect(new QemuImg({ onExec: (a) => argvs.push(a) }).info(f)).rejects.toBeInstanceOf(ImageFormatError);
    expect(argvs).toEqual([]);
  });

  test('random bytes are raw, and rejected when declared as anything else', () => {
    const bytes = randomBytes(100_000);
    bytes.fill(0, 0, 512); // no accidental magic
    const img = inspectImageBuffer(bytes);
    expect(img.format).toBe('raw');
    expect(() => safetyCheck(img, { declaredFormat: 'raw' })).not.toThrow();
    for (const f of ['qcow2', 'vmdk', 'vhd', 'vhdx', 'vdi', 'qed', 'iso', 'luks']) {
      expect(() => safetyCheck(img, { declaredFormat: f })).toThrow(ImageSafetyError);
    }
    expect(() => safetyCheck(img, { declaredFormat: 'ploop' })).toThrow(ImageFormatError);
  });

  test('qcow2 version 4 and bad cluster bits are invalid headers', async () => {
    const f = dir.file('v4.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', f, '1M');
    const good = new Uint8Array(await readFile(f));
    const v4 = good.slice();
    v4.set(be32(4), 4);
    expect(() => inspectImageBuffer(v4)).toThrow(expect.objectContaining({ reason: 'invalid-header' }));
    const cb = good.slice();
    cb.set(be32(40), 20);
    expect(() => inspectImageBuffer(cb)).toThrow(expect.objectContaining({ reason: 'invalid-header' }));
  });

  test('missing files are io errors', async () => {
    await expect(inspectImageFile(dir.file('nope'))).rejects.toMatchObject({ name: 'ImageFormatError', reason: 'io' });
  });
});

describe('VMDK descriptors may name no file but the image itself', () => {
  /** Inspects in every mode (file, buffer, stream) and returns the safetyCheck verdicts. */
  async function verdicts(path: string): Promise<unknown[]> {
    const bytes = new Uint8Array(await readFile(path));
    const out: unknown[] = [];
    for (const img of [
      await inspectImageFile(path),
      inspectImageBuffer(bytes),
      await inspectImageStream(chunks(bytes, 11, 700)),
    ]) {
      try {
        out.push(safetyCheck(img, { declaredFormat: 'vmdk' }));
      } catch (e) {
        out.push(e);
      }
    }
    return out;
  }

  /** A qemu-made VMDK named `name` (10 characters) whose extent line is replaced by `line`. */
  async function withExtentLine(subformat: string, name: string, line: (orig: string) => string): Promise<string> {
    const f = dir.file(name);
    await qemuImg('create', '-q', '-f', 'vmdk', '-o', `subformat=${subformat}`, f, '1M');
    const orig = `RW 2048 SPARSE "${name}"`;
    const at = await find(f, text(orig));
    expect(at, 'qemu-img wrote the extent line').toBeGreaterThan(0);
    const repl = line(orig);
    // Same length: the descriptor keeps its size and NUL padding.
    expect(repl.length).toBe(orig.length);
    await patch(f, [[at, text(repl)]]);
    return f;
  }

  test.each([
    ['monolithicSparse', 'absolute host path', (o: string) => o.replace('"m1234.vmdk"', '"/etc/hosts"')],
    ['streamOptimized', 'absolute host path', (o: string) => o.replace('"s1234.vmdk"', '"/etc/hosts"')],
    ['monolithicSparse', 'parent directory', (o: string) => o.replace('"m1234.vmdk"', '"../xx.vmdk"')],
    ['monolithicSparse', 'protocol prefix', (o: string) => o.replace('"m1234.vmdk"', '"nbd:h:1090"')],
    [
      'monolithicSparse',
      'signed sector count, host path',
      (o: string) => o.replace('2048', '+248').replace('"m1234.vmdk"', '"/etc/hosts"'),
    ],
    ['monolithicSparse', 'negative sector count', (o: string) => o.replace('2048', '-248')],
    [
      'monolithicSparse',
      'lower-case access, host path',
      (o: string) => o.replace('RW', 'rw').replace('"m1234.vmdk"', '"/etc/hosts"'),
    ],
  ])('%s extent naming another file (%s) is refused as vmdk-extent', async (subformat, _what, line) => {
    const name = `${subformat === 'streamOptimized' ? 's' : 'm'}1234.vmdk`;
    const f = await withExtentLine(subformat, name, line);
    for (const v of await verdicts(f)) {
      expect(v, f).toBeInstanceOf(ImageSafetyError);
      expect((v as ImageSafetyError).issues.map((i) => i.reason)).toContain('vmdk-extent');
      expect((v as ImageSafetyError).reason).toBe('vmdk-extent');
    }
  });

  test('an embedded descriptor with no extent line is refused', async () => {
    const f = await withExtentLine('monolithicSparse', 'n1234.vmdk', (o) => '#'.padEnd(o.length, ' '));
    for (const v of await verdicts(f)) {
      expect(v, f).toBeInstanceOf(ImageSafetyError);
      expect((v as ImageSafetyError).reason).toBe('vmdk-extent');
    }
  });

  test('the images qemu-img makes (their own file name as the extent) are still accepted', async () => {
    for (const subformat of ['monolithicSparse', 'streamOptimized']) {
      const f = await withExtentLine(subformat, `ok-${subformat.slice(0, 2)}.vmdk`, (o) => o);
      for (const v of await verdicts(f)) {
        expect(v, `${subformat}: ${String(v)}`).not.toBeInstanceOf(Error);
        expect(v).toMatchObject({ format: 'vmdk', virtualSize: 1024 * 1024, issues: [] });
      }
    }
  });

  test.each([
    ['monolithicFlat', 'RW 2048 FLAT "disk-flat.vmdk" 0'],
    ['vmfs', 'RW 2048 VMFS "disk-flat.vmdk"'],
    ['twoGbMaxExtentSparse', 'RW 2048 SPARSE "disk-s001.vmdk"'],
    ['twoGbMaxExtentFlat', 'RW 2048 FLAT "disk-f001.vmdk" 0'],
    ['monolithicSparse', 'RW 2048 SPARSE "disk.vmdk"'],
  ])('a descriptor-only VMDK (%s) is refused: its extents are other files', async (createType, extent) => {
    const f = dir.file(`desc-${createType}.vmdk`);
    await writeFile(
      f,
      `# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="${createType}"\n${extent}\n`,
    );
    for (const v of await verdicts(f)) {
      expect(v, f).toBeInstanceOf(ImageSafetyError);
      expect((v as ImageSafetyError).reason).toBe('vmdk-extent');
    }
  });
});
