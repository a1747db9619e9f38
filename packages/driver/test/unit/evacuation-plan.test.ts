// Evacuation's pure decisions (issue 19.5): which instance may be taken from which host, and the
// definition recorded on the root disk that the evacuating host rebuilds the domain from.
import { describe, expect, it } from 'vitest';
import type { DiskInfo } from '@ephemera/image-backend';
import { isDriverError, type DriverErrorCode } from '../../src/errors.js';
import { libvirtAnswers } from '../../src/evacuation.js';
import { evacuationPlan, fencedAddresses, formatInstanceSpec, parseInstanceSpec } from '../../src/instance-spec.js';
import type { InstanceRecord } from '../../src/types.js';

const U = '5f0c1c8e-3f7a-4d2b-9a51-0e2b7c9d4a11';
const disk = (name: string, hostId: string | null, backend = 'rbd'): { backend: string; disk: DiskInfo } => ({
  backend,
  disk: {
    id: `${U}_${name}`,
    disk: { instance: U, name },
    sizeBytes: 1 << 20,
    format: 'raw',
    owner: hostId ? { hostId, instance: U, disk: name, createdAt: '2026-12-02T10:00:00.000Z', version: '1.0.0' } : null,
  } as DiskInfo,
});
const facts = (disks: { backend: string; disk: DiskInfo }[], fromHost = 'host-b') => ({
  instance: U,
  fromHost,
  thisHost: 'host-a',
  disks,
  localBackends: ['lvm', 'qcow2'],
});
const refusal = (fn: () => unknown, code: DriverErrorCode, text: RegExp): void => {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(isDriverError(err, code), String(err)).toBe(true);
  expect((err as Error).message).toMatch(text);
};

describe('evacuationPlan', () => {
  it("takes an instance whose disks are all the dead host's, in one shared backend", () => {
    const plan = evacuationPlan(facts([disk('disk', 'host-b'), disk('disk.swap', 'host-b')]));
    expect(plan.backend).toBe('rbd');
    expect(plan.disks.map((d) => d.disk.name)).toEqual(['disk', 'disk.swap']);
  });

  it('refuses local disks (LVM, qcow2) as UNSUPPORTED, saying they died with the host', () => {
    refusal(
      () => evacuationPlan(facts([disk('disk', 'host-b', 'lvm')])),
      'UNSUPPORTED',
      /on lvm: its disks are local to host host-b/,
    );
    refusal(() => evacuationPlan(facts([disk('disk', 'host-b', 'qcow2')])), 'UNSUPPORTED', /on qcow2/);
  });

  it("refuses disks that are not the named host's (another host's, or without owner record), naming each", () => {
    refusal(
      () => evacuationPlan(facts([disk('disk', 'host-b'), disk('disk.local', 'host-c')])),
      'INSTANCE_STATE',
      new RegExp(`${U}_disk.local \\(owned by host-c\\)`),
    );
    refusal(() => evacuationPlan(facts([disk('disk', null)])), 'INSTANCE_STATE', /no owner record/);
    // Already this host's (an evacuation that completed): not the dead host's any more.
    refusal(() => evacuationPlan(facts([disk('disk', 'host-a')])), 'INSTANCE_STATE', /owned by host-a/);
  });

  it('refuses no disks (NOT_FOUND), this host as the source, bad ids, and disks in two backends', () => {
    refusal(() => evacuationPlan(facts([])), 'INSTANCE_NOT_FOUND', /no backend holds a disk/);
    refusal(() => evacuationPlan(facts([disk('disk', 'host-a')], 'host-a')), 'INVALID_ARGUMENT', /is this host/);
    refusal(() => evacuationPlan(facts([disk('disk', 'host-b')], 'bad host')), 'INVALID_ARGUMENT', /not a host id/);
    refusal(() => evacuationPlan({ ...facts([]), instance: 'nope' }), 'INVALID_ARGUMENT', /not an instance UUID/);
    refusal(
      () => evacuationPlan({ ...facts([disk('disk', 'host-b'), disk('disk.local', 'host-b', 'ceph2')]) }),
      'INSTANCE_STATE',
      /several backends/,
    );
  });

  it('fencedAddresses lists each address once, without messenger prefix', () => {
    const c = (kind: 'watcher' | 'lock-owner', address: string) => ({
      kind,
      address,
      client: 'client.1',
      blocklisted: true,
    });
    expect(
      fencedAddresses([
        c('watcher', '127.0.0.1:0/5'),
        c('lock-owner', 'v1:127.0.0.1:0/5'),
        c('watcher', '127.0.0.1:0/7'),
      ]),
    ).toEqual(['127.0.0.1:0/5', '127.0.0.1:0/7']);
  });
});

