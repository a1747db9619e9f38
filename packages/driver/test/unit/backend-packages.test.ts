// Issue 20, item 4: the backends are optional peer dependencies of the driver, loaded by name when
// configured; a configured backend whose package is not installed is a ConfigError naming it.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ConfigError, isDriverError, loadConfig } from '@ephemera/driver';
import { BACKEND_PACKAGES, loadBackendPackage } from '../../src/backends.js';

const manifest = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8'));
const importMissing = (spec: string) => () => import(/* @vite-ignore */ spec);

describe('backend packages', () => {
  it('are optional peer dependencies, not dependencies', () => {
    for (const pkg of Object.values(BACKEND_PACKAGES)) {
      expect(manifest.dependencies?.[pkg], pkg).toBeUndefined();
      expect(manifest.peerDependencies?.[pkg], pkg).toBeDefined();
      expect(manifest.peerDependenciesMeta?.[pkg], pkg).toEqual({ optional: true });
    }
    expect(Object.keys(BACKEND_PACKAGES).sort()).toEqual(['lvm', 'qcow2', 'rbd']);
  });

  it('a configured backend that is not installed is a ConfigError naming the package to install', async () => {
    const { config } = loadConfig({ env: {}, overrides: { images: { type: 'qcow2' } } });
    const err = await loadBackendPackage(
      'qcow2',
      config,
      importMissing('@ephemera/backend-not-installed'),
      '@ephemera/backend-not-installed',
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).key).toBe('images.type');
    expect((err as ConfigError).message).toContain('npm install @ephemera/backend-not-installed');
  });

  it('a backend named in images.enabled is reported under that key', async () => {
    const { config } = loadConfig({ env: {}, overrides: { images: { type: 'rbd', enabled: ['lvm'] } } });
    const err = await loadBackendPackage(
      'lvm',
      config,
      importMissing('@ephemera/backend-gone'),
      '@ephemera/backend-gone',
    ).catch((e: unknown) => e);
    expect((err as ConfigError).key).toBe('images.enabled');
    expect((err as ConfigError).message).toContain('@ephemera/backend-gone');
  });

  it("an installed backend whose own dependency is missing is UNSUPPORTED with the loader's message", async () => {
    const { config } = loadConfig({ env: {}, overrides: { images: { type: 'lvm' } } });
    const err = await loadBackendPackage(
      'lvm',
      config,
      importMissing('@ephemera/some-dependency'),
      '@ephemera/backend-lvm',
    ).catch((e: unknown) => e);
    expect(err).not.toBeInstanceOf(ConfigError);
    expect(isDriverError(err, 'UNSUPPORTED')).toBe(true);
    expect((err as Error).message).toContain("'@ephemera/some-dependency'");
  });

  it('an installed backend loads', async () => {
    const { config } = loadConfig({ env: {}, overrides: { images: { type: 'lvm' } } });
    const mod = await loadBackendPackage('lvm', config);
    expect(typeof (mod as { LvmBackend?: unknown }).LvmBackend).toBe('function');
  });
});
