import { mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isImageBackendError, patternBytes, sourceImageFromBytes } from '@ephemera/image-backend';
import { DirectoryBackend } from '../src/index.js';

// What the conformance suite cannot know about this backend: file names, sparseness,
// crash leftovers, foreign files.
let directory: string;
let backend: DirectoryBackend;
beforeAll(async () => {
  directory = await mkdtemp(join(tmpdir(), 'ephemera-dir-backend-unit-'));
  backend = await DirectoryBackend.create({ directory });
});
afterAll(async () => {
  await rm(directory, { recursive: true, force: true });
});

const newDisk = (name = 'disk') => ({ instance: globalThis.crypto.randomUUID(), name });

describe('DirectoryBackend', () => {
  it('needs an absolute directory', () => {
    expect(() => new DirectoryBackend({ directory: 'relative/dir' })).toThrow(/absolute path/);
  });

  it('stores a disk as <instance>_<name>.raw, sparse beyond the image data', async () => {
    const disk = newDisk();
    const bytes = patternBytes(256 * 1024);
    const res = await backend.createFromImage(disk, sourceImageFromBytes(bytes), { sizeBytes: 1024 ** 3 });
    expect(res).toMatchObject({ method: 'imported', bytesWritten: bytes.length, sizeBytes: 1024 ** 3 });
    expect(res.reason).toMatch(/cannot clone/);
    const path = join(directory, `${disk.instance}_disk.raw`);
    expect(backend.pathOf(disk)).toBe(path);
    const st = await stat(path);
    expect(st.size).toBe(1024 ** 3);
    expect(st.blocks * 512).toBeLessThan(16 * 1024 * 1024); // allocated: about the image data only
    expect(await backend.diskSource(disk)).toEqual({ type: 'file', path, format: 'raw' });
    expect(await backend.remove(disk)).toBe(true);
  });

  it('refuses non-raw images (it does not convert) and creates nothing', async () => {
    const disk = newDisk();
    const err = await backend
      .createFromImage(disk, sourceImageFromBytes(patternBytes(4096), { diskFormat: 'qcow2' }))
      .catch((e: unknown) => e);
    expect(isImageBackendError(err, 'INVALID_ARGUMENT')).toBe(true);
    expect(await backend.exists(disk)).toBe(false);
  });

  it('keeps snapshots beside the disk and removes them with it', async () => {
    const disk = newDisk();
    await backend.createFromImage(disk, sourceImageFromBytes(patternBytes(64 * 1024)));
    await backend.createSnapshot(disk, 'before');
    expect(await readdir(directory)).toContain(`${disk.instance}_disk@before.raw`);
    expect((await backend.list({ instance: disk.instance })).map((d) => d.id)).toEqual([`${disk.instance}_disk`]);
    expect(await backend.remove(disk)).toBe(true);
    expect((await readdir(directory)).filter((f) => f.startsWith(disk.instance))).toEqual([]);
  });

  it('ignores foreign files and cleans up what a crashed create left', async () => {
    await writeFile(join(directory, 'notes.txt'), 'not a disk');
    await writeFile(join(directory, 'not-a-uuid_disk.raw'), '');
    const leftover = `.${globalThis.crypto.randomUUID()}_disk.${globalThis.crypto.randomUUID()}.part`;
    await writeFile(join(directory, leftover), 'half an image');
    expect(await backend.list()).toEqual([]);
    expect(await backend.cleanupTemporaryFiles()).toBe(1);
    expect(await readdir(directory)).not.toContain(leftover);
  });
});
