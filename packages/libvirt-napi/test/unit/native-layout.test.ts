import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { gypSourceProblems, nativeDocProblems, nativeSources, oversizedFiles, tsDocProblems } from '@ephemera/testkit';

const pkg = join(dirname(fileURLToPath(import.meta.url)), '../..');
const sources = nativeSources(pkg);

describe('native addon layout (one file per concept, each function documented)', () => {
  it('no C++ file under native/ is over 700 lines, and libvirt_napi.cc holds only the module init', () => {
    expect(oversizedFiles(sources, 700)).toEqual([]);
    const init = sources.find((s) => s.file === 'libvirt_napi.cc');
    expect(init?.lines.length).toBeLessThanOrEqual(150);
    expect(sources.map((s) => s.file)).toEqual(
      expect.arrayContaining([
        'errors.cc',
        'args.cc',
        'connection.cc',
        'domain.cc',
        'secret.cc',
        'events.cc',
        'migration.cc',
        'typedparams.cc',
      ]),
    );
  });

  it('binding.gyp compiles exactly the .cc files under native/', () => {
    expect(gypSourceProblems(pkg, sources)).toEqual([]);
  });

  it('every JS-visible function names the libvirt call it wraps', () => {
    expect(nativeDocProblems(sources)).toEqual([]);
  });

  it.each(['connection.ts', 'domain.ts', 'secret.ts'])(
    'every method of src/%s that calls into the addon names the C function too',
    (file) => {
      expect(tsDocProblems(join(pkg, 'src', file), /(?:binding\(\)|\bb)\.(\w+)\(/, sources)).toEqual([]);
    },
  );
});
