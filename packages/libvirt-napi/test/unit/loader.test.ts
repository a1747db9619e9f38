import { describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LibvirtLoadError } from '@ephemera/libvirt-napi';
import { defaultAddonPath, loadAddon } from '../../src/native.js';

describe('addon loader', () => {
  it('resolves build/Release/ephemera_libvirt.node next to the package and loads it', () => {
    const path = defaultAddonPath();
    expect(path).toMatch(/packages\/libvirt-napi\/build\/Release\/ephemera_libvirt\.node$/);
    expect(existsSync(path)).toBe(true);
    const b = loadAddon(path);
    expect(b.initOk).toBe(true);
    expect(b.getVersion()).toBeGreaterThanOrEqual(9_000_000);
  });

  it('fails with an actionable error naming the Debian packages and the original cause', () => {
    const path = '/nonexistent/build/Release/ephemera_libvirt.node';
    let caught: unknown;
    try {
      loadAddon(path);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(LibvirtLoadError);
    const err = caught as LibvirtLoadError;
    expect(err.path).toBe(path);
    expect(err.message).toContain(path);
    expect(err.message).toContain('libvirt-dev');
    expect(err.message).toContain('libvirt0');
    expect(err.message).toContain('npm rebuild @ephemera/libvirt-napi');
    expect(err.message).toMatch(/Cannot find module/);
    expect((err.cause as Error).message).toMatch(/Cannot find module/);
  });

  it('reports a file that is not a loadable addon with the dlopen message', () => {
    const dir = mkdtempSync(join(tmpdir(), 'libvirt-napi-'));
    const path = join(dir, 'ephemera_libvirt.node');
    writeFileSync(path, 'not an ELF object '.repeat(32));
    try {
      expect(() => loadAddon(path)).toThrow(/invalid ELF header[\s\S]*libvirt-dev/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
