// Domain customisation (issue 20.5): NICs, CPU mode/model/topology, extra devices.
import { describe, expect, it } from 'vitest';
import { type DomainSpec, LibvirtXmlError, domainXml } from '@ephemera/libvirt-xml';
import { attr, find, parseXml, validateDomains } from '../xml-tools.js';

const UUID = '6f1c8a52-3c4b-4d1e-9f6a-2b7c9d0e1f23';

const base = (extra: Partial<DomainSpec> = {}): DomainSpec => ({
  type: 'qemu',
  name: 'instance-0001',
  uuid: UUID,
  memoryMiB: 128,
  vcpus: 4,
  disks: [{ source: { type: 'file', path: '/x.qcow2', format: 'qcow2' }, target: { dev: 'vda', bus: 'virtio' } }],
  ...extra,
});

const custom = base({
  interfaces: [
    { type: 'user', model: 'e1000', mac: '52:54:00:12:34:56' },
    { type: 'network', network: 'default' },
    { type: 'bridge', bridge: 'br-ex', model: 'rtl8139' },
  ],
  cpu: { mode: 'custom', model: 'qemu64', topology: { sockets: 1, dies: 1, cores: 2, threads: 2 } },
  os: { machine: 'q35' },
  devices: [
    {
      element: 'rng',
      attributes: { model: 'virtio' },
      children: [{ element: 'backend', attributes: { model: 'random' }, text: '/dev/urandom' }],
    },
    { element: 'watchdog', attributes: { model: 'i6300esb', action: 'reset' } },
    { element: 'input', attributes: { type: 'tablet', bus: 'usb' } },
  ],
});

