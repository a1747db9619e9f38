/**
 * What the storage cluster holds about an instance, so that another host can rebuild it after its
 * own host died (evacuation, issue 19.5): the instance's definition, recorded at spawn as an
 * annotation on its root disk, and the pure decision whether a host may evacuate it.
 */
import { isHostId, isUuid, type DiskClient, type DiskInfo } from '@ephemera/image-backend';
import type { DomainOptions } from './domain-spec.js';
import { DriverError } from './errors.js';
import type { Flavor, InstanceDisk, InstanceRecord, RootDiskReport } from './types.js';

/** The annotation key of the definition on the root disk (RBD: image metadata `ephemera.note.instance`). */
export const INSTANCE_SPEC_KEY = 'instance';

/**
 * An instance's definition as recorded on its root disk: the record without what is the host's
 * own (console path, libvirt names), plus the spawn request's `domain` options.
 */
export interface InstanceSpec {
  /** Format version. */
  v: 1;
  uuid: string;
  name: string;
  imageId: string;
  backend: string;
  flavor: Flavor;
  disks: InstanceDisk[];
  createdAt: string;
  rootDisk: RootDiskReport;
  /** The spawn request's domain options (NICs, CPU, machine, devices), when it had some. */
  domain?: DomainOptions;
  /** Its disks are encrypted: their key is with the spawning host's key provider, not on the disk. */
  encrypted?: true;
}

/** The definition of `rec` (and its request's `domain` options) as recorded on the root disk. */
export function formatInstanceSpec(
  rec: Omit<InstanceRecord, 'consolePath' | 'domainName'>,
  domain?: DomainOptions,
): string {
  const spec: InstanceSpec = {
    v: 1,
    uuid: rec.uuid,
    name: rec.name,
    imageId: rec.imageId,
    backend: rec.backend,
    flavor: rec.flavor,
    disks: rec.disks,
    createdAt: rec.createdAt,
    rootDisk: rec.rootDisk,
    ...(domain !== undefined ? { domain } : {}),
    ...(rec.encryption ? { encrypted: true as const } : {}),
  };
  return JSON.stringify(spec);
}

/**
 * Parses a recorded definition of instance `uuid`: the spec, or a DriverError (INSTANCE_STATE)
 * saying why it cannot be used. The flavor and disks are checked here; the domain options are
 * checked again when the domain XML is built from them.
 */
export function parseInstanceSpec(text: string | null | undefined, uuid: string): InstanceSpec {
  const bad = (why: string): DriverError =>
    new DriverError('INSTANCE_STATE', `instance ${uuid}: the definition recorded on its root disk ${why}`, {
      instance: uuid,
    });
  if (text === null || text === undefined || text === '')
    throw new DriverError(
      'INSTANCE_STATE',
      `instance ${uuid}: its root disk carries no recorded definition (spawned before Ephemera recorded definitions on disks): it cannot be rebuilt on another host`,
      { instance: uuid },
    );
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw bad('is not JSON');
  }
  if (typeof v !== 'object' || v === null) throw bad('is not an object');
  const s = v as Partial<InstanceSpec>;
  if (s.v !== 1) throw bad(`has format version ${JSON.stringify(s.v)} (this driver reads 1)`);
  if (typeof s.uuid !== 'string' || s.uuid.toLowerCase() !== uuid.toLowerCase()) throw bad('is of another instance');
  if (typeof s.name !== 'string' || s.name.length === 0) throw bad('has no name');
  if (typeof s.imageId !== 'string' || typeof s.backend !== 'string' || typeof s.createdAt !== 'string')
    throw bad('lacks its image, backend or creation time');
  const f = s.flavor as Partial<Flavor> | undefined;
  const posInt = (x: unknown): boolean => typeof x === 'number' && Number.isInteger(x) && x > 0;
  if (!f || !posInt(f.vcpus) || !posInt(f.memoryMiB) || typeof f.rootGiB !== 'number') throw bad('has no valid flavor');
  if (
    !Array.isArray(s.disks) ||
    s.disks.length === 0 ||
    s.disks[0]?.name !== 'disk' ||
    !s.disks.every((d) => typeof d?.name === 'string' && typeof d.sizeBytes === 'number')
  )
    throw bad('has no valid disk list');
  if (typeof s.rootDisk !== 'object' || s.rootDisk === null) throw bad('has no root disk report');
  if (s.domain !== undefined && (typeof s.domain !== 'object' || s.domain === null))
    throw bad('has invalid domain options');
  // Another host cannot unlock the disks without the key (the built-in provider keeps it on the
  // spawning host): starting them unencrypted would let the guest write over the LUKS header.
  if (s.encrypted !== undefined)
    throw new DriverError(
      'UNSUPPORTED',
      `instance ${uuid} has encrypted disks (capability encryption): its key is with the dead host's key provider, so it cannot be rebuilt on another host`,
      { instance: uuid },
    );
  return s as InstanceSpec;
}

