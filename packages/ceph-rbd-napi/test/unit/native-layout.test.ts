import { readdirSync, readFileSync } from 'node:fs';
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
      expect.arrayContaining([
        'errors.cc',
        'args.cc',
        'cluster.cc',
        'ioctx.cc',
        'image.cc',
        'snapshot.cc',
        'clone.cc',
        'trash.cc',
        'aio.cc',
      ]),
    );
  });

  it('binding.gyp compiles exactly the .cc files under native/', () => {
    expect(gypSourceProblems(pkg, sources)).toEqual([]);
  });

  it('every JS-visible function and method names the librados/librbd call it wraps', () => {
    expect(nativeDocProblems(sources)).toEqual([]);
  });

  it('every TypeScript method that calls into the addon names the C function too', () => {
    const call = /(?:this\.#n|native\(\)|IoCtx\.native\(\w+\))\.(\w+)\(/;
    // The wrappers live one concept per file; any other file that starts calling the addon is checked too.
    const callers = readdirSync(join(pkg, 'src'))
      .filter((f) => f.endsWith('.ts') && call.test(readFileSync(join(pkg, 'src', f), 'utf8')))
      .sort();
    expect(callers).toEqual(expect.arrayContaining(['cluster.ts', 'image.ts', 'ioctx.ts', 'library.ts']));
    for (const f of callers) expect(tsDocProblems(join(pkg, 'src', f), call, sources)).toEqual([]);
  });
});
