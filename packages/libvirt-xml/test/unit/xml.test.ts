import { describe, expect, it } from 'vitest';
import {
  type DiskSpec,
  type DomainSpec,
  LibvirtXmlError,
  diskXml,
  domainXml,
  checkIoTune,
  iotuneFromFlavor,
} from '@ephemera/libvirt-xml';
import { attr, find, parseXml, validateDomains } from '../xml-tools.js';

const UUID = '6f1c8a52-3c4b-4d1e-9f6a-2b7c9d0e1f23';
const SECRET = 'a3c1e8f0-4b2d-4c6e-8f1a-0d9b7c5e3a21';

const rbd: DiskSpec = {
  source: {
    type: 'network',
    protocol: 'rbd',
    name: 'vms/6f1c8a52-3c4b-4d1e-9f6a-2b7c9d0e1f23_disk',
    hosts: [{ host: '127.0.0.1', port: 40000 }, { host: '[::1]', port: 6789 }, { host: 'mon-a.example.org' }],
    auth: { username: 'nova', secretUuid: SECRET },
    format: 'raw',
  },
  driver: { cache: 'writeback', discard: 'unmap', detectZeroes: 'unmap' },
  target: { dev: 'vda', bus: 'virtio' },
  serial: 'disk-6f1c8a52',
  bootOrder: 1,
};

const base = (disks: DiskSpec[], extra: Partial<DomainSpec> = {}): DomainSpec => ({
  type: 'qemu',
  name: 'instance-0001',
  uuid: UUID,
  memoryMiB: 128,
  vcpus: 1,
  disks,
  ...extra,
});

/** Every kind of disk the generator can produce. */
const DISKS: Record<string, DiskSpec> = {
  rbd,
  rbdNoAuthNamespace: {
    source: { type: 'network', protocol: 'rbd', name: 'vms/ns1/img', hosts: [{ host: '10.0.0.1' }] },
    target: { dev: 'vdb' },
  },
  fileQcow2: {
    source: { type: 'file', path: '/var/lib/ephemera/instances/x/disk', format: 'qcow2' },
    driver: { cache: 'none', io: 'native', discard: 'ignore' },
    target: { dev: 'vda', bus: 'virtio' },
  },
  fileRawDirectsync: {
    source: { type: 'file', path: '/tmp/a b/c.img', format: 'raw' },
    driver: { cache: 'directsync', io: 'native' },
    target: { dev: 'sda', bus: 'scsi' },
  },
  fileIoUring: {
    source: { type: 'file', path: '/x', format: 'raw' },
    driver: { cache: 'unsafe', io: 'io_uring', detectZeroes: 'on' },
    target: { dev: 'sdb', bus: 'sata' },
  },
  block: {
    source: { type: 'block', path: '/dev/loop3', format: 'raw' },
    driver: { cache: 'none', io: 'threads' },
    target: { dev: 'vdc', bus: 'virtio' },
    shareable: true,
  },
  cdrom: {
    device: 'cdrom',
    source: { type: 'file', path: '/var/lib/ephemera/instances/x/disk.config', format: 'raw' },
    target: { dev: 'hda', bus: 'ide' },
    readonly: true,
  },
  iotune: {
    source: { type: 'file', path: '/x.qcow2', format: 'qcow2' },
    target: { dev: 'vdd', bus: 'virtio' },
    iotune: {
      readBytesSec: 10_485_760,
      writeBytesSec: 5_242_880,
      totalIopsSec: 500,
      totalIopsSecMax: 1000,
      sizeIopsSec: 4096,
    },
  },
  luks: {
    source: { type: 'file', path: '/x.luks', format: 'raw', encryption: { format: 'luks', secretUuid: SECRET } },
    target: { dev: 'vde', bus: 'virtio' },
  },
  rbdLuks: {
    source: {
      type: 'network',
      protocol: 'rbd',
      name: 'vms/enc',
      hosts: [{ host: '::ffff:127.0.0.1', port: 1 }],
      auth: { username: 'client_x', secretUuid: SECRET },
      encryption: { format: 'luks', secretUuid: UUID },
    },
    target: { dev: 'vdf' },
  },
};