/** What {@link evacuationPlan} decides from. */
export interface EvacuationFacts {
  instance: string;
  /** The dead host's id, and this host's. */
  fromHost: string;
  thisHost: string;
  /** The instance's disks in each loaded backend (`list({ instance })`). */
  disks: { backend: string; disk: DiskInfo }[];
  /** Backends whose disks live on one host (LVM, qcow2): never evacuated. */
  localBackends: readonly string[];
}

/**
 * Decides whether instance `instance` can be evacuated from `fromHost` to this host, before
 * anything is touched: its disks exist, all in one shared backend, and all are `fromHost`'s.
 * Resolves to that backend's name; throws the typed refusal otherwise.
 */
export function evacuationPlan(f: EvacuationFacts): { backend: string; disks: DiskInfo[] } {
  const { instance } = f;
  if (!isUuid(instance)) throw new DriverError('INVALID_ARGUMENT', `not an instance UUID: ${JSON.stringify(instance)}`);
  if (!isHostId(f.fromHost))
    throw new DriverError('INVALID_ARGUMENT', `not a host id: ${JSON.stringify(f.fromHost)}`, { instance });
  if (f.fromHost === f.thisHost)
    throw new DriverError('INVALID_ARGUMENT', `host ${f.fromHost} is this host: nothing to evacuate`, { instance });
  if (f.disks.length === 0)
    throw new DriverError('INSTANCE_NOT_FOUND', `no backend holds a disk of instance ${instance}`, { instance });
  const backends = [...new Set(f.disks.map((d) => d.backend))];
  const local = backends.filter((b) => f.localBackends.includes(b));
  if (local.length)
    throw new DriverError(
      'UNSUPPORTED',
      `instance ${instance} is on ${local.join(', ')}: its disks are local to host ${f.fromHost} and died with it; only shared RBD disks can be evacuated`,
      { instance },
    );
  if (backends.length > 1)
    throw new DriverError(
      'INSTANCE_STATE',
      `instance ${instance} has disks in several backends (${backends.join(', ')})`,
      {
        instance,
      },
    );
  const notTheirs = f.disks.filter((d) => d.disk.owner?.hostId !== f.fromHost);
  if (notTheirs.length) {
    const whose = notTheirs.map(
      (d) => `${d.disk.id} (${d.disk.owner ? `owned by ${d.disk.owner.hostId}` : 'no owner record'})`,
    );
    throw new DriverError(
      'INSTANCE_STATE',
      `instance ${instance} is not host ${f.fromHost}'s: ${whose.join(', ')}. Evacuate only from the host that owns every disk`,
      { instance },
    );
  }
  return { backend: backends[0]!, disks: f.disks.map((d) => d.disk) };
}

/** The addresses a fence blocklisted, once each (a client's watch and lock share one). */
export function fencedAddresses(clients: readonly DiskClient[]): string[] {
  return [...new Set(clients.map((c) => c.address.replace(/^v[12]:/, '')))].sort();
}