describe('domain customisation', () => {
  it('writes several interfaces in order, each with its MAC, source and model', () => {
    const devices = find(parseXml(domainXml(custom)), 'devices')!;
    const ifaces = devices.children.filter((c) => c.name === 'interface');
    expect(ifaces.map((i) => attr(i, 'type'))).toEqual(['user', 'network', 'bridge']);
    expect(attr(find(ifaces[0]!, 'mac'), 'address')).toBe('52:54:00:12:34:56');
    expect(ifaces.map((i) => attr(find(i, 'model'), 'type'))).toEqual(['e1000', 'virtio', 'rtl8139']);
    expect(attr(find(ifaces[1]!, 'source'), 'network')).toBe('default');
    expect(attr(find(ifaces[2]!, 'source'), 'bridge')).toBe('br-ex');
  });

  it('writes <cpu> with mode, model and topology, and the machine type', () => {
    const d = parseXml(domainXml(custom));
    const cpu = find(d, 'cpu')!;
    expect(attr(cpu, 'mode')).toBe('custom');
    expect(attr(cpu, 'match')).toBe('exact');
    expect(find(cpu, 'model')!.text).toBe('qemu64');
    expect(find(cpu, 'topology')!.attrs).toEqual([
      ['sockets', '1'],
      ['dies', '1'],
      ['cores', '2'],
      ['threads', '2'],
    ]);
    expect(attr(find(find(d, 'os')!, 'type'), 'machine')).toBe('q35');
  });

  it('writes extra devices with their attributes, children and text', () => {
    const devices = find(parseXml(domainXml(custom)), 'devices')!;
    const rng = devices.children.find((c) => c.name === 'rng')!;
    expect(attr(rng, 'model')).toBe('virtio');
    expect(find(rng, 'backend')!.text).toBe('/dev/urandom');
    expect(
      attr(
        devices.children.find((c) => c.name === 'watchdog'),
        'action',
      ),
    ).toBe('reset');
    expect(
      attr(
        devices.children.find((c) => c.name === 'input'),
        'type',
      ),
    ).toBe('tablet');
  });

  it('keeps the single `network` of before, as the first interface', () => {
    const d = parseXml(domainXml(base({ network: { type: 'user' }, interfaces: [{ type: 'network', network: 'n' }] })));
    const types = find(d, 'devices')!
      .children.filter((c) => c.name === 'interface')
      .map((i) => attr(i, 'type'));
    expect(types).toEqual(['user', 'network']);
  });

  const refused: [string, DomainSpec, RegExp][] = [
    ['an unknown interface type', base({ interfaces: [{ type: 'direct' } as never] }), /^interfaces\[0\]\.type/],
    ['a multicast MAC', base({ interfaces: [{ type: 'user', mac: '01:00:5e:00:00:01' }] }), /unicast/],
    [
      'the same MAC twice',
      base({
        interfaces: [
          { type: 'user', mac: '52:54:00:00:00:01' },
          { type: 'user', mac: '52:54:00:00:00:01' },
        ],
      }),
      /^interfaces\[1\]\.mac: .*used twice/,
    ],
    ['a bridge name with markup', base({ interfaces: [{ type: 'bridge', bridge: "br'/><x" }] }), /bridge name/],
    ['interfaces that are not an array', base({ interfaces: {} as never }), /^interfaces: /],
    [
      'a topology that does not match vcpus',
      base({ cpu: { topology: { sockets: 1, cores: 2, threads: 1 } } }),
      /vcpus/,
    ],
    ['a zero topology member', base({ cpu: { topology: { sockets: 0, cores: 4, threads: 1 } } }), /sockets/],
    ['a model without mode custom', base({ cpu: { mode: 'host-model', model: 'qemu64' } }), /^cpu\.model/],
    ['mode custom without a model', base({ cpu: { mode: 'custom' } }), /^cpu\.model/],
    ['a model with markup', base({ cpu: { mode: 'custom', model: 'qemu64</model>' } }), /CPU model/],
    ['cpuMode together with cpu.mode', base({ cpuMode: 'host-model', cpu: { mode: 'maximum' } }), /^cpu\.mode/],
    ['a device kind with typed fields', base({ devices: [{ element: 'disk' as never }] }), /^devices\[0\]\.element/],
    ['a host device', base({ devices: [{ element: 'hostdev' as never }] }), /^devices\[0\]\.element/],
    [
      'a namespaced child',
      base({ devices: [{ element: 'rng', children: [{ element: 'x:backend' }] }] }),
      /^devices\[0\]\.children\[0\]\.element/,
    ],
    [
      'an attribute name with markup',
      base({ devices: [{ element: 'rng', attributes: { "model='x'": 'virtio' } }] }),
      /^devices\[0\]\.attributes/,
    ],
    [
      'an xmlns attribute',
      base({ devices: [{ element: 'rng', attributes: { xmlns: 'http://evil' } }] }),
      /^devices\[0\]\.attributes/,
    ],
    [
      'a control character in a value',
      base({ devices: [{ element: 'rng', attributes: { model: 'a\u0000' } }] }),
      /^devices\[0\]\.attributes\.model: .*control/,
    ],
    [
      'text together with children',
      base({ devices: [{ element: 'rng', text: 'x', children: [{ element: 'rate' }] }] }),
      /^devices\[0\]: .*text/,
    ],
    [
      'nesting deeper than 8',
      base({
        devices: [
          {
            element: 'channel',
            children: [
              {
                element: 'a',
                children: [
                  {
                    element: 'b',
                    children: [
                      {
                        element: 'c',
                        children: [
                          {
                            element: 'd',
                            children: [
                              {
                                element: 'e',
                                children: [
                                  { element: 'f', children: [{ element: 'g', children: [{ element: 'h' }] }] },
                                ],
                              },
                            ],
                          },
                        ],
                      },
                    ],
                  },
                ],
              },
            ],
          },
        ],
      }),
      /deeper/,
    ],
  ];
  it.each(refused)('refuses %s with LibvirtXmlError naming the field', (_what, spec, re) => {
    expect(() => domainXml(spec)).toThrow(LibvirtXmlError);
    expect(() => domainXml(spec)).toThrow(re);
  });

  it("libvirt's schema (virt-xml-validate) accepts customised domains", async () => {
    const docs = [
      domainXml(custom),
      domainXml(base({ cpu: { mode: 'host-passthrough', topology: { sockets: 2, cores: 2, threads: 1 } } })),
      domainXml(base({ cpu: { topology: { sockets: 4, cores: 1, threads: 1 } }, interfaces: [{ type: 'user' }] })),
      domainXml(
        base({
          devices: [
            { element: 'controller', attributes: { type: 'usb', model: 'qemu-xhci' } },
            { element: 'video', children: [{ element: 'model', attributes: { type: 'virtio', heads: 1 } }] },
            { element: 'panic', attributes: { model: 'isa' } },
          ],
        }),
      ),
    ];
    expect(await validateDomains(docs)).toEqual([]);
  });

  it("a schema-invalid extra device is caught by libvirt's schema (what the driver's define checks)", async () => {
    const bad = domainXml(base({ devices: [{ element: 'watchdog', attributes: { model: 'no-such-watchdog' } }] }));
    expect(await validateDomains([bad])).toHaveLength(1);
  });
});
