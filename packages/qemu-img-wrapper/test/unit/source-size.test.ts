// Issue 17: every concern in a file of its own, so no TypeScript source is over 600 lines.
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const src = join(dirname(fileURLToPath(import.meta.url)), '../../src');
const inspector = join(src, 'inspector');

describe('qemu-img-wrapper inspector source layout', () => {
  it('has no TypeScript file under src/inspector/ over 600 lines, and one file per format family', () => {
    const files = readdirSync(inspector, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.ts'));
    expect(files).toEqual(
      expect.arrayContaining(['index.ts', 'formats/index.ts', 'formats/qcow2.ts', 'formats/vmdk.ts', 'formats/vhd.ts', 'formats/vhdx.ts', 'formats/vdi.ts', 'formats/luks.ts', 'formats/raw.ts']),
    );
    const long = files
      .map((f) => ({ file: f, lines: readFileSync(join(inspector, f), 'utf8').split('\n').length - 1 }))
      .filter((x) => x.lines > 600);
    expect(long).toEqual([]);
  });

  it('has no TypeScript file under src/ over 600 lines (the runner apart from its option and result types)', () => {
    const files = readdirSync(src, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.ts'));
    expect(files).toEqual(expect.arrayContaining(['qemu-img.ts', 'qemu-img-types.ts']));
    const long = files
      .map((f) => ({ file: f, lines: readFileSync(join(src, f), 'utf8').split('\n').length - 1 }))
      .filter((x) => x.lines > 600);
    expect(long).toEqual([]);
  });
});
