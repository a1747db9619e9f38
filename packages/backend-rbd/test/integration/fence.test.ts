// Evacuation's storage side (issue 19.5): fencing the clients that hold a disk (`fenceClients`:
// `ceph osd blocklist add` of its watchers and lock owners) and annotations recorded on the disk
// (image metadata, what another host reads to rebuild an instance). Real Ceph of the dev stack.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '@ephemera/ceph-rbd-napi';
import { MAX_ANNOTATION_BYTES, diskId, expectImageBackendError, type DiskRef } from '@ephemera/image-backend';
import { cephCli } from '@ephemera/testkit';
import type { RbdBackend } from '../../src/index.js';
import type { RbdOps } from '../../src/rbd-ops.js';
import { newBackend, stack } from '../support/stack.js';

const MiB = 1024 * 1024;
let backend: RbdBackend;
const made: DiskRef[] = [];
const fencedAddrs: string[] = [];

beforeAll(async () => {
  backend = await newBackend();
});

afterAll(async () => {
  // Disks first: removing one whose lock a fenced client holds breaks the lock, which blocklists
  // that client again; then the entries go.
  for (const d of made) await backend.remove(d, { busyTimeoutMs: 60_000 }).catch(() => undefined);
  for (const a of fencedAddrs) await cephCli('admin', ['ceph', 'osd', 'blocklist', 'rm', a]).catch(() => undefined);
  await backend?.close();
});

function newDisk(): DiskRef {
  const d = { instance: randomUUID(), name: 'disk' };
  made.push(d);
  return d;
}

const blocklisted = async (): Promise<string> => cephCli('admin', ['ceph', 'osd', 'blocklist', 'ls']);

describe('RBD fenceClients', () => {
  it("blocklists the disk's watcher and lock owner, after which that client cannot write; nothing to fence on an idle disk", async () => {
    const d = newDisk();
    await backend.createBlank(d, 8 * MiB, { owner: { hostId: 'fence-host', version: '1.0.0' } });
    expect(await backend.fenceClients(d)).toEqual([]);
    const a = stack().ceph.users.admin;
    const cluster = await connect({
      confPath: a.confPath,
      clientId: a.id,
      keyringPath: a.keyringPath,
      timeoutMs: 20_000,
    });
    try {
      const io = await cluster.openIoCtx('vms');
      const img = await io.open(diskId(d));
      await img.write(0, new Uint8Array(512).fill(1)); // the exclusive lock, as a writing QEMU holds it
      const before = await backend.diskClients(d);
      const addr = before.find((c) => c.kind === 'lock-owner')!.address;
      expect(before.every((c) => !c.blocklisted)).toBe(true);

      const fenced = await backend.fenceClients(d);
      fencedAddrs.push(addr.replace(/^v[12]:/, ''));
      expect(fenced.map((c) => [c.kind, c.address, c.blocklisted]).sort()).toEqual(
        before.map((c) => [c.kind, c.address, true]).sort(),
      );
      expect(await blocklisted()).toContain(addr.replace(/^v[12]:/, ''));
      // Fenced means it: the old client's next write fails instead of reaching the disk.
      await expect(img.write(512, new Uint8Array(512).fill(2))).rejects.toThrow();
      expect((await backend.diskClients(d)).every((c) => c.blocklisted)).toBe(true);
      // Again: nothing left to fence.
      expect(await backend.fenceClients(d)).toEqual([]);
      await img.close().catch(() => undefined);
      await io.close().catch(() => undefined);
    } finally {
      await cluster.close().catch(() => undefined);
    }
    await expectImageBackendError(backend.fenceClients(newDisk()), 'NOT_FOUND');
  });

  it('never fences a client of its own process: another backend here holding the disk stays usable', async () => {
    const d = newDisk();
    await backend.createBlank(d, 8 * MiB);
    const other = await newBackend();
    try {
      const ops = (other as unknown as { ops: RbdOps }).ops;
      await ops.withImage(diskId(d), {}, async (img) => {
        await img.write(0, new Uint8Array(512).fill(2)); // its exclusive lock and watch
        const before = await backend.diskClients(d);
        expect(before.length).toBeGreaterThan(0);
        // Blocklisting itself would fail every later operation of this process (ESHUTDOWN).
        expect(await backend.fenceClients(d)).toEqual([]);
        await (backend as unknown as { ops: RbdOps }).ops.evictWatchers(diskId(d));
        // Only this process's addresses: other test files blocklist killed qemu-imgs meanwhile.
        const after = await blocklisted();
        for (const c of before) expect(after).not.toContain(c.address.replace(/^v[12]:/, ''));
        await img.write(512, new Uint8Array(512).fill(3));
      });
      expect((await backend.diskClients(d)).every((c) => !c.blocklisted)).toBe(true);
    } finally {
      await other.close();
    }
  });
});

describe('RBD annotations', () => {
  it('records, replaces and reads back an annotation in the image metadata; bad keys/values change nothing', async () => {
    const d = newDisk();
    await backend.createBlank(d, 8 * MiB);
    expect(await backend.getAnnotation(d, 'instance')).toBeNull();
    await backend.setAnnotation(d, 'instance', '{"v":1}');
    await backend.setAnnotation(d, 'instance', '{"v":2,"name":"é"}');
    expect(await backend.getAnnotation(d, 'instance')).toBe('{"v":2,"name":"é"}');
    // Stored with the image (another host's client reads it): `rbd image-meta get`.
    const out = await cephCli('admin', ['rbd', 'image-meta', 'get', `vms/${diskId(d)}`, 'ephemera.note.instance']);
    expect(out.trim()).toBe('{"v":2,"name":"é"}');
    await expectImageBackendError(backend.setAnnotation(d, 'Bad Key', 'x'), 'INVALID_ARGUMENT');
    await expectImageBackendError(
      backend.setAnnotation(d, 'instance', 'x'.repeat(MAX_ANNOTATION_BYTES + 1)),
      'INVALID_ARGUMENT',
    );
    await expectImageBackendError(backend.getAnnotation(d, '../owner'), 'INVALID_ARGUMENT');
    expect(await backend.getAnnotation(d, 'instance')).toBe('{"v":2,"name":"é"}');
    await expectImageBackendError(backend.getAnnotation(newDisk(), 'instance'), 'NOT_FOUND');
    await expectImageBackendError(backend.setAnnotation(newDisk(), 'instance', 'x'), 'NOT_FOUND');
  });
});
