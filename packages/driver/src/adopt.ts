/**
 * Adopting the disks of another (dead) host: every disk of an instance owned by `fromHost` is
 * handed to this host with the backend's `setOwner`, refused while a client that is not fenced
 * (blocklisted) still has one open. Used by `ephemera adopt <instance> --from-host <id>`.
 */
import { isHostId, isUuid, type BackendRegistry, type DiskClient } from '@ephemera/image-backend';
import type { DriverConfig } from './config.js';
import { DriverError } from './errors.js';
import type { Logger } from './logger.js';
import { ownerStamp } from './util.js';

/** Result of `Driver.adopt`. */
export interface AdoptResult {
  instance: string;
  fromHost: string;
  /** `<backend>:<disk id>` of every disk handed to this host. */
  adopted: string[];
  /** Disks of the instance this host already owned (an adopt run again after a partial one). */
  alreadyOwned: string[];
}

/** Hands the disks of `instance` owned by `fromHost` to this host (see the module comment). */
export async function adoptDisks(
  backends: BackendRegistry,
  config: DriverConfig,
  log: Logger,
  instance: string,
  fromHost: string,
): Promise<AdoptResult> {
  if (!isUuid(instance)) throw new DriverError('INVALID_ARGUMENT', `not an instance UUID: ${JSON.stringify(instance)}`);
  const uuid = instance.toLowerCase();
  if (!isHostId(fromHost)) throw new DriverError('INVALID_ARGUMENT', `not a host id: ${JSON.stringify(fromHost)}`);
  if (fromHost === config.host.id)
    throw new DriverError('INVALID_ARGUMENT', `host ${fromHost} is this host: nothing to adopt`, { instance: uuid });
  const theirs: { backend: string; disk: { instance: string; name: string }; id: string }[] = [];
  const result: AdoptResult = { instance: uuid, fromHost, adopted: [], alreadyOwned: [] };
  for (const b of backends.all()) {
    for (const d of await b.list({ instance: uuid })) {
      if (d.owner?.hostId === fromHost) theirs.push({ backend: b.name, disk: d.disk, id: d.id });
      else if (d.owner?.hostId === config.host.id) result.alreadyOwned.push(`${b.name}:${d.id}`);
    }
  }
  if (theirs.length === 0) {
    if (result.alreadyOwned.length) return result;
    throw new DriverError('INSTANCE_NOT_FOUND', `no disk of instance ${uuid} is owned by host ${fromHost}`, {
      instance: uuid,
    });
  }
  // Check every disk before handing any over: a live client on one means the host may be alive.
  const live: string[] = [];
  for (const t of theirs) {
    const b = backends.get(t.backend);
    if (!b.setOwner)
      throw new DriverError('UNSUPPORTED', `backend ${b.name} cannot hand disks over`, { instance: uuid });
    const clients: DiskClient[] = (await b.diskClients?.(t.disk)) ?? [];
    for (const c of clients.filter((x) => !x.blocklisted))
      live.push(`${t.backend}:${t.id} ${c.kind} ${c.client} at ${c.address}`);
  }
  if (live.length)
    throw new DriverError(
      'INSTANCE_STATE',
      `host ${fromHost} may be alive: its disks are in use by ${live.join('; ')}. ` +
        `Adopt only the disks of a dead host: fence each client first (\`ceph osd blocklist add <address>\`), then adopt again`,
      { instance: uuid },
    );
  for (const t of theirs) {
    await backends.get(t.backend).setOwner!(t.disk, ownerStamp(config));
    result.adopted.push(`${t.backend}:${t.id}`);
  }
  log.info({ instance: uuid, fromHost, adopted: result.adopted }, `adopted ${result.adopted.length} disk(s)`);
  return result;
}
