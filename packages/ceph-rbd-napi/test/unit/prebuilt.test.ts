// The tarball ships a prebuilt Node-API binary (prebuilds/linux-x64/) and no build/: the loader
// must find it, while a local source build (build/Release/) still wins (issue 20, item 3).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { addonLayout } from '@ephemera/testkit';
import { NativeLoadError } from '@ephemera/ceph-rbd-napi';
import { ADDON_FILE, defaultAddonPath, loadAddon, resolveAddonPath } from '../../src/native.js';

const dir = mkdtempSync(join(tmpdir(), 'rbd-prebuilt-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const layout = (name: string, parts: { build?: boolean; prebuilt?: boolean }): string =>
  addonLayout(join(dir, name), defaultAddonPath(), ADDON_FILE, parts);

describe('prebuilt binaries', () => {
  it('without a source build the loader takes prebuilds/linux-x64/ and the binary loads', () => {
    const root = layout('prebuilt-only', { prebuilt: true });
    const path = resolveAddonPath(root);
    expect(path).toBe(join(root, 'prebuilds', 'linux-x64', ADDON_FILE));
    expect(loadAddon(path).version().librbd).toMatch(/^1\.\d+\.\d+$/);
  });

  it('a source build in build/Release/ wins over the prebuilt binary', () => {
    const root = layout('both', { build: true, prebuilt: true });
    expect(resolveAddonPath(root)).toBe(join(root, 'build', 'Release', ADDON_FILE));
  });

  it('with neither, the build-missing error says that no prebuilt binary fits this platform', () => {
    const root = layout('neither', {});
    const path = resolveAddonPath(root);
    expect(path).toBe(join(root, 'build', 'Release', ADDON_FILE));
    let err: unknown;
    try {
      loadAddon(path);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(NativeLoadError);
    expect((err as NativeLoadError).reason).toBe('build-missing');
    expect((err as NativeLoadError).message).toContain(`no prebuilt binary for ${process.platform}-${process.arch}`);
    expect((err as NativeLoadError).message).toContain('librbd-dev librados-dev');
  });
});
