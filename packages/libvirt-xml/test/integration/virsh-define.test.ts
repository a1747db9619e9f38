import { randomUUID } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type DiskSpec, type DomainSpec, LibvirtXmlError, domainXml } from '@ephemera/libvirt-xml';
import { type Node, attr, find, parseXml } from '../xml-tools.js';
import { useVirsh } from './virsh.js';

// Defines domains built by the generator on the stack's real libvirtd, reads them back with
// dumpxml and checks that libvirt kept every disk as given. Nothing is started; every domain
// is undefined afterwards.
const lv = useVirsh('ephemera-virsh-', 'undefine');
const { virsh } = lv;
const defined = lv.domains;

async function defineAndDump(spec: DomainSpec): Promise<Node> {
  const file = join(lv.dir, `${spec.uuid}.xml`);
  await writeFile(file, domainXml(spec));
  await virsh('define', file);
  defined.add(spec.uuid);
  return parseXml(await virsh('dumpxml', '--inactive', spec.uuid));
}

/** Every element/attribute we wrote is in libvirt's copy, children in the same relative order. */
function expectKept(ours: Node, theirs: Node, path: string): void {
  expect(theirs.name, path).toBe(ours.name);
  for (const [k, v] of ours.attrs) expect(attr(theirs, k), `${path}/@${k}`).toBe(v);
  if (ours.children.length === 0) {
    expect(theirs.text, `${path} text`).toBe(ours.text);
    return;
  }
  let j = 0;
  for (const c of ours.children) {
    while (j < theirs.children.length && theirs.children[j]!.name !== c.name) j++;
    expect(
      j < theirs.children.length,
      `${path}/${c.name} kept, in order (libvirt has: ${theirs.children.map((x) => x.name).join(',')})`,
    ).toBe(true);
    expectKept(c, theirs.children[j]!, `${path}/${c.name}`);
    j++;
  }
}

function disksByTarget(doc: Node): Map<string, Node> {
  const m = new Map<string, Node>();
  for (const d of find(doc, 'devices')!.children.filter((c) => c.name === 'disk'))
    m.set(attr(find(d, 'target'), 'dev')!, d);
  return m;
}