describe('the definition recorded on the root disk', () => {
  const rec: Omit<InstanceRecord, 'consolePath' | 'domainName'> = {
    uuid: U,
    name: 'web-1',
    imageId: '0b6e2d3c-1f6a-4f9e-9a57-3c2f2a7e9d10',
    backend: 'rbd',
    flavor: {
      name: 'tiny',
      vcpus: 2,
      memoryMiB: 128,
      rootGiB: 1,
      swapMiB: 8,
      extraSpecs: { 'quota:disk_total_iops_sec': '500' },
    },
    disks: [
      { name: 'disk', target: 'vda', sizeBytes: 1 << 30 },
      { name: 'disk.swap', target: 'vdb', sizeBytes: 8 << 20 },
    ],
    createdAt: '2026-12-02T10:00:00.000Z',
    rootDisk: {
      method: 'cloned',
      durationMs: 12,
      sizeBytes: 1 << 30,
      plan: { method: 'clone', handler: 'rbd', location: 'rbd://x', declined: [] },
    },
  };

  it('round-trips the record and the domain options (what evacuation rebuilds the domain from)', () => {
    const domain = { interfaces: [{ type: 'user' as const, model: 'virtio' as const }], machine: 'q35' };
    const spec = parseInstanceSpec(formatInstanceSpec(rec, domain), U.toUpperCase());
    expect(spec).toEqual({ v: 1, ...rec, domain });
    expect(parseInstanceSpec(formatInstanceSpec(rec), U)).not.toHaveProperty('domain');
  });

  it('an encrypted instance is recorded as such and refused with UNSUPPORTED (its key is with the dead host)', () => {
    const encryption = { format: 'luks' as const, secretUuid: U, keyProvider: 'file', keyId: U };
    const text = formatInstanceSpec({ ...rec, encryption }, undefined);
    expect(JSON.parse(text)).toMatchObject({ encrypted: true });
    // The recorded definition names no key, secret or provider.
    expect(text).not.toContain('secretUuid');
    expect(text).not.toContain('keyProvider');
    refusal(() => parseInstanceSpec(text, U), 'UNSUPPORTED', /encrypted disks \(capability encryption\)/);
  });

  it('refuses a missing, damaged, foreign or other-version definition with INSTANCE_STATE', () => {
    refusal(() => parseInstanceSpec(null, U), 'INSTANCE_STATE', /carries no recorded definition/);
    refusal(() => parseInstanceSpec('{not json', U), 'INSTANCE_STATE', /is not JSON/);
    const good = JSON.parse(formatInstanceSpec(rec));
    const bad = (patch: Record<string, unknown>) => JSON.stringify({ ...good, ...patch });
    refusal(() => parseInstanceSpec(bad({ v: 2 }), U), 'INSTANCE_STATE', /format version 2/);
    refusal(
      () => parseInstanceSpec(bad({ uuid: '0b6e2d3c-1f6a-4f9e-9a57-3c2f2a7e9d10' }), U),
      'INSTANCE_STATE',
      /another instance/,
    );
    refusal(
      () => parseInstanceSpec(bad({ flavor: { vcpus: 0, memoryMiB: 64, rootGiB: 0 } }), U),
      'INSTANCE_STATE',
      /flavor/,
    );
    refusal(() => parseInstanceSpec(bad({ disks: [] }), U), 'INSTANCE_STATE', /disk list/);
    refusal(() => parseInstanceSpec(bad({ domain: 'x' }), U), 'INSTANCE_STATE', /domain options/);
  });
});

describe('libvirtAnswers (is the source host alive?)', () => {
  it('answers for a libvirt that accepts a connection, not for a socket nobody listens on', async () => {
    expect(await libvirtAnswers('test:///default', 5_000)).toEqual({ answers: true });
    const dead = await libvirtAnswers('qemu+unix:///system?socket=/nonexistent/ephemera-dead-host/libvirt-sock', 5_000);
    expect(dead.answers).toBe(false);
    expect(dead.error).toMatch(/libvirt-sock|connect/i);
  });
});
