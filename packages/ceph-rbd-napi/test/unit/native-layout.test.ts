import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { gypSourceProblems, nativeDocProblems, nativeSources, oversizedFiles, tsDocProblems } from '@ephemera/testkit';

const pkg = join(dirname(fileURLToPath(import.meta.url)), '../..');
const sources = nativeSources(pkg);

describe('native addon layout (one file per concept, each method documented)', () => {
  it('no C++ file under native/ is over 700 lines, and addon.cc holds only the module init', () => {
    expect(oversizedFiles(sources, 700)).toEqual([]);
    const addon = sources.find((s) => s.file === 'addon.cc');
    expect(addon?.lines.length).toBeLessThanOrEqual(150);
    expect(sources.map((s) => s.file)).toEqual(
      expect.arrayContaining(['errors.cc', 'args.cc', 'cluster.cc', 'ioctx.cc', 'image.cc', 'snapshot.cc', 'clone.cc', 'trash.cc', 'aio.cc']),
    );
  });

  it('binding.gyp compiles exactly the .cc files under native/', () => {
    expect(gypSourceProblems(pkg, sources)).toEqual([]);
  });

  it('every JS-visible function and method names the librados/librbd call it wraps', () => {
    expect(nativeDocProblems(sources)).toEqual([]);
  });

  it('every TypeScript method that calls into the addon names the C function too', () => {
    expect(tsDocProblems(join(pkg, 'src/index.ts'), /(?:this\.#n|native\(\)|IoCtx\.native\(\w+\))\.(\w+)\(/, sources)).toEqual([]);
  });
});
