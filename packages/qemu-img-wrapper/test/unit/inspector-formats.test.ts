import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  ImageFormatError,
  ImageInspector,
  QemuImg,
  checkImageFile,
  inspectImageBuffer,
  inspectImageFile,
  inspectImageStream,
  safetyCheck,
  type InspectedImage,
} from '@ephemera/qemu-img-wrapper';
import { chunks, qemuImg, qemuVirtualSize, tempDir, type TempDir } from './helpers.js';

const pexec = promisify(execFile);
let dir: TempDir;
beforeAll(async () => {
  dir = await tempDir('qiw-formats-');
});
afterAll(async () => {
  await dir.remove();
});

interface Case {
  name: string;
  /** qemu-img create arguments after `create -q` (the file path is appended, then the size). */
  create: string[];
  size: string;
  format: InspectedImage['format'];
  driver: string;
  declared: string;
  check?: (img: InspectedImage) => void;
}

const secret = ['--object', 'secret,id=s0,data=test-passphrase'];
const cases: Case[] = [
  { name: 'raw', create: ['-f', 'raw'], size: '10M', format: 'raw', driver: 'raw', declared: 'raw' },
  {
    name: 'qcow2 v2 (compat 0.10)',
    create: ['-f', 'qcow2', '-o', 'compat=0.10'],
    size: '10M',
    format: 'qcow2',
    driver: 'qcow2',
    declared: 'qcow2',
    check: (i) => expect(i.details).toMatchObject({ format: 'qcow2', version: 2, clusterBits: 16 }),
  },
  {
    name: 'qcow2 v3',
    create: ['-f', 'qcow2'],
    size: '1G',
    format: 'qcow2',
    driver: 'qcow2',
    declared: 'qcow2',
    check: (i) => expect(i.details).toMatchObject({ format: 'qcow2', version: 3, incompatibleFeatureBits: [] }),
  },
  {
    name: 'qcow2 v3, 4 KiB clusters, odd size',
    create: ['-f', 'qcow2', '-o', 'cluster_size=4096'],
    size: '12345678',
    format: 'qcow2',
    driver: 'qcow2',
    declared: 'qcow2',
    check: (i) => expect(i.details).toMatchObject({ clusterBits: 12 }),
  },
  {
    name: 'qcow2 v3, 2 MiB clusters, lazy refcounts',
    create: ['-f', 'qcow2', '-o', 'cluster_size=2M,lazy_refcounts=on'],
    size: '3G',
    format: 'qcow2',
    driver: 'qcow2',
    declared: 'qcow2',
    check: (i) => expect(i.details).toMatchObject({ clusterBits: 21, compatibleFeatureBits: [0] }),
  },
  {
    name: 'qcow2 v3, zstd + extended L2',
    create: ['-f', 'qcow2', '-o', 'compression_type=zstd,extended_l2=on,cluster_size=128k'],
    size: '64M',
    format: 'qcow2',
    driver: 'qcow2',
    declared: 'qcow2',
    check: (i) => expect(i.details).toMatchObject({ compressionType: 1, incompatibleFeatureBits: [3, 4] }),
  },
  {
    name: 'qcow2 LUKS-encrypted',
    create: [...secret, '-f', 'qcow2', '-o', 'encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10'],
    size: '16M',
    format: 'qcow2',
    driver: 'qcow2',
    declared: 'qcow2',
    check: (i) => {
      expect(i.encrypted).toBe(true);
      expect(i.details).toMatchObject({ cryptMethod: 2 });
    },
  },
  { name: 'qed', create: ['-f', 'qed'], size: '100M', format: 'qed', driver: 'qed', declared: 'qed' },
  {
    name: 'vmdk monolithicSparse',
    create: ['-f', 'vmdk'],
    size: '100M',
    format: 'vmdk',
    driver: 'vmdk',
    declared: 'vmdk',
    check: (i) => expect(i.details).toMatchObject({ createType: 'monolithicSparse', descriptorOnly: false }),
  },
  {
    name: 'vmdk streamOptimized',
    create: ['-f', 'vmdk', '-o', 'subformat=streamOptimized'],
    size: '50M',
    format: 'vmdk',
    driver: 'vmdk',
    declared: 'vmdk',
    check: (i) => expect(i.details).toMatchObject({ createType: 'streamOptimized' }),
  },
  {
    name: 'vhd dynamic',
    create: ['-f', 'vpc'],
    size: '100M',
    format: 'vhd',
    driver: 'vpc',
    declared: 'vhd',
    check: (i) => expect(i.details).toMatchObject({ subformat: 'dynamic', creatorApp: 'qemu' }),
  },
  {
    name: 'vhd dynamic, force_size (qem2 creator)',
    create: ['-f', 'vpc', '-o', 'force_size=on'],
    size: '100M',
    format: 'vhd',
    driver: 'vpc',
    declared: 'vpc',
    check: (i) => expect(i.details).toMatchObject({ creatorApp: 'qem2' }),
  },
  {
    name: 'vhd fixed (footer only)',
    create: ['-f', 'vpc', '-o', 'subformat=fixed'],
    size: '10M',
    format: 'vhd',
    driver: 'vpc',
    declared: 'vhd',
    check: (i) => expect(i.details).toMatchObject({ subformat: 'fixed' }),
  },
  { name: 'vhdx', create: ['-f', 'vhdx'], size: '200M', format: 'vhdx', driver: 'vhdx', declared: 'vhdx' },
  {
    name: 'vhdx fixed, 1 MiB blocks',
    create: ['-f', 'vhdx', '-o', 'subformat=fixed,block_size=1M'],
    size: '9M',
    format: 'vhdx',
    driver: 'vhdx',
    declared: 'vhdx',
  },
  { name: 'vdi', create: ['-f', 'vdi'], size: '100M', format: 'vdi', driver: 'vdi', declared: 'vdi' },
  {
    name: 'vdi static',
    create: ['-f', 'vdi', '-o', 'static=on'],
    size: '5M',
    format: 'vdi',
    driver: 'vdi',
    declared: 'vdi',
    check: (i) => expect(i.details).toMatchObject({ imageType: 2 }),
  },
  {
    name: 'luks',
    create: [...secret, '-f', 'luks', '-o', 'key-secret=s0,iter-time=10'],
    size: '10M',
    format: 'luks',
    driver: 'luks',
    declared: 'luks',
    check: (i) => expect(i.encrypted).toBe(true),
  },
];

