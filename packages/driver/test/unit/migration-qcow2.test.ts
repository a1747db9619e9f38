// Block migration's pure parts: the destination XML's disk paths and the progress percentage
// from job statistics that carry disk bytes.
import { describe, expect, it } from 'vitest';
import { isDriverError } from '@ephemera/driver';
import { migrationPercent, withDiskPaths } from '../../src/migration-qcow2.js';

const MiB = 1024 * 1024;
const xml = `<domain type='qemu'>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/a/instances/u1_disk/disk.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <source file="/a/it&apos;s/u1_disk.swap/disk.raw"/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <serial type='file'><source path='/a/instances/u1_disk/disk.qcow2'/></serial>
  </devices>
</domain>`;
const paths = new Map([
  ['disk', '/a/instances/u1_disk/disk.qcow2'],
  ['disk.swap', "/a/it's/u1_disk.swap/disk.raw"],
]);

describe('withDiskPaths', () => {
  it("points every disk's <source file> at the destination's copy and leaves other elements alone", () => {
    const out = withDiskPaths(xml, paths, [
      { name: 'disk', path: '/b/instances/u1_disk/disk.qcow2' },
      { name: 'disk.swap', path: '/b/x&y/u1_disk.swap/disk.raw' },
    ]);
    expect(out).toContain(`<source file='/b/instances/u1_disk/disk.qcow2'/>`);
    expect(out).toContain(`<source file="/b/x&amp;y/u1_disk.swap/disk.raw"/>`);
    expect(out).not.toContain('/a/it');
    // A <source path=...> naming the same file (not a disk) is not a disk source.
    expect(out).toContain(`<serial type='file'><source path='/a/instances/u1_disk/disk.qcow2'/></serial>`);
  });

  it('refuses a disk the source does not have, or one missing from the XML (MIGRATION_FAILED)', () => {
    for (const [p, dest] of [
      [paths, [{ name: 'disk.local', path: '/b/x' }]],
      [new Map([['disk', '/a/elsewhere/disk.qcow2']]), [{ name: 'disk', path: '/b/x' }]],
    ] as const) {
      let err: unknown;
      try {
        withDiskPaths(xml, p, [...dest]);
      } catch (e) {
        err = e;
      }
      expect(isDriverError(err, 'MIGRATION_FAILED')).toBe(true);
    }
  });
});

describe('migrationPercent', () => {
  it('uses memory only when no disk is copied (an RBD migration), as before', () => {
    expect(migrationPercent({ memTotal: 100, memRemaining: 25 }, 64 * MiB)).toBe(75);
    expect(migrationPercent({ memTotal: 100 }, 64 * MiB)).toBeUndefined();
    expect(migrationPercent({}, 64 * MiB)).toBeUndefined();
  });

  it('counts disk and memory bytes together, with the guest memory standing in before memory moves', () => {
    // Copying disks: 1 of 2 MiB done, memory (64 MiB) not started.
    const disk = migrationPercent({ diskTotal: 2 * MiB, diskRemaining: MiB }, 64 * MiB)!;
    expect(disk).toBe(Math.floor((100 * MiB) / (66 * MiB)));
    // Disks done, memory half sent: higher, never back.
    const mem = migrationPercent(
      { diskTotal: 2 * MiB, diskRemaining: 0, memTotal: 64 * MiB, memRemaining: 32 * MiB },
      64 * MiB,
    )!;
    expect(mem).toBe(Math.floor((100 * 34 * MiB) / (66 * MiB)));
    expect(mem).toBeGreaterThan(disk);
    expect(
      migrationPercent({ diskTotal: 2 * MiB, diskRemaining: 0, memTotal: 64 * MiB, memRemaining: 0 }, 64 * MiB),
    ).toBe(99);
  });
});
