import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type DomainSpec, LibvirtXmlError, domainXml } from '@ephemera/libvirt-xml';
import { type Node, attr, find, parseXml, shape, validateDomains } from '../xml-tools.js';

const UUID = '6f1c8a52-3c4b-4d1e-9f6a-2b7c9d0e1f23';
const SECRET = 'a3c1e8f0-4b2d-4c6e-8f1a-0d9b7c5e3a21';

/** Fragments an attacker would try, plus characters XML or libvirt choke on. */
const NASTY = [
  '<',
  '>',
  '&',
  '"',
  "'",
  '/',
  '=',
  ' ',
  '\t',
  '\n',
  '\r',
  '\0',
  '\u0001',
  '\u001b',
  '\u007f',
  '\u0085',
  ']]>',
  '<!--',
  '-->',
  '<![CDATA[',
  '<?xml',
  '?>',
  '&amp;',
  '&lt;',
  '&#0;',
  '&#x3c;',
  '&bogus;',
  "'/><disk type='file'><source file='/etc/shadow'/></disk><x a='",
  '</name><name>evil',
  '<devices>',
  '\u2028',
  '\u2029',
  '\ufeff',
  '\ufffe',
  '\uffff',
  '\ud800',
  '\udfff',
  '\ud83d\ude00',
  'é',
  '𝄞',
  'ﷺ',
  'a',
  'Z',
  '0',
  '.',
  '-',
  '_',
  ':',
  '@',
  '%',
  '$(',
  '`',
  '\\',
];
const hostile = fc.oneof(
  fc.array(fc.constantFrom(...NASTY), { minLength: 1, maxLength: 8 }).map((a) => a.join('')),
  fc.string({ unit: 'binary', minLength: 1, maxLength: 24 }),
  fc.string({ unit: 'grapheme', minLength: 1, maxLength: 12 }),
  fc.string({ unit: 'binary-ascii', minLength: 1, maxLength: 24 }),
);

interface Fields {
  name: string;
  filePath: string;
  blockPath: string;
  logPath: string;
  emulator: string;
  displayName: string;
  flavor: string;
  rbdName: string;
  host: string;
  username: string;
  serial: string;
  network: string;
  machine: string;
  imageId: string;
  uuid: string;
  bridge: string;
  mac: string;
  cpuModel: string;
  certText: string;
  vncPasswd: string;
}

const BENIGN: Fields = {
  name: 'n',
  filePath: '/f',
  blockPath: '/b',
  logPath: '/l',
  emulator: '/e',
  displayName: 'd',
  flavor: 'f',
  rbdName: 'p/i',
  host: 'h',
  username: 'u',
  serial: 's',
  network: 'default',
  machine: 'pc',
  imageId: 'i',
  uuid: UUID,
  bridge: 'br0',
  mac: '52:54:00:00:00:01',
  cpuModel: 'qemu64',
  certText: 'c',
  vncPasswd: 'p',
};

function spec(f: Fields): DomainSpec {
  return {
    type: 'qemu',
    name: f.name,
    uuid: f.uuid,
    memoryMiB: 64,
    vcpus: 1,
    os: { machine: f.machine },
    emulator: f.emulator,
    serialLogPath: f.logPath,
    network: { type: 'network', network: f.network },
    interfaces: [{ type: 'bridge', bridge: f.bridge, mac: f.mac }],
    cpu: { mode: 'custom', model: f.cpuModel, topology: { sockets: 1, cores: 1, threads: 1 } },
    // Raw devices: only values libvirt's schema takes as free text (it checks paths itself at define).
    devices: [
      {
        element: 'smartcard',
        attributes: { mode: 'host-certificates' },
        children: [
          { element: 'certificate', text: f.certText },
          { element: 'certificate', text: 'c2' },
          { element: 'certificate', text: 'c3' },
        ],
      },
      { element: 'graphics', attributes: { type: 'vnc', passwd: f.vncPasswd } },
    ],
    metadata: { instanceId: UUID, displayName: f.displayName, flavor: f.flavor, imageId: f.imageId },
    disks: [
      {
        source: { type: 'file', path: f.filePath, format: 'qcow2' },
        target: { dev: 'vda', bus: 'virtio' },
        serial: f.serial,
      },
      { source: { type: 'block', path: f.blockPath }, target: { dev: 'vdb', bus: 'virtio' } },
      {
        source: {
          type: 'network',
          protocol: 'rbd',
          name: f.rbdName,
          hosts: [{ host: f.host, port: 6789 }],
          auth: { username: f.username, secretUuid: SECRET },
        },
        target: { dev: 'vdc', bus: 'virtio' },
      },
    ],
  };
}

