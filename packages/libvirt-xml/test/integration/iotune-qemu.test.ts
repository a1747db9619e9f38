import { randomUUID } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { type DomainSpec, type IoTune, domainXml, iotuneFromFlavor } from '@ephemera/libvirt-xml';
import { useVirsh } from './virsh.js';

// libvirt's schema accepts <iotune> combinations that QEMU refuses when the domain starts, so
// the generated <iotune> is checked by actually starting a (transient, diskless-boot) domain on
// the stack's libvirtd/QEMU. Every domain is destroyed afterwards.
const lv = useVirsh('ephemera-iotune-', 'destroy');
const { virsh } = lv;
const started = lv.domains;

/** `virsh blkdeviotune` as numbers (what QEMU reports for the running disk). */
async function liveIotune(name: string, dev: string): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const line of (await virsh('blkdeviotune', name, dev)).split('\n')) {
    const m = /^\s*(\w+)\s*:\s*(\d+)\s*$/.exec(line);
    if (m) out[m[1]!] = Number(m[2]);
  }
  return out;
}

beforeAll(async () => {
  for (const d of ['a.raw', 'b.raw']) await writeFile(join(lv.dir, d), Buffer.alloc(1 << 20));
});

// Every key kind the API allows, split over two disks because total and read/write exclude each other.
const tuneA: IoTune = {
  ...iotuneFromFlavor({
    'quota:disk_read_bytes_sec': '10485760',
    'quota:disk_read_bytes_sec_max': '20971520',
    'quota:disk_write_bytes_sec': '5242880',
    'quota:disk_write_bytes_sec_max': '10485760',
    'quota:disk_total_iops_sec': '500',
    'quota:disk_total_iops_sec_max': '1000',
    'quota:disk_size_iops_sec': '4096',
  }),
  readBytesSecMaxLength: 5,
  writeBytesSecMaxLength: 3,
  totalIopsSecMaxLength: 10,
};
const tuneB: IoTune = {
  ...iotuneFromFlavor({
    'quota:disk_total_bytes_sec': '104857600',
    'quota:disk_total_bytes_sec_max': '209715200',
    'quota:disk_read_iops_sec': '200',
    'quota:disk_read_iops_sec_max': '400',
    'quota:disk_write_iops_sec': '100',
    'quota:disk_write_iops_sec_max': '100',
    'quota:disk_size_iops_sec': '512',
  }),
  totalBytesSecMaxLength: 2,
  readIopsSecMaxLength: 4,
  writeIopsSecMaxLength: 1,
};

function spec(): DomainSpec {
  const uuid = randomUUID();
  return {
    type: lv.stack.libvirt.domainType,
    name: `ephemera-iotune-${uuid.slice(0, 8)}`,
    uuid,
    memoryMiB: 64,
    vcpus: 1,
    memballoon: false,
    serialLogPath: join(lv.dir, `${uuid}.log`),
    disks: [
      {
        source: { type: 'file', path: join(lv.dir, 'a.raw'), format: 'raw' },
        target: { dev: 'vda', bus: 'virtio' },
        iotune: tuneA,
      },
      {
        source: { type: 'file', path: join(lv.dir, 'b.raw'), format: 'raw' },
        target: { dev: 'vdb', bus: 'virtio' },
        iotune: tuneB,
      },
    ],
  };
}

async function create(s: DomainSpec, xml: string): Promise<void> {
  const file = join(lv.dir, `${s.uuid}.xml`);
  await writeFile(file, xml);
  started.add(s.name);
  await virsh('create', file);
}

describe('generated <iotune> under the real QEMU', () => {
  it('QEMU starts a domain with every kind of limit, and applies them as given', async () => {
    const s = spec();
    await create(s, domainXml(s));
    expect((await virsh('domstate', s.name)).trim()).toBe('running');
    expect(await liveIotune(s.name, 'vda')).toMatchObject({
      read_bytes_sec: 10485760,
      read_bytes_sec_max: 20971520,
      read_bytes_sec_max_length: 5,
      write_bytes_sec: 5242880,
      write_bytes_sec_max: 10485760,
      write_bytes_sec_max_length: 3,
      total_iops_sec: 500,
      total_iops_sec_max: 1000,
      total_iops_sec_max_length: 10,
      size_iops_sec: 4096,
      total_bytes_sec: 0,
    });
    expect(await liveIotune(s.name, 'vdb')).toMatchObject({
      total_bytes_sec: 104857600,
      total_bytes_sec_max: 209715200,
      total_bytes_sec_max_length: 2,
      read_iops_sec: 200,
      read_iops_sec_max: 400,
      read_iops_sec_max_length: 4,
      write_iops_sec: 100,
      write_iops_sec_max: 100,
      write_iops_sec_max_length: 1,
      size_iops_sec: 512,
      read_bytes_sec: 0,
    });
    await virsh('destroy', s.name);
    started.delete(s.name);
  });

  // The XML edited behind the builders' back: what they now refuse up front, QEMU refuses at start.
  const broken: [string, string, string, RegExp][] = [
    [
      'a max without its base',
      '<read_bytes_sec>10485760</read_bytes_sec>',
      '',
      /bps_max\/iops_max require corresponding bps\/iops values/,
    ],
    [
      'a max below its base',
      '<total_iops_sec_max>1000</total_iops_sec_max>',
      '<total_iops_sec_max>499</total_iops_sec_max>',
      /bps_max\/iops_max cannot be lower than bps\/iops/,
    ],
  ];
  it.each(broken)('QEMU does refuse %s', async (_what, from, to, re) => {
    const s = spec();
    const xml = domainXml(s);
    const edited = xml.replace(from, to);
    expect(edited).not.toBe(xml);
    await expect(create(s, edited)).rejects.toThrow(re);
    await expect(virsh('domstate', s.name)).rejects.toThrow(/failed to get domain|Domain not found/);
    started.delete(s.name);
  });
});