const full: DomainSpec = base([rbd, DISKS.cdrom!], {
  type: 'kvm',
  name: `web & db <"prod"> 'eu'`,
  os: { arch: 'x86_64', machine: 'pc' },
  features: { acpi: true, apic: true, pae: true },
  cpuMode: 'host-passthrough',
  clock: 'utc',
  onPoweroff: 'destroy',
  onReboot: 'restart',
  onCrash: 'preserve',
  emulator: '/usr/bin/qemu-system-x86_64',
  serialLogPath: '/var/lib/ephemera/instances/x/console.log',
  network: { type: 'user', mac: '52:54:00:12:34:56' },
  memballoon: false,
  metadata: {
    instanceId: UUID,
    displayName: 'web & db',
    imageId: 'c0ffee00-1111-2222-3333-444455556666',
    flavor: 'm1.tiny',
  },
});

describe('disk XML', () => {
  it('writes the rbd disk that booted on this stack (ceph.md), in libvirt order', () => {
    const d = parseXml(diskXml(rbd));
    expect(d.name).toBe('disk');
    expect(d.attrs).toEqual([
      ['type', 'network'],
      ['device', 'disk'],
    ]);
    expect(d.children.map((c) => c.name)).toEqual(['driver', 'auth', 'source', 'target', 'serial', 'boot']);
    expect(find(d, 'driver')!.attrs).toEqual([
      ['name', 'qemu'],
      ['type', 'raw'],
      ['cache', 'writeback'],
      ['discard', 'unmap'],
      ['detect_zeroes', 'unmap'],
    ]);
    expect(attr(find(d, 'auth'), 'username')).toBe('nova');
    expect(find(d, 'auth')!.children[0]!.attrs).toEqual([
      ['type', 'ceph'],
      ['uuid', SECRET],
    ]);
    const src = find(d, 'source')!;
    expect(src.attrs).toEqual([
      ['protocol', 'rbd'],
      ['name', 'vms/6f1c8a52-3c4b-4d1e-9f6a-2b7c9d0e1f23_disk'],
    ]);
    expect(src.children.map((h) => h.attrs)).toEqual([
      [
        ['name', '127.0.0.1'],
        ['port', '40000'],
      ],
      [
        ['name', '::1'],
        ['port', '6789'],
      ],
      [['name', 'mon-a.example.org']],
    ]);
    expect(find(d, 'serial')!.text).toBe('disk-6f1c8a52');
    expect(attr(find(d, 'boot'), 'order')).toBe('1');
  });

  it('writes file, block, cdrom, iotune and LUKS disks', () => {
    const f = parseXml(diskXml(DISKS.fileQcow2!));
    expect(attr(f, 'type')).toBe('file');
    expect(find(f, 'driver')!.attrs).toEqual([
      ['name', 'qemu'],
      ['type', 'qcow2'],
      ['cache', 'none'],
      ['io', 'native'],
      ['discard', 'ignore'],
    ]);
    expect(attr(find(f, 'source'), 'file')).toBe('/var/lib/ephemera/instances/x/disk');
    const b = parseXml(diskXml(DISKS.block!));
    expect(attr(find(b, 'source'), 'dev')).toBe('/dev/loop3');
    expect(find(b, 'shareable')).toBeDefined();
    const c = parseXml(diskXml(DISKS.cdrom!));
    expect(attr(c, 'device')).toBe('cdrom');
    expect(find(c, 'readonly')).toBeDefined();
    const t = find(parseXml(diskXml(DISKS.iotune!)), 'iotune')!;
    expect(t.children.map((x) => [x.name, x.text])).toEqual([
      ['read_bytes_sec', '10485760'],
      ['write_bytes_sec', '5242880'],
      ['total_iops_sec', '500'],
      ['total_iops_sec_max', '1000'],
      ['size_iops_sec', '4096'],
    ]);
    const l = parseXml(diskXml(DISKS.luks!));
    expect(l.children.map((x) => x.name)).toEqual(['driver', 'source', 'target', 'encryption']);
    expect(find(l, 'encryption')!.children[0]!.attrs).toEqual([
      ['type', 'passphrase'],
      ['uuid', SECRET],
    ]);
  });

  it('escapes markup in paths', () => {
    const xml = diskXml({ source: { type: 'file', path: `/a'b"c<d>&e` }, target: { dev: 'vda' } });
    expect(xml).toContain(`file='/a&apos;b&quot;c&lt;d&gt;&amp;e'`);
    expect(attr(find(parseXml(xml), 'source'), 'file')).toBe(`/a'b"c<d>&e`);
  });

  const refused: [string, DiskSpec, RegExp, string][] = [
    [
      'io=native without O_DIRECT cache',
      { ...DISKS.fileQcow2!, driver: { io: 'native', cache: 'writeback' } },
      /io='native' needs cache/,
      'INVALID_COMBINATION',
    ],
    [
      'io=native with default cache',
      { ...DISKS.fileQcow2!, driver: { io: 'native' } },
      /io='native'/,
      'INVALID_COMBINATION',
    ],
    [
      'auth without secret',
      { ...rbd, source: { ...(rbd.source as object), auth: { username: 'nova' } } as never },
      /required together/,
      'INVALID_COMBINATION',
    ],
    [
      'auth without username',
      { ...rbd, source: { ...(rbd.source as object), auth: { secretUuid: SECRET } } as never },
      /required together/,
      'INVALID_COMBINATION',
    ],
    [
      'auth on a file disk',
      {
        source: { type: 'file', path: '/x', auth: { username: 'a', secretUuid: SECRET } } as never,
        target: { dev: 'vda' },
      },
      /network \(rbd\) disks only/,
      'INVALID_COMBINATION',
    ],
    [
      'rbd without hosts',
      { ...rbd, source: { ...(rbd.source as object), hosts: [] } as never },
      /at least one monitor/,
      'MISSING_VALUE',
    ],
    [
      'rbd name without pool',
      { ...rbd, source: { ...(rbd.source as object), name: 'image' } as never },
      /pool\/image/,
      'INVALID_VALUE',
    ],
    [
      'rbd name with a snapshot',
      { ...rbd, source: { ...(rbd.source as object), name: 'vms/img@snap' } as never },
      /pool\/image/,
      'INVALID_VALUE',
    ],
    [
      'rbd name with a colon (qemu option injection)',
      { ...rbd, source: { ...(rbd.source as object), name: 'vms/img:conf=/etc/x' } as never },
      /pool\/image/,
      'INVALID_VALUE',
    ],
    [
      'bad host',
      { ...rbd, source: { ...(rbd.source as object), hosts: [{ host: "127.0.0.1' x='" }] } as never },
      /not an IPv4\/IPv6 address/,
      'INVALID_VALUE',
    ],
    [
      'bad IPv6',
      { ...rbd, source: { ...(rbd.source as object), hosts: [{ host: '1::2::3' }] } as never },
      /not an IPv4/,
      'INVALID_VALUE',
    ],
    [
      'bad port',
      { ...rbd, source: { ...(rbd.source as object), hosts: [{ host: '::1', port: 70000 }] } as never },
      /port: must be an integer in 1..65535/,
      'INVALID_VALUE',
    ],
    [
      'bad secret uuid',
      { ...rbd, source: { ...(rbd.source as object), auth: { username: 'nova', secretUuid: 'x' } } as never },
      /not a UUID/,
      'INVALID_VALUE',
    ],
    [
      'client. prefix in username',
      { ...rbd, source: { ...(rbd.source as object), auth: { username: 'client.nova', secretUuid: SECRET } } as never },
      /cephx user id/,
      'INVALID_VALUE',
    ],
    ['relative path', { source: { type: 'file', path: 'disk' }, target: { dev: 'vda' } }, /absolute/, 'INVALID_VALUE'],
    [
      'the root directory as a file',
      { source: { type: 'file', path: '/' }, target: { dev: 'vda' } },
      /not "\/"/,
      'INVALID_VALUE',
    ],
    [
      'the root directory as a block device',
      { source: { type: 'block', path: '/' }, target: { dev: 'vda' } },
      /not "\/"/,
      'INVALID_VALUE',
    ],
    [
      'newline in path',
      { source: { type: 'file', path: '/a\nb' }, target: { dev: 'vda' } },
      /control characters/,
      'INVALID_VALUE',
    ],
    [
      'NUL in path',
      { source: { type: 'file', path: '/a\0b' }, target: { dev: 'vda' } },
      /control characters/,
      'INVALID_VALUE',
    ],
    [
      'lone surrogate in path',
      { source: { type: 'file', path: '/a\ud800' }, target: { dev: 'vda' } },
      /invalid unicode/,
      'INVALID_VALUE',
    ],
    ['target dev', { ...rbd, target: { dev: 'vda/../' } }, /target device/, 'INVALID_VALUE'],
    ['bus', { ...rbd, target: { dev: 'vda', bus: 'pci' as never } }, /must be one of virtio/, 'INVALID_VALUE'],
    ['serial with markup', { ...rbd, serial: '<x>' }, /serial/, 'INVALID_VALUE'],
    ['boot order 0', { ...rbd, bootOrder: 0 }, /bootOrder/, 'INVALID_VALUE'],
    [
      'format contradiction',
      { source: { type: 'file', path: '/x', format: 'qcow2' }, driver: { type: 'raw' }, target: { dev: 'vda' } },
      /contradicts/,
      'INVALID_COMBINATION',
    ],
    [
      'qcow2 on a block device',
      { source: { type: 'block', path: '/dev/x', format: 'qcow2' as never }, target: { dev: 'vda' } },
      /format/,
      'INVALID_VALUE',
    ],
    [
      'total with read bytes',
      { ...rbd, iotune: { totalBytesSec: 1, readBytesSec: 2 } },
      /cannot be combined/,
      'INVALID_COMBINATION',
    ],
    ['negative limit', { ...rbd, iotune: { readIopsSec: -1 } }, /readIopsSec/, 'INVALID_VALUE'],
    ['unknown limit', { ...rbd, iotune: { foo: 1 } as never }, /unknown QoS limit/, 'INVALID_VALUE'],
    [
      'encryption format',
      {
        source: { type: 'file', path: '/x', encryption: { format: 'qcow' as never, secretUuid: SECRET } },
        target: { dev: 'vda' },
      },
      /luks/,
      'INVALID_VALUE',
    ],
  ];
  it.each(refused)('refuses %s with a typed error', (_what, spec, re, code) => {
    let err: unknown;
    try {
      diskXml(spec);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(LibvirtXmlError);
    expect((err as LibvirtXmlError).code).toBe(code);
    expect((err as Error).message).toMatch(re);
  });
});

describe('domain XML', () => {
  it('writes every part in libvirt order with the instance id in metadata', () => {
    const d = parseXml(domainXml(full));
    expect(attr(d, 'type')).toBe('kvm');
    expect(d.children.map((c) => c.name)).toEqual([
      'name',
      'uuid',
      'metadata',
      'memory',
      'vcpu',
      'os',
      'features',
      'cpu',
      'clock',
      'on_poweroff',
      'on_reboot',
      'on_crash',
      'devices',
    ]);
    expect(find(d, 'name')!.text).toBe(`web & db <"prod"> 'eu'`);
    expect(find(d, 'memory')!.text).toBe(String(128 * 1024));
    expect(find(d, 'os')!.children.map((c) => c.name)).toEqual(['type']); // per-disk boot order: no <os><boot>
    expect(find(d, 'ephemera:id')!.text).toBe(UUID);
    expect(attr(find(d, 'ephemera:instance'), 'xmlns:ephemera')).toBe('https://ephemera.dev/xmlns/libvirt/instance/1');
    expect(find(d, 'devices')!.children.map((c) => c.name)).toEqual([
      'emulator',
      'disk',
      'disk',
      'interface',
      'serial',
      'memballoon',
    ]);
    expect(attr(find(find(d, 'devices')!.children.find((c) => c.name === 'serial')!, 'source'), 'path')).toBe(
      '/var/lib/ephemera/instances/x/console.log',
    );
  });

  it('defaults to <boot dev="hd"/>, acpi+apic, utc, destroy/restart/destroy', () => {
    const d = parseXml(domainXml(base([DISKS.fileQcow2!])));
    expect(find(d, 'os')!.children.map((c) => [c.name, c.attrs])).toEqual([
      ['type', []],
      ['boot', [['dev', 'hd']]],
    ]);
    expect(find(d, 'features')!.children.map((c) => c.name)).toEqual(['acpi', 'apic']);
    expect([find(d, 'on_poweroff')!.text, find(d, 'on_reboot')!.text, find(d, 'on_crash')!.text]).toEqual([
      'destroy',
      'restart',
      'destroy',
    ]);
  });

  const refused: [string, DomainSpec, RegExp][] = [
    ['a name with /', base([], { name: 'a/b' }), /must not contain '\/'/],
    ['a name with a newline', base([], { name: 'a\nb' }), /control characters/],
    ['a name with ESC', base([], { name: 'a\u001b[31m' }), /control characters/],
    ['a blank name', base([], { name: '   ' }), /blank/],
    ['an empty name', base([], { name: '' }), /empty/],
    ['a bad uuid', base([], { uuid: 'not-a-uuid' }), /uuid/],
    ['zero memory', base([], { memoryMiB: 0 }), /memoryMiB/],
    ['fractional vcpus', base([], { vcpus: 1.5 }), /vcpus/],
    ['two disks on one target', base([DISKS.fileQcow2!, DISKS.fileQcow2!]), /used twice/],
    ['boot order and os boot', base([rbd], { os: { boot: ['hd'] } }), /cannot be used together/],
    ['duplicate boot orders', base([rbd, { ...DISKS.cdrom!, bootOrder: 1 }]), /unique/],
    ['a relative serial log', base([], { serialLogPath: 'console.log' }), /absolute/],
    ['the root directory as the emulator', base([], { emulator: '/' }), /^emulator: .*not "\/"/],
    ['the root directory as the serial log', base([], { serialLogPath: '/' }), /^serialLogPath: .*not "\/"/],
    ['a bad MAC', base([], { network: { type: 'user', mac: '52:54:00' } }), /MAC/],
    [
      'a network name with markup',
      base([], { network: { type: 'network', network: "default'/><x y='" } }),
      /network name/,
    ],
    ['a bad machine', base([], { os: { machine: 'pc"><x' } }), /machine/],
    ['metadata without a uuid', base([], { metadata: { instanceId: 'x' } }), /instanceId/],
    ['metadata with controls', base([], { metadata: { instanceId: UUID, flavor: 'a\u0007' } }), /control/],
    ['an unknown lifecycle action', base([], { onCrash: 'coredump' as never }), /onCrash/],
    [
      'a bad disk (field path names it)',
      base([DISKS.fileQcow2!, { ...rbd, target: { dev: 'x' } }]),
      /^disks\[1\]\.target\.dev/,
    ],
  ];
  it.each(refused)('refuses %s with LibvirtXmlError', (_what, spec, re) => {
    expect(() => domainXml(spec)).toThrow(LibvirtXmlError);
    expect(() => domainXml(spec)).toThrow(re);
  });
});

describe('iotuneFromFlavor', () => {
  it('maps Nova quota:disk_* extra specs and ignores other keys', () => {
    expect(
      iotuneFromFlavor({
        'quota:disk_read_bytes_sec': '1024',
        'quota:disk_total_iops_sec': 200,
        'hw:cpu_policy': 'dedicated',
        'quota:disk_write_bytes_sec': '0',
      }),
    ).toEqual({
      readBytesSec: 1024,
      totalIopsSec: 200,
      writeBytesSec: 0,
    });
  });
  it('refuses malformed values and contradictions', () => {
    expect(() => iotuneFromFlavor({ 'quota:disk_read_bytes_sec': '10MB' })).toThrow(
      /quota:disk_read_bytes_sec: expected a non-negative integer/,
    );
    expect(() => iotuneFromFlavor({ 'quota:disk_total_iops_sec': '1', 'quota:disk_read_iops_sec': '2' })).toThrow(
      /cannot be combined/,
    );
  });

  // QEMU's throttle_is_valid() refuses these at domain start although libvirt defines them.
  const refusedSpecs: [string, Record<string, string>, string, RegExp][] = [
    [
      'a read bytes max without its base',
      { 'quota:disk_read_bytes_sec_max': '2048' },
      'quota:disk_read_bytes_sec_max',
      /needs quota:disk_read_bytes_sec/,
    ],
    [
      'a write bytes max without its base',
      { 'quota:disk_write_bytes_sec_max': '2048', 'quota:disk_read_bytes_sec': '1024' },
      'quota:disk_write_bytes_sec_max',
      /needs quota:disk_write_bytes_sec/,
    ],
    [
      'a total bytes max without its base',
      { 'quota:disk_total_bytes_sec_max': '2048' },
      'quota:disk_total_bytes_sec_max',
      /needs quota:disk_total_bytes_sec/,
    ],
    [
      'a total iops max without its base',
      { 'quota:disk_total_iops_sec_max': '20' },
      'quota:disk_total_iops_sec_max',
      /needs quota:disk_total_iops_sec/,
    ],
    [
      'a read iops max without its base',
      { 'quota:disk_read_iops_sec_max': '20' },
      'quota:disk_read_iops_sec_max',
      /needs quota:disk_read_iops_sec/,
    ],
    [
      'a write iops max with its base at 0 (no limit)',
      { 'quota:disk_write_iops_sec': '0', 'quota:disk_write_iops_sec_max': '20' },
      'quota:disk_write_iops_sec_max',
      /needs quota:disk_write_iops_sec/,
    ],
    [
      'a read bytes max below its base',
      { 'quota:disk_read_bytes_sec': '4096', 'quota:disk_read_bytes_sec_max': '4095' },
      'quota:disk_read_bytes_sec_max',
      /4095 is below quota:disk_read_bytes_sec \(4096\)/,
    ],
    [
      'a total iops max below its base',
      { 'quota:disk_total_iops_sec': '500', 'quota:disk_total_iops_sec_max': '100' },
      'quota:disk_total_iops_sec_max',
      /below quota:disk_total_iops_sec/,
    ],
    [
      "a limit above QEMU's 1e15",
      { 'quota:disk_total_bytes_sec': '1000000000000001' },
      'quota:disk_total_bytes_sec',
      /0\.\.1000000000000000/,
    ],
    [
      'a size without any iops limit',
      { 'quota:disk_size_iops_sec': '4096', 'quota:disk_total_bytes_sec': '1024' },
      'quota:disk_size_iops_sec',
      /needs an iops limit/,
    ],
  ];
  it.each(refusedSpecs)('refuses %s, naming the extra spec', (_what, specs, key, re) => {
    const err = (() => {
      try {
        iotuneFromFlavor(specs);
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    expect(err).toBeInstanceOf(LibvirtXmlError);
    expect(err).toMatchObject({ field: key });
    expect((err as Error).message).toMatch(new RegExp(`^${key}: `));
    expect((err as Error).message).toMatch(re);
  });

  it('accepts maxima equal to or above their base', () => {
    expect(
      iotuneFromFlavor({
        'quota:disk_read_bytes_sec': '1024',
        'quota:disk_read_bytes_sec_max': '1024',
        'quota:disk_write_bytes_sec': '1024',
        'quota:disk_write_bytes_sec_max': '4096',
        'quota:disk_total_iops_sec': '100',
        'quota:disk_total_iops_sec_max': '1000',
      }),
    ).toEqual({
      readBytesSec: 1024,
      readBytesSecMax: 1024,
      writeBytesSec: 1024,
      writeBytesSecMax: 4096,
      totalIopsSec: 100,
      totalIopsSecMax: 1000,
    });
  });
});

describe('iotune limits QEMU would refuse at start are refused when the XML is built', () => {
  const disk = (iotune: DiskSpec['iotune']): DiskSpec => ({
    source: { type: 'file', path: '/x', format: 'raw' },
    target: { dev: 'vda', bus: 'virtio' },
    iotune,
  });
  const refusedTunes: [string, NonNullable<DiskSpec['iotune']>, string, RegExp][] = [
    ['a max without its base', { readIopsSecMax: 10 }, 'iotune.readIopsSecMax', /needs readIopsSec/],
    [
      'a max below its base',
      { totalBytesSec: 10, totalBytesSecMax: 9 },
      'iotune.totalBytesSecMax',
      /below totalBytesSec/,
    ],
    [
      'a burst length without its max',
      { writeBytesSec: 10, writeBytesSecMaxLength: 5 },
      'iotune.writeBytesSecMaxLength',
      /needs writeBytesSecMax/,
    ],
    [
      'a burst length too long for its max',
      { totalIopsSec: 1, totalIopsSecMax: 1e14, totalIopsSecMaxLength: 11 },
      'iotune.totalIopsSecMaxLength',
      /1000000000000000/,
    ],
    ['a value above 1e15', { readBytesSec: 1e15 + 1 }, 'iotune.readBytesSec', /0\.\.1000000000000000/],
    [
      'total and read burst lengths together',
      { totalIopsSec: 1, totalIopsSecMax: 2, totalIopsSecMaxLength: 3, readIopsSecMaxLength: 3 },
      'iotune.readIopsSecMaxLength',
      /needs readIopsSecMax/,
    ],
  ];
  it.each(refusedTunes)('refuses %s', (_what, iotune, field, re) => {
    expect(() => diskXml(disk(iotune))).toThrow(LibvirtXmlError);
    expect(() => diskXml(disk(iotune))).toThrow(re);
    expect(() => checkIoTune(iotune)).toThrow(expect.objectContaining({ field }));
  });
});

describe("libvirt's own schemas (virt-xml-validate) accept every kind of XML the generator makes", () => {
  it('validates each disk kind inside a minimal domain, and full domains', async () => {
    const docs = [
      ...Object.values(DISKS).map((d) => domainXml(base([{ ...d, bootOrder: undefined }]))),
      domainXml(full),
      domainXml(base([])),
      domainXml(
        base([rbd], {
          type: 'kvm',
          network: { type: 'network', network: 'default', model: 'e1000' },
          features: {},
          clock: 'localtime',
          onReboot: 'rename-restart',
        }),
      ),
      domainXml(
        base([DISKS.fileQcow2!], {
          network: { type: 'bridge', bridge: 'br0', model: 'rtl8139' },
          os: { boot: ['cdrom', 'hd', 'network'], arch: 'i686' },
          cpuMode: 'host-model',
        }),
      ),
      domainXml(base([], { metadata: { instanceId: UUID } })),
    ];
    expect(await validateDomains(docs)).toEqual([]);
  });

  it('the validator does reject a broken document (so the check above means something)', async () => {
    const broken = domainXml(base([DISKS.fileQcow2!])).replace(
      "<target dev='vda' bus='virtio'/>",
      "<target dev='vda' bus='pci'/>",
    );
    expect(await validateDomains([broken])).toHaveLength(1);
  });
});
