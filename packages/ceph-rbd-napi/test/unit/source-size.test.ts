// Issue 17: every concern in a file of its own, so no TypeScript source is over 600 lines.
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const src = join(dirname(fileURLToPath(import.meta.url)), '../../src');

describe('ceph-rbd-napi source layout', () => {
  it('has no TypeScript file under src/ over 600 lines, and one file per concept', () => {
    const files = readdirSync(src, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.ts'));
    expect(files).toEqual(expect.arrayContaining(['cluster.ts', 'ioctx.ts', 'image.ts', 'errors.ts', 'index.ts']));
    const long = files
      .map((f) => ({ file: f, lines: readFileSync(join(src, f), 'utf8').split('\n').length - 1 }))
      .filter((x) => x.lines > 600);
    expect(long).toEqual([]);
  });
});
