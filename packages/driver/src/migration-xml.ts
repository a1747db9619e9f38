// What a live migration hands libvirt: its flags and the domain XML for the destination (pure).
import { MigrateFlags } from '@ephemera/libvirt-napi';
import type { MigrationTarget } from './migration.js';

// Peer-to-peer: the source libvirtd drives the whole migration. The memory goes QEMU to QEMU over TCP
// to the destination's migration address, or with `libvirt.migrationTunnelled` through the two
// libvirtds' connection (no TCP listener on the destination, but a longer downtime: every byte is relayed).
const MIGRATE_FLAGS =
  MigrateFlags.LIVE | MigrateFlags.PEER2PEER | MigrateFlags.PERSIST_DEST | MigrateFlags.UNDEFINE_SOURCE;
// Block migration: QEMU 7.2 with blockdev refuses disk copies in tunnelled mode, so the data goes
// to the destination's migration address (and its NBD server) over TCP. The source definition is
// undefined by the workflow, after it read the completed job's statistics (the disk bytes are
// only in the source's).
export const BLOCK_MIGRATE_FLAGS =
  MigrateFlags.LIVE | MigrateFlags.PEER2PEER | MigrateFlags.PERSIST_DEST | MigrateFlags.NON_SHARED_INC;

/** The flags of a live migration on shared disks: tunnelled through the libvirtds or not (`libvirt.migrationTunnelled`). */
export function migrateFlags(tunnelled: boolean): number {
  return tunnelled ? MIGRATE_FLAGS | MigrateFlags.TUNNELLED : MIGRATE_FLAGS;
}

/** `s` escaped for an XML attribute value. */
export const xmlAttr = (s: string): string =>
  s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/'/g, '&apos;').replace(/"/g, '&quot;');

/**
 * The domain XML for the destination: the serial log (its `<serial>` and `<console>` sources) at
 * the destination's path, opened with append='on' (else a destination truncates the log), and the
 * destination's ceph secret UUID when it differs.
 */
export function destinationXml(
  xml: string,
  sourceConsolePath: string,
  target: MigrationTarget,
  sourceSecret: string | null,
): string {
  const esc = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const paths = [...new Set([sourceConsolePath, xmlAttr(sourceConsolePath)])].map(esc).join('|');
  const source = new RegExp(`<source path=(['"])(?:${paths})\\1([^>]*?)(/?>)`, 'g');
  let out = xml.replace(source, (_m, q: string, rest: string, close: string) => {
    const attrs = rest.replace(/\s+append=(['"])[^'"]*\1/, '');
    return `<source path=${q}${xmlAttr(target.consolePath)}${q}${attrs} append='on'${close}`;
  });
  if (sourceSecret && target.secretUuid && sourceSecret !== target.secretUuid)
    out = out.split(sourceSecret).join(target.secretUuid);
  return out;
}
