// The flags a live migration on shared disks hands virDomainMigrateToURI3, by transport.
import { MigrateFlags } from '@ephemera/libvirt-napi';
import { describe, expect, it } from 'vitest';
import { CONFIG_SCHEMA, loadConfig } from '../../src/config.js';
import { BLOCK_MIGRATE_FLAGS, migrateFlags } from '../../src/migration-xml.js';

describe('live migration flags', () => {
  it('direct by default (QEMU to QEMU over TCP, as Nova), tunnelled through the libvirtds only when configured', () => {
    const { config } = loadConfig({ env: {}, overrides: { stateDir: '/tmp/x' } });
    expect(config.libvirt.migrationTunnelled).toBe(false);
    const direct = migrateFlags(config.libvirt.migrationTunnelled);
    expect(direct & MigrateFlags.TUNNELLED).toBe(0);
    const tunnelled = migrateFlags(true);
    expect(tunnelled & MigrateFlags.TUNNELLED).toBe(MigrateFlags.TUNNELLED);
    for (const f of [direct, tunnelled]) {
      for (const need of [
        MigrateFlags.LIVE,
        MigrateFlags.PEER2PEER,
        MigrateFlags.PERSIST_DEST,
        MigrateFlags.UNDEFINE_SOURCE,
      ])
        expect(f & need).toBe(need);
    }
    // Block migration never tunnels (QEMU 7.2 refuses disk copies in it) and keeps the source defined.
    expect(BLOCK_MIGRATE_FLAGS & MigrateFlags.TUNNELLED).toBe(0);
    expect(BLOCK_MIGRATE_FLAGS & MigrateFlags.UNDEFINE_SOURCE).toBe(0);
  });

  it('the option takes the Nova name and refuses a non-boolean', () => {
    const { config } = loadConfig({
      env: {},
      overrides: { stateDir: '/tmp/x', libvirt: { migrationTunnelled: true } },
    });
    expect(config.libvirt.migrationTunnelled).toBe(true);
    expect(CONFIG_SCHEMA.find((o) => o.key === 'libvirt.migrationTunnelled')?.nova).toBe(
      '[libvirt] live_migration_tunnelled',
    );
    expect(() =>
      loadConfig({ env: {}, overrides: { stateDir: '/tmp/x', libvirt: { migrationTunnelled: 'maybe' as never } } }),
    ).toThrow(/migrationTunnelled/);
  });
});
