// The tarball ships a prebuilt Node-API binary (prebuilds/linux-x64/) and no build/: the loader
// must find it, while a local source build (build/Release/) still wins (issue 20, item 3).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { addonLayout } from '@ephemera/testkit';
import { LibvirtLoadError } from '@ephemera/libvirt-napi';
import { ADDON_FILE, defaultAddonPath, loadAddon, resolveAddonPath } from '../../src/native.js';

const dir = mkdtempSync(join(tmpdir(), 'libvirt-prebuilt-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const layout = (name: string, parts: { build?: boolean; prebuilt?: boolean }): string =>
  addonLayout(join(dir, name), defaultAddonPath(), ADDON_FILE, parts);

describe('prebuilt binaries', () => {
  it('without a source build the loader takes prebuilds/linux-x64/ and the binary loads', () => {
    const root = layout('prebuilt-only', { prebuilt: true });
    const path = resolveAddonPath(root);
    expect(path).toBe(join(root, 'prebuilds', 'linux-x64', ADDON_FILE));
    // In a child: libvirt's event loop must not be registered twice in this process.
    const out = execFileSync(
      process.execPath,
      ['-e', 'const a = require(process.argv[1]); console.log(a.initOk, a.getVersion())', path],
      { encoding: 'utf8', timeout: 30_000 },
    );
    const [ok, version] = out.trim().split(' ');
    expect(ok).toBe('true');
    expect(Number(version)).toBeGreaterThanOrEqual(9_000_000);
  });

  it('a source build in build/Release/ wins over the prebuilt binary', () => {
    const root = layout('both', { build: true, prebuilt: true });
    expect(resolveAddonPath(root)).toBe(join(root, 'build', 'Release', ADDON_FILE));
  });

  it('with neither, the load error says that no prebuilt binary fits this platform', () => {
    const root = layout('neither', {});
    const path = resolveAddonPath(root);
    expect(path).toBe(join(root, 'build', 'Release', ADDON_FILE));
    expect(() => loadAddon(path)).toThrow(LibvirtLoadError);
    expect(() => loadAddon(path)).toThrow(`no prebuilt binary for ${process.platform}-${process.arch}`);
    expect(() => loadAddon(path)).toThrow(/libvirt-dev/);
  });
});