describe('libvirtd keeps generated disks as given (virsh define + dumpxml)', () => {
  const disks = (): DiskSpec[] => [
    {
      source: {
        type: 'network',
        protocol: 'rbd',
        name: `${lv.stack.ceph.pools.vms}/${randomUUID()}_disk`,
        hosts: [...lv.stack.ceph.monitors.map((m) => ({ host: m.host, port: m.port })), { host: '::1', port: 6789 }],
        auth: { username: lv.stack.ceph.users.ephemera.id, secretUuid: lv.stack.libvirt.cephSecretUuid },
        format: 'raw',
      },
      driver: { cache: 'writeback', discard: 'unmap', detectZeroes: 'unmap' },
      target: { dev: 'vda', bus: 'virtio' },
      serial: 'root-disk',
      bootOrder: 1,
      iotune: { totalBytesSec: 104_857_600, readIopsSec: 2000, writeIopsSec: 1000 },
    },
    {
      source: { type: 'file', path: join(lv.dir, 'disk.local'), format: 'qcow2' },
      driver: { cache: 'none', io: 'native', discard: 'unmap' },
      target: { dev: 'vdb', bus: 'virtio' },
    },
    {
      source: { type: 'block', path: '/dev/loop7', format: 'raw' },
      driver: { cache: 'directsync', io: 'native' },
      target: { dev: 'vdc', bus: 'virtio' },
      shareable: true,
    },
    {
      source: {
        type: 'file',
        path: join(lv.dir, 'disk.swap'),
        format: 'raw',
        encryption: { format: 'luks', secretUuid: randomUUID() },
      },
      driver: { cache: 'writethrough', io: 'threads' },
      target: { dev: 'vdd', bus: 'virtio' },
    },
    {
      device: 'cdrom',
      source: { type: 'file', path: join(lv.dir, 'disk.config'), format: 'raw' },
      target: { dev: 'sda', bus: 'sata' },
      readonly: true,
    },
  ];

  it('keeps every disk kind (rbd with cephx + IPv6 monitor, qcow2 file, block, LUKS, cdrom) and the metadata', async () => {
    const uuid = randomUUID();
    const spec: DomainSpec = {
      type: lv.stack.libvirt.domainType,
      name: `ephemera-xmltest-${uuid.slice(0, 8)}`,
      uuid,
      memoryMiB: 64,
      vcpus: 1,
      disks: disks(),
      serialLogPath: join(lv.dir, 'console.log'),
      network: { type: 'user', mac: '52:54:00:ab:cd:ef' },
      memballoon: false,
      metadata: { instanceId: uuid, displayName: 'x & <y>', flavor: 'm1.tiny' },
    };
    const ours = parseXml(domainXml(spec));
    const theirs = await defineAndDump(spec);
    expect(find(theirs, 'uuid')!.text).toBe(uuid);
    const mine = disksByTarget(ours);
    const kept = disksByTarget(theirs);
    expect([...kept.keys()].sort()).toEqual([...mine.keys()].sort());
    for (const [dev, d] of mine) expectKept(d, kept.get(dev)!, `disk[${dev}]`);
    expect(find(theirs, 'ephemera:id')!.text).toBe(uuid);
    expect(find(theirs, 'ephemera:name')!.text).toBe('x & <y>');
    const serial = find(theirs, 'devices')!.children.find((c) => c.name === 'serial')!;
    expect(attr(find(serial, 'source'), 'path')).toBe(join(lv.dir, 'console.log'));
  });

  it('keeps NICs, the CPU mode/model/topology and extra devices as given (define --validate)', async () => {
    const uuid = randomUUID();
    const spec: DomainSpec = {
      type: lv.stack.libvirt.domainType,
      name: `ephemera-xmltest-${uuid.slice(0, 8)}`,
      uuid,
      memoryMiB: 64,
      vcpus: 4,
      disks: [],
      interfaces: [
        { type: 'user', model: 'e1000', mac: '52:54:00:ab:cd:01' },
        { type: 'user', model: 'rtl8139', mac: '52:54:00:ab:cd:02' },
      ],
      cpu: { mode: 'custom', model: 'qemu64', topology: { sockets: 1, dies: 1, cores: 2, threads: 2 } },
      devices: [
        {
          element: 'rng',
          attributes: { model: 'virtio' },
          children: [{ element: 'backend', attributes: { model: 'random' }, text: '/dev/urandom' }],
        },
        { element: 'watchdog', attributes: { model: 'i6300esb', action: 'reset' } },
        { element: 'input', attributes: { type: 'tablet', bus: 'usb' } },
      ],
    };
    const ours = parseXml(domainXml(spec));
    const file = join(lv.dir, `${uuid}.xml`);
    await writeFile(file, domainXml(spec));
    // --validate: libvirt checks the document against its schema, as the driver's define does.
    await virsh('define', '--validate', file);
    defined.add(uuid);
    const theirs = parseXml(await virsh('dumpxml', '--inactive', uuid));
    expectKept(find(ours, 'cpu')!, find(theirs, 'cpu')!, 'cpu');
    const devs = (d: Node, name: string) => find(d, 'devices')!.children.filter((c) => c.name === name);
    for (const name of ['interface', 'rng', 'watchdog', 'input']) {
      const mine = devs(ours, name);
      // libvirt adds its implicit devices (a PS/2 mouse and keyboard): ours are kept, in order.
      const kept = devs(theirs, name).filter((c) => name !== 'input' || attr(c, 'bus') === 'usb');
      expect(kept.length, name).toBe(mine.length);
      for (const [i, m] of mine.entries()) expectKept(m, kept[i]!, `${name}[${i}]`);
    }
  });

  it('keeps a name full of XML metacharacters exactly (escaped, not injected)', async () => {
    const uuid = randomUUID();
    const name = `ephemera-xmltest <&'"> ${uuid.slice(0, 8)} é𝄞`;
    const theirs = await defineAndDump({
      type: lv.stack.libvirt.domainType,
      name,
      uuid,
      memoryMiB: 64,
      vcpus: 1,
      disks: [],
    });
    expect(find(theirs, 'name')!.text).toBe(name);
    expect(find(theirs, 'devices')!.children.filter((c) => c.name === 'disk')).toEqual([]);
    expect((await virsh('domname', uuid)).trim()).toBe(name);
  });

  it('keeps random hostile names and paths that the builder accepts (libvirtd agrees with the builder)', async () => {
    const frag = fc.constantFrom(
      '<',
      '>',
      '&',
      '"',
      "'",
      ' ',
      ']]>',
      '&amp;',
      '<!--',
      '\u2028',
      'é',
      '𝄞',
      '\ufeff',
      '%',
      '\\',
      'a',
      '=',
      '?>',
      '\t',
      '\u001b',
      '/',
    );
    const hostile = fc.oneof(
      fc.array(frag, { minLength: 1, maxLength: 6 }).map((a) => a.join('')),
      fc.string({ unit: 'binary', minLength: 1, maxLength: 12 }),
    );
    const samples = fc.sample(fc.tuple(hostile, hostile), { numRuns: 40, seed: 20261124 });
    let definedCount = 0;
    for (const [n, p] of samples) {
      const uuid = randomUUID();
      const spec: DomainSpec = {
        type: lv.stack.libvirt.domainType,
        name: `ephemera-xmltest-${uuid.slice(0, 8)}${n}`,
        uuid,
        memoryMiB: 64,
        vcpus: 1,
        disks: [
          { source: { type: 'file', path: `${lv.dir}/${p}`, format: 'raw' }, target: { dev: 'vda', bus: 'virtio' } },
        ],
      };
      try {
        domainXml(spec);
      } catch (err) {
        expect(err).toBeInstanceOf(LibvirtXmlError);
        continue;
      }
      const theirs = await defineAndDump(spec);
      definedCount++;
      expect(find(theirs, 'name')!.text).toBe(spec.name);
      expect(attr(find(disksByTarget(theirs).get('vda')!, 'source'), 'file')).toBe(`${lv.dir}/${p}`);
      await virsh('undefine', uuid);
      defined.delete(uuid);
    }
    expect(definedCount).toBeGreaterThan(10);
  });
});
