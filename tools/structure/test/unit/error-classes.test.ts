// Issue 17 item 4: an error class name says which class it is, across every package, so logs
// and `err.name` checks can't confuse two packages' errors.
import * as backendLvm from '@ephemera/backend-lvm';
import * as backendQcow2 from '@ephemera/backend-qcow2';
import * as backendRbd from '@ephemera/backend-rbd';
import * as cephRbdNapi from '@ephemera/ceph-rbd-napi';
import * as cli from '@ephemera/cli';
import * as driver from '@ephemera/driver';
import * as glance from '@ephemera/glance';
import * as imageBackend from '@ephemera/image-backend';
import * as libvirtNapi from '@ephemera/libvirt-napi';
import * as libvirtXml from '@ephemera/libvirt-xml';
import * as qemuImgWrapper from '@ephemera/qemu-img-wrapper';
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const repo = join(dirname(fileURLToPath(import.meta.url)), '../../../..');

const entries: Record<string, Record<string, unknown>> = {
  'backend-lvm': backendLvm,
  'backend-qcow2': backendQcow2,
  'backend-rbd': backendRbd,
  'ceph-rbd-napi': cephRbdNapi,
  cli,
  driver,
  glance,
  'image-backend': imageBackend,
  'libvirt-napi': libvirtNapi,
  'libvirt-xml': libvirtXml,
  'qemu-img-wrapper': qemuImgWrapper,
};

function isErrorClass(v: unknown): v is new (...args: never[]) => Error {
  return typeof v === 'function' && v.prototype instanceof Error;
}

describe('exported error classes', () => {
  it('every package is imported here', () => {
    expect(Object.keys(entries).sort()).toEqual(readdirSync(join(repo, 'packages')).sort());
  });

  it('no two exported error classes share a name', () => {
    // A class re-exported by another package is the same class: count each class once.
    const where = new Map<new (...args: never[]) => Error, string[]>();
    for (const [pkg, mod] of Object.entries(entries))
      for (const [exported, value] of Object.entries(mod))
        if (isErrorClass(value)) where.set(value, [...(where.get(value) ?? []), `${pkg}.${exported}`]);
    expect(where.size).toBeGreaterThan(20);
    const byName = new Map<string, string[]>();
    for (const [cls, places] of where) byName.set(cls.name, [...(byName.get(cls.name) ?? []), places.join(' = ')]);
    const shared = [...byName].filter(([, classes]) => classes.length > 1).map(([n, c]) => `${n}: ${c.join(', ')}`);
    expect(shared).toEqual([]);
  });
});
