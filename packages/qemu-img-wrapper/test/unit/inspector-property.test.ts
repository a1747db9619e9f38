import { readFile } from 'node:fs/promises';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  ImageFormatError,
  ImageInspector,
  ImageSafetyError,
  inspectImageBuffer,
  safetyCheck,
  type InspectedImage,
} from '@ephemera/qemu-img-wrapper';
import { qemuImg, tempDir, type TempDir } from './helpers.js';

let dir: TempDir;
const seeds: Uint8Array[] = [];

beforeAll(async () => {
  dir = await tempDir('qiw-prop-');
  const specs: [string, string[]][] = [
    ['qcow2', ['-f', 'qcow2']],
    ['qcow2v2', ['-f', 'qcow2', '-o', 'compat=0.10']],
    ['qcow2ext', ['-f', 'qcow2', '-o', 'compression_type=zstd,extended_l2=on']],
    ['qed', ['-f', 'qed']],
    ['vmdk', ['-f', 'vmdk']],
    ['vmdkso', ['-f', 'vmdk', '-o', 'subformat=streamOptimized']],
    ['vpc', ['-f', 'vpc']],
    ['vhdx', ['-f', 'vhdx']],
    ['vdi', ['-f', 'vdi']],
  ];
  for (const [name, args] of specs) {
    const f = dir.file(name);
    await qemuImg('create', '-q', ...args, f, '16M');
    const b = new Uint8Array(await readFile(f));
    seeds.push(b.length <= 4 * 1024 * 1024 ? b : b.slice(0, 4 * 1024 * 1024));
  }
  // A qcow2 overlay (backing file + backing format extension).
  const top = dir.file('top');
  await qemuImg('create', '-q', '-f', 'qcow2', '-u', '-b', '/etc/passwd', '-F', 'raw', top, '1M');
  seeds.push(new Uint8Array(await readFile(top)));
  // A text VMDK descriptor and an ISO-like header.
  seeds.push(
    new TextEncoder().encode('# Disk DescriptorFile\nversion=1\ncreateType="monolithicFlat"\nRW 8 FLAT "/x" 0\n'),
  );
  const iso = new Uint8Array(36 * 1024);
  iso.set([1, 0x43, 0x44, 0x30, 0x30, 0x31, 1], 32768);
  seeds.push(iso);
});
afterAll(async () => {
  await dir.remove();
});

type Outcome = { ok: InspectedImage } | { err: ImageFormatError };

function outcome(run: () => InspectedImage): Outcome {
  try {
    return { ok: run() };
  } catch (e) {
    if (e instanceof ImageFormatError) return { err: e };
    throw e; // anything else fails the property
  }
}

/** Checks the invariants for one input and returns the buffer-mode outcome. */
function checkInput(bytes: Uint8Array, chunkSizes: number[]): void {
  const t0 = performance.now();
  const a = outcome(() => inspectImageBuffer(bytes));
  if ('ok' in a) {
    const img = a.ok;
    expect(typeof img.format).toBe('string');
    if (img.virtualSize !== undefined) expect(Number.isSafeInteger(img.virtualSize) && img.virtualSize >= 0).toBe(true);
    for (const declared of [undefined, 'raw', 'qcow2', img.format]) {
      try {
        safetyCheck(img, declared === undefined ? {} : { declaredFormat: declared });
      } catch (e) {
        expect(e).toBeInstanceOf(ImageSafetyError);
        expect((e as ImageSafetyError).issues.length).toBeGreaterThan(0);
      }
    }
  }
  // Stream mode with arbitrary chunking reaches the same verdict.
  const b = outcome(() => {
    const insp = new ImageInspector();
    let off = 0;
    let i = 0;
    while (off < bytes.length) {
      const n = Math.max(1, chunkSizes[i++ % chunkSizes.length]!);
      insp.push(bytes.subarray(off, off + n));
      off += n;
    }
    return insp.end();
  });
  if ('ok' in a) {
    expect('ok' in b ? b.ok.format : b.err.reason).toBe(a.ok.format);
    if ('ok' in b) {
      expect(b.ok.virtualSize).toBe(a.ok.virtualSize);
      expect(b.ok.issues).toEqual(a.ok.issues);
    }
  } else {
    expect('err' in b ? b.err.reason : b.ok.format).toBe(a.err.reason);
  }
  expect(performance.now() - t0).toBeLessThan(1000);
}

const MAGICS = ['QFI\xfb', 'QED\0', 'KDMV', 'COWD', 'vhdxfile', 'conectix', 'LUKS\xba\xbe', 'version=1\n', ''];

describe('property: the inspector only ever throws its typed errors and never hangs', () => {
  test('random bytes behind every magic', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...MAGICS),
        fc.uint8Array({ minLength: 0, maxLength: 4096 }),
        fc.array(fc.integer({ min: 1, max: 5000 }), { minLength: 1, maxLength: 8 }),
        (magic, tail, chunkSizes) => {
          const m = Uint8Array.from(magic, (c) => c.charCodeAt(0));
          const bytes = new Uint8Array(m.length + tail.length);
          bytes.set(m);
          bytes.set(tail, m.length);
          checkInput(bytes, chunkSizes);
        },
      ),
      { numRuns: 2500 },
    );
  });

  test('VDI signature with random header', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0x48, maxLength: 1024 }), (b) => {
        new DataView(b.buffer, b.byteOffset).setUint32(0x40, 0xbeda107f, true);
        checkInput(b, [97]);
      }),
      { numRuns: 500 },
    );
  });

  test('mutated real headers (byte flips, 32/64-bit field overwrites, truncation)', () => {
    const mutation = fc.oneof(
      fc.record({ kind: fc.constant('byte' as const), off: fc.nat(1023), v: fc.nat(255) }),
      fc.record({
        kind: fc.constant('u32' as const),
        off: fc.nat(255),
        v: fc.constantFrom(0, 1, 0xffffffff, 0x7fffffff, 512, 65536),
      }),
      fc.record({
        kind: fc.constant('u64' as const),
        off: fc.nat(127),
        v: fc.constantFrom(0n, 1n, 2n ** 63n, 2n ** 64n - 1n, 1n << 20n),
      }),
      fc.record({ kind: fc.constant('far' as const), off: fc.nat(4 * 1024 * 1024), v: fc.nat(255) }),
    );
    fc.assert(
      fc.property(
        fc.nat(),
        fc.array(mutation, { minLength: 1, maxLength: 6 }),
        fc.option(fc.nat(), { nil: undefined }),
        fc.array(fc.integer({ min: 1, max: 400_000 }), { minLength: 1, maxLength: 5 }),
        (which, muts, cut, chunkSizes) => {
          const seed = seeds[which % seeds.length]!;
          const b = seed.slice(0, cut === undefined ? seed.length : cut % (seed.length + 1));
          const view = new DataView(b.buffer);
          for (const m of muts) {
            if (m.kind === 'byte' || m.kind === 'far') {
              if (m.off < b.length) b[m.off] = m.v;
            } else if (m.kind === 'u32') {
              if (m.off + 4 <= b.length) view.setUint32(m.off, m.v, m.off % 2 === 0);
            } else if (m.off + 8 <= b.length) {
              view.setBigUint64(m.off, m.v, m.off % 2 === 0);
            }
          }
          checkInput(b, chunkSizes);
        },
      ),
      { numRuns: 2500 },
    );
  });
});
