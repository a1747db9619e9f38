import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { libraryVersions, loadAddon, NativeLoadError } from '@ephemera/ceph-rbd-napi';
import { describeLoadFailure } from '../../src/native.js';

const dir = mkdtempSync(join(tmpdir(), 'rbd-loader-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('loading the native addon', () => {
  it('a missing build names the -dev packages and keeps the original error', () => {
    const path = join(dir, 'nope', 'ceph_rbd_napi.node');
    let err: unknown;
    try {
      loadAddon(path);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(NativeLoadError);
    const e = err as NativeLoadError;
    expect(e.reason).toBe('build-missing');
    expect(e.message).toContain('librbd-dev librados-dev');
    expect(e.message).toContain(path);
    expect(e.message).toMatch(/Original error: .*Cannot find module/);
  });

  it('a broken build (not a loadable object) names the runtime and -dev packages', () => {
    const path = join(dir, 'broken.node');
    writeFileSync(path, 'not an ELF file');
    let err: unknown;
    try {
      loadAddon(path);
    } catch (e) {
      err = e;
    }
    const e = err as NativeLoadError;
    expect(e).toBeInstanceOf(NativeLoadError);
    expect(e.reason).toBe('load-failed');
    expect(e.message).toContain('librbd1 librados2');
    expect(e.message).toContain('librbd-dev librados-dev');
    expect(e.message).toMatch(/Original error: .*(invalid ELF header|file too short)/);
  });

  it("a missing shared library (dlopen's message) names librbd1 librados2", () => {
    const dlopen = new Error('librbd.so.1: cannot open shared object file: No such file or directory');
    const e = describeLoadFailure('/x/build/Release/ceph_rbd_napi.node', true, dlopen);
    expect(e.reason).toBe('library-missing');
    expect(e.message).toContain('librbd1 librados2');
    expect(e.message).toContain(dlopen.message);
    expect(e.cause).toBe(dlopen);
  });

  it('the real build loads and reports the system librbd/librados versions', () => {
    const v = libraryVersions();
    expect(v.librbd).toMatch(/^1\.\d+\.\d+$/);
    expect(v.librados).toMatch(/^\d+\.\d+\.\d+$/);
  });
});