async function allModes(path: string): Promise<InspectedImage[]> {
  const bytes = new Uint8Array(await readFile(path));
  const streamed: InspectedImage[] = [];
  for (const seed of [1, 7, 42]) {
    streamed.push(await inspectImageStream(chunks(bytes, seed, seed === 1 ? 512 : 300_000)));
  }
  return [await inspectImageFile(path), inspectImageBuffer(bytes), ...streamed];
}

describe('inspector detects images made by qemu-img, with the virtual size qemu reports', () => {
  // Concurrent: LUKS creation spends seconds in its PBKDF benchmark (wall time, not CPU).
  test.concurrent.each(cases)('$name', async (c) => {
    const path = dir.file(`${c.name.replace(/\W+/g, '_')}.img`);
    await qemuImg('create', '-q', ...c.create, path, c.size);
    const expected = await qemuVirtualSize(path, c.driver);
    for (const img of await allModes(path)) {
      expect(img.format).toBe(c.format);
      expect(img.qemuFormat).toBe(c.driver);
      expect(img.virtualSize).toBe(expected);
      expect(img.issues).toEqual([]);
      c.check?.(img);
      expect(() => safetyCheck(img, { declaredFormat: c.declared })).not.toThrow();
    }
  });

  test('qcow2 overlay: backing file and its format are reported', async () => {
    const base = dir.file('base.qcow2');
    const top = dir.file('top.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', base, '20M');
    await qemuImg('create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top);
    for (const img of await allModes(top)) {
      expect(img.backingFile).toBe(base);
      expect(img.backingFormat).toBe('qcow2');
      expect(img.virtualSize).toBe(20 * 1024 * 1024);
      expect(img.issues.map((i) => i.reason)).toEqual(['backing-file']);
      expect(() => safetyCheck(img, { declaredFormat: 'qcow2', allowBackingFile: true })).not.toThrow();
    }
  });

  test('qed overlay: backing file is reported', async () => {
    const base = dir.file('base.raw');
    const top = dir.file('top.qed');
    await qemuImg('create', '-q', '-f', 'raw', base, '4M');
    await qemuImg('create', '-q', '-f', 'qed', '-b', base, '-F', 'raw', top);
    for (const img of await allModes(top)) {
      expect(img.backingFile).toBe(base);
      expect(img.issues.map((i) => i.reason)).toEqual(['backing-file']);
    }
  });

  test('GPT and MBR inside raw', async () => {
    const gpt = dir.file('gpt.raw');
    const mbr = dir.file('mbr.raw');
    await qemuImg('create', '-q', '-f', 'raw', gpt, '8M');
    await qemuImg('create', '-q', '-f', 'raw', mbr, '8M');
    await pexec('sgdisk', ['-n', '1:2048:0', gpt]);
    await pexec('parted', ['-s', mbr, 'mklabel', 'msdos', 'mkpart', 'primary', '1MiB', '100%']);
    for (const img of await allModes(gpt)) {
      expect(img).toMatchObject({ format: 'raw', partitionTable: 'gpt', virtualSize: 8 * 1024 * 1024 });
    }
    for (const img of await allModes(mbr)) {
      expect(img).toMatchObject({ format: 'raw', partitionTable: 'mbr', virtualSize: 8 * 1024 * 1024 });
    }
  });

  test('ISO 9660 (primary volume descriptor at sector 16)', async () => {
    const blocks = 40;
    const iso = new Uint8Array(blocks * 2048);
    const pvd = 16 * 2048;
    iso[pvd] = 1;
    iso.set(new TextEncoder().encode('CD001'), pvd + 1);
    iso[pvd + 6] = 1;
    new DataView(iso.buffer).setUint32(pvd + 80, blocks, true);
    new DataView(iso.buffer).setUint32(pvd + 84, blocks, false);
    new DataView(iso.buffer).setUint16(pvd + 128, 2048, true);
    iso[17 * 2048] = 255;
    iso.set(new TextEncoder().encode('CD001'), 17 * 2048 + 1);
    const path = dir.file('x.iso');
    await writeFile(path, iso);
    for (const img of await allModes(path)) {
      expect(img).toMatchObject({ format: 'iso', qemuFormat: 'raw', virtualSize: iso.length });
      expect(img.details).toEqual({ format: 'iso', volumeBytes: iso.length });
      expect(() => safetyCheck(img, { declaredFormat: 'iso' })).not.toThrow();
      expect(() => safetyCheck(img, { declaredFormat: 'raw' })).not.toThrow();
    }
    expect(await qemuVirtualSize(path, 'raw')).toBe(iso.length);
  });

  test('stream inspector decides a qcow2 early and asks only for leading bytes', async () => {
    const path = dir.file('early.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', '-o', 'preallocation=full', path, '8M');
    const bytes = new Uint8Array(await readFile(path));
    const insp = new ImageInspector();
    let fed = 0;
    for (const c of chunks(bytes, 3, 4096)) {
      insp.push(c);
      fed += c.length;
      if (insp.decided) break;
    }
    expect(insp.decided).toBe(true);
    expect(fed).toBeLessThan(70_000);
    expect(insp.result).toMatchObject({ format: 'qcow2', virtualSize: 8 * 1024 * 1024 });
    expect(insp.bytesWanted).toBe(0);
  });

  test('stream inspector needs the end for raw (size) and reports bytesWanted', () => {
    const insp = new ImageInspector();
    insp.push(new Uint8Array(40_000));
    expect(insp.decided).toBe(false);
    expect(insp.bytesWanted).toBe(Infinity);
    insp.push(new Uint8Array(1000));
    const img = insp.end();
    expect(img).toMatchObject({ format: 'raw', virtualSize: 41_000, inputSize: 41_000 });
  });

  test('empty input is an ImageFormatError (empty) in every mode, not a zero-byte raw disk', async () => {
    const path = dir.file('empty.img');
    await writeFile(path, new Uint8Array(0));
    const runs: [string, () => unknown][] = [
      ['ImageInspector.end() with no data', () => new ImageInspector().end()],
      [
        'ImageInspector.end() after empty chunks',
        () => {
          const insp = new ImageInspector();
          insp.push(new Uint8Array(0));
          insp.push(new Uint8Array(0));
          return insp.end();
        },
      ],
      ['inspectImageStream([])', () => inspectImageStream([])],
      ['inspectImageBuffer(0 bytes)', () => inspectImageBuffer(new Uint8Array(0))],
      ['inspectImageFile(empty file)', () => inspectImageFile(path)],
      ['checkImageFile(empty file) declared raw', () => checkImageFile(path, { declaredFormat: 'raw' })],
    ];
    for (const [what, run] of runs) {
      const err = await (async () => run())().then(
        (v) => v,
        (e: unknown) => e,
      );
      expect(err, what).toBeInstanceOf(ImageFormatError);
      expect(err, what).toMatchObject({ reason: 'empty', message: expect.stringMatching(/empty/) });
    }
    // qemu-img never runs on it.
    const argvs: unknown[] = [];
    await expect(new QemuImg({ onExec: (a) => argvs.push(a) }).info(path, { format: 'raw' })).rejects.toMatchObject({
      reason: 'empty',
    });
    expect(argvs).toEqual([]);
  });

  test('data shorter than one 512-byte sector that no format claims is refused as empty; one sector is raw', async () => {
    for (const n of [1, 100, 511]) {
      const bytes = new Uint8Array(n).fill(0x41);
      const path = dir.file(`short-${n}.img`);
      await writeFile(path, bytes);
      for (const run of [
        () => inspectImageFile(path),
        async () => inspectImageBuffer(bytes),
        () => inspectImageStream(chunks(bytes, n, 7)),
      ]) {
        const err = await run().then(
          (v) => v,
          (e: unknown) => e,
        );
        expect(err, `${n} bytes`).toBeInstanceOf(ImageFormatError);
        expect(err, `${n} bytes`).toMatchObject({ reason: 'empty' });
      }
    }
    const sector = new Uint8Array(512);
    expect(inspectImageBuffer(sector)).toMatchObject({ format: 'raw', virtualSize: 512, issues: [] });
    expect(await inspectImageStream([sector])).toMatchObject({ format: 'raw', virtualSize: 512, inputSize: 512 });
  });
});

describe('block devices', () => {
  test('a qcow2 on a loop device is inspected with the device size from sysfs', async () => {
    const f = dir.file('loop.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', '-o', 'preallocation=full', f, '3M');
    const { stdout } = await pexec('losetup', ['-f', '--show', '--read-only', f]);
    const dev = stdout.trim();
    try {
      const img = await inspectImageFile(dev);
      expect(img).toMatchObject({ format: 'qcow2', virtualSize: 3 * 1024 * 1024 });
      expect(img.inputSize).toBe((await readFile(f)).length);
    } finally {
      await pexec('losetup', ['-d', dev]);
    }
  });
});
