// qcow2 conversion from the Glance stream when qemu-img's data pass starts behind the loopback
// window: qemu-img reads every L2 table (spread through the file) before any data. 4 KiB
// clusters put one L2 table per 2 MiB of data, so a small image shows what a 1 GiB image with
// 64 KiB clusters does (its second L2 table sits at ~512 MiB).
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { diskId, patternBytes, type DiskRef, type SourceImage } from '@ephemera/image-backend';
import type { RbdBackend } from '../../src/index.js';
import { GlanceImages, newBackend, rbdLs, readDisk, stack } from '../support/stack.js';

const run = promisify(execFile);
const MiB = 1024 * 1024;
const glance = new GlanceImages();
let backend: RbdBackend;
let tmp: string;
const made: DiskRef[] = [];

beforeAll(async () => {
  // The window holds qemu-img's reads in flight (8 coroutines of 2 MiB + readahead, in any order).
  backend = await newBackend({ convertStream: { headBytes: MiB, windowBytes: 24 * MiB } });
  tmp = await mkdtemp(join(tmpdir(), 'ephemera-rbd-reopen-'));
});

afterAll(async () => {
  for (const d of made) await backend.remove(d, { busyTimeoutMs: 60_000 });
  await backend?.close();
  await glance.deleteAll();
  if (tmp) await rm(tmp, { recursive: true, force: true });
  const left = (await rbdLs(stack().ceph.pools.vms)).filter((n) => made.some((d) => n === diskId(d)));
  expect(left).toEqual([]);
});

/** `raw` as a qcow2 with 4 KiB clusters (test-side files only). */
async function spreadQcow2(raw: Uint8Array): Promise<Uint8Array> {
  const r = join(tmp, `${randomUUID()}.raw`);
  const q = join(tmp, `${randomUUID()}.qcow2`);
  await writeFile(r, raw);
  await run('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', '-o', 'cluster_size=4096', r, q], { timeout: 60_000 });
  const bytes = await readFile(q);
  await rm(r);
  await rm(q);
  return bytes;
}

describe('qcow2 from the stream, L2 tables beyond the window', () => {
  it('converts it byte-exact by downloading again from the start (one restart)', async () => {
    const raw = patternBytes(48 * MiB, 71);
    const rec = await glance.upload(await spreadQcow2(raw), 'qcow2');
    const base = glance.source(rec, { locations: [] });
    let downloads = 0;
    const src: SourceImage = {
      ...base,
      open: (o) => {
        downloads++;
        return base.open(o);
      },
    };
    const d = { instance: randomUUID(), name: 'disk' };
    made.push(d);
    const res = await backend.createFromImage(d, src);
    expect(res.reason).toContain('converted by qemu-img from the stream');
    expect(downloads).toBe(2);
    expect(Buffer.compare(Buffer.from(await readDisk(d, raw.length)), Buffer.from(raw))).toBe(0);
  });
});
