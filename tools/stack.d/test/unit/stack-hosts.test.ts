// The dev stack's compute hosts (tools/lib/stack/hosts.mjs) and their libvirtd configuration:
// pure logic and generated files, no daemons (the real two-host stack is tested in
// tools/stack.d/test/integration/stack-hosts.test.ts).
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const LIB = resolve(fileURLToPath(new URL('../../../lib/stack', import.meta.url)));
const hosts = await import(join(LIB, 'hosts.mjs'));
const libvirtd = await import(join(LIB, 'libvirtd.mjs'));
const tmp = mkdtempSync(join(tmpdir(), 'eph-hosts-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('tools/lib/stack/hosts.mjs', () => {
  it('reads the host count from --hosts, --hosts=, then EPHEMERA_STACK_HOSTS; none means keep', () => {
    expect(hosts.requestedHosts([], {})).toBeUndefined();
    expect(hosts.requestedHosts([], { EPHEMERA_STACK_HOSTS: '' })).toBeUndefined();
    expect(hosts.requestedHosts([], { EPHEMERA_STACK_HOSTS: '2' })).toBe(2);
    expect(hosts.requestedHosts(['--hosts', '3'], { EPHEMERA_STACK_HOSTS: '2' })).toBe(3);
    expect(hosts.requestedHosts(['--hosts=1'], {})).toBe(1);
    for (const bad of ['0', '-1', '1.5', 'two', '9', '02']) {
      expect(() => hosts.requestedHosts(['--hosts', bad], {})).toThrow(
        /--hosts: expected a number of hosts from 1 to 8/,
      );
    }
    expect(() => hosts.requestedHosts([], { EPHEMERA_STACK_HOSTS: 'x' })).toThrow(/EPHEMERA_STACK_HOSTS: expected/);
    expect(() => hosts.requestedHosts(['--hosts'], {})).toThrow(/--hosts needs a number/);
    expect(() => hosts.requestedHosts(['--verbose'], {})).toThrow(/unknown argument "--verbose"/);
  });

  it('names services libvirtd (host 1) and libvirtd@N', () => {
    expect([1, 2, 3].map(hosts.hostService)).toEqual(['libvirtd', 'libvirtd@2', 'libvirtd@3']);
    expect(['libvirtd', 'libvirtd@1', 'libvirtd@2', 'libvirtd@12'].map(hosts.hostOfService)).toEqual([1, 1, 2, 12]);
    for (const s of ['osd', 'libvirtd@', 'libvirtd@0', 'libvirtd@x', 'libvirtd2', undefined])
      expect(hosts.hostOfService(s)).toBeUndefined();
  });

  it('gives each host its own uuid, loopback migration address and ports, and its own directories', () => {
    const st = { ports: { monV2: 20000, migration: 20032 } };
    const [h1, h2] = [hosts.newHost(st, 1), hosts.newHost(st, 2)];
    expect(h1).toMatchObject({ id: 1, migrationAddress: '127.0.0.2', migrationPorts: [20032, 20035], libvirtNs: [] });
    expect(h2).toMatchObject({ id: 2, migrationAddress: '127.0.0.3', migrationPorts: [20036, 20039] });
    expect(h1.hostUuid).toMatch(/^[0-9a-f-]{36}$/);
    expect(h1.hostUuid).not.toBe(h2.hostUuid);
    // A stack from before hosts (no migration ports in its state): the 32 ports after its block.
    expect(hosts.newHost({ ports: { monV2: 21000 } }, 2).migrationPorts).toEqual([21036, 21039]);
    expect(hosts.hostPaths('/s', '/s/log', 1)).toMatchObject({ root: '/s/libvirt', logFile: '/s/log/libvirtd.log' });
    expect(hosts.hostPaths('/s', '/s/log', 2)).toMatchObject({
      root: '/s/host2/libvirt',
      logFile: '/s/log/host2/libvirtd.log',
    });
    expect([hosts.hostStateDir('/s', 1), hosts.hostStateDir('/s', 2)]).toEqual(['/s/ephemera', '/s/host2/ephemera']);
  });

  it('gives a state from before hosts its host 1, keeping the recorded libvirtd namespaces', () => {
    const st: Record<string, unknown> = { ports: { monV2: 20000 }, libvirtNs: ['mnt:[1]'] };
    const [h1, ...rest] = hosts.ensureHosts(st);
    expect(rest).toEqual([]);
    expect(h1).toMatchObject({ id: 1, libvirtNs: ['mnt:[1]'], migrationAddress: '127.0.0.2' });
    expect(st.libvirtNs).toBeUndefined();
    expect(hosts.ensureHosts(st)[0]).toBe(h1);
  });

  it("writes host_uuid and the migration settings into a host's libvirtd config, and none without a host", () => {
    const host = {
      id: 2,
      hostUuid: '0b7c3f1e-3c43-4c6a-9a8e-1f0e4b8d2c55',
      migrationAddress: '127.0.0.3',
      migrationPorts: [20036, 20039],
    };
    const l = hosts.hostPaths(tmp, join(tmp, 'log'), 2);
    libvirtd.writeLibvirtConfig(l, host);
    const conf = readFileSync(join(l.root, 'etc', 'libvirtd.conf'), 'utf8');
    const qemu = readFileSync(join(l.root, 'etc', 'qemu.conf'), 'utf8');
    expect(conf).toContain(`host_uuid = "${host.hostUuid}"\n`);
    expect(conf).toContain(`unix_sock_dir = "${join(tmp, 'host2', 'libvirt', 'sock')}"`);
    expect(qemu).toContain(
      'migration_address = "127.0.0.3"\nmigration_host = "127.0.0.3"\nmigration_port_min = 20036\nmigration_port_max = 20039\n',
    );
    const p = libvirtd.libvirtdPaths(join(tmp, 'private'));
    libvirtd.writeLibvirtConfig(p);
    expect(readFileSync(join(p.root, 'etc', 'libvirtd.conf'), 'utf8')).not.toContain('host_uuid');
    expect(readFileSync(join(p.root, 'etc', 'qemu.conf'), 'utf8')).not.toContain('migration');
  });
});
