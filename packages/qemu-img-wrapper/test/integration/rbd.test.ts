import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { cephCli, loadStack, type StackInfo } from '@ephemera/testkit';
import { QemuImg, rbdLocation, type RbdImage } from '@ephemera/qemu-img-wrapper';

const pexec = promisify(execFile);
const MiB = 1024 * 1024;

let stack: StackInfo;
let dir: string;
let key: string;
const argvs: (readonly string[])[] = [];
const q = new QemuImg({ onExec: (a) => argvs.push(a) });
const suffix = `${process.pid}-${Date.now()}`;
const images = [`qiw-conv-${suffix}`, `qiw-cancel-${suffix}`];

function target(image: string, snapshot?: string): RbdImage {
  const u = stack.ceph.users.ephemera;
  return { pool: stack.ceph.pools.vms, image, user: u.id, confPath: u.confPath, ...(snapshot ? { snapshot } : {}) };
}

async function rbdRm(image: string): Promise<void> {
  await cephCli('ephemera', ['rbd', 'snap', 'purge', `${stack.ceph.pools.vms}/${image}`]).catch(() => undefined);
  await cephCli('ephemera', ['rbd', 'rm', `${stack.ceph.pools.vms}/${image}`]).catch(() => undefined);
}

/**
 * Removes an image whose writer was killed: a killed librbd client's watch lingers until the
 * OSD times it out (~30 s), and `rbd rm` refuses while it exists. client.ephemera's
 * `profile rbd` mon cap may blocklist the dead client, which drops the watch at once.
 */
async function rbdRmAfterKill(image: string): Promise<void> {
  const spec = `${stack.ceph.pools.vms}/${image}`;
  let out: string;
  try {
    out = await cephCli('ephemera', ['rbd', 'status', spec, '--format', 'json']);
  } catch (e) {
    if ((e as { exitCode?: unknown }).exitCode === 2) return; // ENOENT: aborted before creation
    throw e;
  }
  const status = JSON.parse(out) as { watchers: { address: string }[] };
  for (const w of status.watchers) {
    await cephCli('ephemera', ['ceph', 'osd', 'blocklist', 'add', w.address, '60']);
  }
  await cephCli('ephemera', ['rbd', 'rm', spec]);
}

async function rbdExists(image: string): Promise<boolean> {
  const ls = await cephCli('ephemera', ['rbd', 'ls', stack.ceph.pools.vms]);
  return ls.split('\n').includes(image);
}

beforeAll(async () => {
  stack = loadStack();
  dir = await mkdtemp(join(tmpdir(), 'qiw-rbd-'));
  const kr = await readFile(stack.ceph.users.ephemera.keyringPath, 'utf8');
  key = /key\s*=\s*(\S+)/.exec(kr)![1]!;
});

afterAll(async () => {
  for (const i of images) await rbdRm(i);
  await rm(dir, { recursive: true, force: true });
});

describe('qemu-img against the stack Ceph cluster as client.ephemera', () => {
  test('qcow2 -> rbd (vms pool) -> local raw is byte-equal; info on RBD; no key in argv', async () => {
    const src = join(dir, 'src.qcow2');
    await q.create(src, { format: 'qcow2', size: 24 * MiB });
    await pexec('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x5a 0 3M', '-c', 'write -P 0xc3 17M 1M', src]);
    const expectedRaw = join(dir, 'expected.raw');
    await q.convert(src, expectedRaw, { targetFormat: 'raw' });

    const image = images[0]!;
    const progress: number[] = [];
    await q.convert(src, rbdLocation(target(image)), {
      targetFormat: 'raw',
      parallel: 4,
      outOfOrder: true,
      onProgress: (p) => progress.push(p),
    });
    expect(progress.at(-1)).toBe(100);
    expect(await rbdExists(image)).toBe(true);

    // Both spellings reach the image; untrusted info on a non-file image needs a format.
    for (const syntax of ['uri', 'json'] as const) {
      const info = await q.info(rbdLocation(target(image), syntax), { format: 'raw' });
      expect(info).toMatchObject({ format: 'raw', virtualSize: 24 * MiB });
    }
    await expect(q.info(rbdLocation(target(image)))).rejects.toMatchObject({ kind: 'invalid-argument' });

    // A snapshot, read back through the rbd:...@snap spelling.
    await cephCli('ephemera', ['rbd', 'snap', 'create', `${stack.ceph.pools.vms}/${image}@s1`]);
    const back = join(dir, 'back.raw');
    await q.convert(rbdLocation(target(image, 's1')), back, { sourceFormat: 'raw', targetFormat: 'raw' });
    expect((await readFile(back)).equals(await readFile(expectedRaw))).toBe(true);

    const measured = await q.measure(
      { source: rbdLocation(target(image), 'json'), format: 'raw' },
      { targetFormat: 'qcow2' },
    );
    expect(measured.required).toBeGreaterThanOrEqual(4 * MiB);

    for (const argv of argvs) for (const a of argv) expect(a).not.toContain(key);
    expect(argvs.some((a) => a.some((x) => x.startsWith('rbd:vms/')))).toBe(true);
  });

  test('cancelling a convert into RBD calls the cleanup hook, which removes the image', async () => {
    const big = join(dir, 'big.raw');
    await pexec('dd', ['if=/dev/urandom', `of=${big}`, 'bs=1M', 'count=96', 'status=none']);
    const image = images[1]!;
    const ac = new AbortController();
    const cleaned: string[] = [];
    const err = await q
      .convert(big, rbdLocation(target(image)), {
        targetFormat: 'raw',
        sparseSize: 0,
        cache: 'writethrough',
        signal: ac.signal,
        // Abort on the first progress past 0%: the target exists and is partly written.
        onProgress: (p) => {
          if (p > 0) ac.abort();
        },
        cleanup: async (t) => {
          if (typeof t === 'string' || t.type !== 'rbd') throw new Error('expected an RBD target');
          cleaned.push(t.image);
          await rbdRmAfterKill(t.image);
        },
      })
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ name: 'QemuImgError', kind: 'aborted' });
    expect(cleaned).toEqual([image]);
    expect(await rbdExists(image)).toBe(false);
  });
});
