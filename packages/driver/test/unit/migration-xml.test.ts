// The domain XML a live migration sends to the destination (pure text rewriting).
import { describe, expect, it } from 'vitest';
import { destinationXml } from '../../src/migration-xml.js';

const SRC = '/var/lib/a/instances/u1/console.log';
const xml = `<domain type='qemu'>
  <devices>
    <disk type='network' device='disk'>
      <auth username='ephemera'><secret type='ceph' uuid='11111111-1111-4111-8111-111111111111'/></auth>
      <source protocol='rbd' name='vms/u1_disk'/>
    </disk>
    <serial type='file'>
      <source path='${SRC}'/>
      <target type='isa-serial' port='0'/>
    </serial>
    <console type='file'>
      <source path='${SRC}' append='off'/>
      <target type='serial' port='0'/>
    </console>
  </devices>
</domain>`;
const target = {
  libvirtUri: 'qemu:///b',
  consolePath: "/var/lib/b/it's/u1/console.log",
  secretUuid: '11111111-1111-4111-8111-111111111111',
  owner: { hostId: 'host-b', version: '0.0.0' },
};

describe('destinationXml', () => {
  it("moves the serial and console log to the destination's path, opened with append='on'", () => {
    const out = destinationXml(xml, SRC, target, target.secretUuid);
    expect(out).not.toContain(SRC);
    expect(out.match(/<source path='\/var\/lib\/b\/it&apos;s\/u1\/console.log' append='on'\/>/g)).toHaveLength(2);
    expect(out).not.toContain("append='off'");
    expect(out).toContain("<source protocol='rbd' name='vms/u1_disk'/>");
  });

  it("names the destination's ceph secret when its UUID differs, and leaves the XML alone otherwise", () => {
    const other = { ...target, secretUuid: '22222222-2222-4222-8222-222222222222' };
    const out = destinationXml(xml, SRC, other, target.secretUuid);
    expect(out).toContain("uuid='22222222-2222-4222-8222-222222222222'");
    expect(out).not.toContain('11111111-1111-4111-8111-111111111111');
    const same = destinationXml(xml, SRC, { ...target, consolePath: SRC }, target.secretUuid);
    expect(same.replace(/ append='on'/g, '').replace(/ append='off'/, '')).toBe(xml.replace(/ append='off'/, ''));
  });
});
