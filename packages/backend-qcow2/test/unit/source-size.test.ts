// Issue 17: every concern in a file of its own, so no TypeScript source is over 600 lines.
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { oversizedFiles, typeScriptSources } from '@ephemera/testkit';

const src = join(dirname(fileURLToPath(import.meta.url)), '../../src');

describe('backend-qcow2 source layout', () => {
  it('has no TypeScript file under src/ over 600 lines, and the backend split by concern', () => {
    const sources = typeScriptSources(src);
    expect(sources.map((s) => s.file)).toEqual(
      expect.arrayContaining([
        'backend.ts',
        'base-cache.ts',
        'create.ts',
        'snapshots.ts',
        'resize.ts',
        'remove.ts',
        'layout.ts',
        'index.ts',
      ]),
    );
    expect(oversizedFiles(sources, 600)).toEqual([]);
  });
});
