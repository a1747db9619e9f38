import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

// Issue 17: every concern in a file of its own; a source file past 600 lines holds more than one.
const src = fileURLToPath(new URL('../../src/', import.meta.url));

describe('driver source layout', () => {
  it('has no source file over 600 lines', async () => {
    const names = (await readdir(src, { recursive: true })).filter((n) => n.endsWith('.ts'));
    expect(names.length).toBeGreaterThan(0);
    const long: string[] = [];
    for (const n of names) {
      const lines = (await readFile(join(src, n), 'utf8')).split('\n').length;
      if (lines > 600) long.push(`${n}: ${lines} lines`);
    }
    expect(long).toEqual([]);
  });
});
