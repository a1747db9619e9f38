// Ownership on RBD beyond the conformance suite (issue 18): who has a disk open (diskClients,
// with the cluster's blocklist), handing a disk over while it is open, and a Busy error whose
// advice cannot hurt a live host. Real Ceph of the dev stack.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type Cluster } from '@ephemera/ceph-rbd-napi';
import { diskId, expectImageBackendError, type DiskRef } from '@ephemera/image-backend';
import { cephCli } from '@ephemera/testkit';
import type { RbdBackend } from '../../src/index.js';
import { newBackend, stack } from '../support/stack.js';

const MiB = 1024 * 1024;
const OWNER = { hostId: 'rbd-owner-host', version: '1.0.0' };
let backend: RbdBackend;
const made: DiskRef[] = [];
const fencedAddrs: string[] = [];

/** A separate admin connection holding the disk open (a watch, as a running QEMU would). */
async function watcherOf(d: DiskRef): Promise<{ cluster: Cluster; close(): Promise<void> }> {
  const a = stack().ceph.users.admin;
  const cluster = await connect({
    confPath: a.confPath,
    clientId: a.id,
    keyringPath: a.keyringPath,
    timeoutMs: 20_000,
  });
  const io = await cluster.openIoCtx('vms');
  const img = await io.open(diskId(d));
  await img.write(0, new Uint8Array(512)); // takes the exclusive lock, as a writing QEMU does
  return {
    cluster,
    async close() {
      await img.close().catch(() => undefined);
      await io.close().catch(() => undefined);
      await cluster.close().catch(() => undefined);
    },
  };
}

beforeAll(async () => {
  backend = await newBackend();
});

afterAll(async () => {
  // Disks first: removing one whose lock a fenced client held breaks the lock, which blocklists
  // that client again (for an hour); then the entries go.
  for (const d of made) await backend.remove(d, { busyTimeoutMs: 60_000 }).catch(() => undefined);
  await backend?.close();
  for (const a of fencedAddrs) await cephCli('admin', ['ceph', 'osd', 'blocklist', 'rm', a]).catch(() => undefined);
  // The cluster's blocklist is shared by every test: a fenced address must not outlive this file.
  const left = await cephCli('admin', ['ceph', 'osd', 'blocklist', 'ls']);
  expect(fencedAddrs.filter((a) => left.includes(a.replace(/^v[12]:/, '')))).toEqual([]);
});

function newDisk(): DiskRef {
  const d = { instance: randomUUID(), name: 'disk' };
  made.push(d);
  return d;
}

describe('RBD ownership with clients', () => {
  it('a Busy error on an owned disk names the owning host and advises against blocklisting it while it lives', async () => {
    const d = newDisk();
    await backend.createBlank(d, 8 * MiB, { owner: OWNER });
    const w = await watcherOf(d);
    try {
      const err = await expectImageBackendError(backend.remove(d, { busyTimeoutMs: 1_000 }), 'BUSY');
      expect(err.message).toContain(`owned by Ephemera host ${OWNER.hostId} (instance ${d.instance})`);
      expect(err.message).toContain(`Do not blocklist it while host ${OWNER.hostId} is alive`);
      expect(err.message).not.toMatch(/^[^.]*\. If no such client is alive/);
    } finally {
      await w.close();
    }
  });

  it('diskClients lists the watcher (not blocklisted); setOwner hands the disk over while it is open', async () => {
    const d = newDisk();
    await backend.createBlank(d, 8 * MiB, { owner: OWNER });
    expect(await backend.diskClients(d)).toEqual([]);
    const w = await watcherOf(d);
    try {
      const clients = await backend.diskClients(d);
      expect(clients.filter((c) => c.kind === 'lock-owner').map((c) => c.blocklisted)).toEqual([false]);
      expect(clients.filter((c) => c.kind === 'watcher')).toEqual([
        expect.objectContaining({
          kind: 'watcher',
          blocklisted: false,
          client: expect.stringMatching(/^client\.\d+$/),
        }),
      ]);
      const moved = await backend.setOwner(d, { hostId: 'rbd-other-host', version: '1.0.1' });
      expect(moved.hostId).toBe('rbd-other-host');
      expect((await backend.getOwner(d))?.hostId).toBe('rbd-other-host');
      // Fenced: the same client is reported blocklisted, so it no longer counts as live.
      const addr = clients.find((c) => c.kind === 'watcher')!.address;
      fencedAddrs.push(addr);
      await cephCli('admin', ['ceph', 'osd', 'blocklist', 'add', addr, '60']);
      try {
        // The OSD may drop the fenced watch at once; the lock owner stays listed, fenced.
        const after = await backend.diskClients(d);
        expect(after.filter((c) => c.address === addr).map((c) => [c.kind, c.blocklisted])).toContainEqual([
          'lock-owner',
          true,
        ]);
        expect(after.filter((c) => c.address === addr).every((c) => c.blocklisted)).toBe(true);
      } finally {
        await cephCli('admin', ['ceph', 'osd', 'blocklist', 'rm', addr]);
      }
    } finally {
      await w.close();
    }
    await expectImageBackendError(backend.diskClients(newDisk()), 'NOT_FOUND');
  });
});
