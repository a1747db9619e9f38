// Issue 17: every concern in a file of its own, so no TypeScript source is over 600 lines.
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { oversizedFiles, typeScriptSources } from '@ephemera/testkit';

const src = join(dirname(fileURLToPath(import.meta.url)), '../../src');
const inspector = join(src, 'inspector');

describe('qemu-img-wrapper inspector source layout', () => {
  it('has no TypeScript file under src/inspector/ over 600 lines, and one file per format family', () => {
    const sources = typeScriptSources(inspector);
    expect(sources.map((s) => s.file)).toEqual(
      expect.arrayContaining([
        'index.ts',
        'formats/index.ts',
        'formats/qcow2.ts',
        'formats/vmdk.ts',
        'formats/vhd.ts',
        'formats/vhdx.ts',
        'formats/vdi.ts',
        'formats/luks.ts',
        'formats/raw.ts',
      ]),
    );
    expect(oversizedFiles(sources, 600)).toEqual([]);
  });

  it('has no TypeScript file under src/ over 600 lines (the runner apart from its option and result types)', () => {
    const sources = typeScriptSources(src);
    expect(sources.map((s) => s.file)).toEqual(expect.arrayContaining(['qemu-img.ts', 'qemu-img-types.ts']));
    expect(oversizedFiles(sources, 600)).toEqual([]);
  });
});