/** Reads every hostile-able value back out of a parsed document. */
function readBack(d: Node): Fields {
  const devices = find(d, 'devices')!;
  const disks = devices.children.filter((c) => c.name === 'disk');
  const serialDev = devices.children.find((c) => c.name === 'serial')!;
  const hostName = attr(find(disks[2]!, 'host'), 'name')!;
  const bridgeIface = devices.children.filter((c) => c.name === 'interface')[1]!;
  const device = (name: string) => devices.children.find((c) => c.name === name)!;
  return {
    name: find(d, 'name')!.text,
    filePath: attr(find(disks[0]!, 'source'), 'file')!,
    blockPath: attr(find(disks[1]!, 'source'), 'dev')!,
    logPath: attr(find(serialDev, 'source'), 'path')!,
    emulator: find(devices, 'emulator')!.text,
    displayName: find(d, 'ephemera:name')!.text,
    flavor: find(d, 'ephemera:flavor')!.text,
    rbdName: attr(find(disks[2]!, 'source'), 'name')!,
    host: hostName,
    username: attr(find(disks[2]!, 'auth'), 'username')!,
    serial: find(disks[0]!, 'serial')!.text,
    network: attr(find(find(devices, 'interface')!, 'source'), 'network')!,
    machine: attr(find(find(d, 'os')!, 'type'), 'machine')!,
    imageId: find(d, 'ephemera:image')!.text,
    uuid: find(d, 'uuid')!.text,
    bridge: attr(find(bridgeIface, 'source'), 'bridge')!,
    mac: attr(find(bridgeIface, 'mac'), 'address')!,
    cpuModel: find(find(d, 'cpu')!, 'model')!.text,
    certText: find(device('smartcard'), 'certificate')!.text,
    vncPasswd: attr(device('graphics'), 'passwd')!,
  };
}

const REFERENCE_SHAPE = shape(parseXml(domainXml(spec(BENIGN))));
const KEYS = Object.keys(BENIGN) as (keyof Fields)[];

describe('no XML injection through any string field (property-based)', () => {
  const accepted: string[] = [];

  it('every hostile value is either refused with LibvirtXmlError or escaped: same tree, same values', () => {
    let refusedCount = 0;
    fc.assert(
      fc.property(fc.constantFrom(...KEYS), hostile, fc.constantFrom(...KEYS), hostile, (k1, v1, k2, v2) => {
        const fields: Fields = { ...BENIGN };
        // Paths must be absolute to be accepted at all: give the attacker that for free half the time.
        const put = (k: keyof Fields, v: string) => {
          fields[k] = /Path$|^emulator$/.test(k) && v.length % 2 === 0 ? `/${v}` : v;
        };
        put(k1, v1);
        put(k2, v2);
        let xml: string;
        try {
          xml = domainXml(spec(fields));
        } catch (err) {
          expect(err).toBeInstanceOf(LibvirtXmlError);
          expect([k1, k2].some((k) => (err as LibvirtXmlError).field.includes(fieldPath(k)))).toBe(true);
          refusedCount++;
          return;
        }
        // eslint-disable-next-line no-control-regex
        expect(xml).not.toMatch(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]/);
        const doc = parseXml(xml);
        expect(shape(doc)).toEqual(REFERENCE_SHAPE);
        const back = readBack(doc);
        // The host is normalised (IPv6 brackets dropped); everything else round-trips exactly.
        const expected = { ...fields, host: fields.host.replace(/^\[(.*)\]$/, '$1') };
        expect(back).toEqual(expected);
        if (accepted.length < 60 && (k1 !== k2 || v1 !== BENIGN[k1])) accepted.push(xml);
      }),
      { numRuns: 3000 },
    );
    expect(refusedCount).toBeGreaterThan(0);
    expect(accepted.length).toBeGreaterThan(10);
  });

  it("accepted hostile documents are valid for libvirt's schema too", async () => {
    expect(accepted.length).toBeGreaterThan(10);
    const invalid = await validateDomains(accepted);
    // On failure the message carries each refused document and virt-xml-validate's reason.
    expect(invalid, invalid.join('\n\n')).toEqual([]);
  });
});

function fieldPath(k: keyof Fields): string {
  return {
    name: 'name',
    filePath: 'disks[0].source.path',
    blockPath: 'disks[1].source.path',
    logPath: 'serialLogPath',
    emulator: 'emulator',
    displayName: 'metadata.displayName',
    flavor: 'metadata.flavor',
    rbdName: 'disks[2].source.name',
    host: 'disks[2].source.hosts[0].host',
    username: 'disks[2].source.auth.username',
    serial: 'disks[0].serial',
    network: 'network.network',
    machine: 'os.machine',
    imageId: 'metadata.imageId',
    uuid: 'uuid',
    bridge: 'interfaces[0].bridge',
    mac: 'interfaces[0].mac',
    cpuModel: 'cpu.model',
    certText: 'devices[0].children[0].text',
    vncPasswd: 'devices[1].attributes.passwd',
  }[k];
}
