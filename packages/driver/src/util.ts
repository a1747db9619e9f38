/** Small helpers shared by the driver's collaborators. */
import { readFileSync } from 'node:fs';
import { isGlanceError } from '@ephemera/glance';
import {
  isImageBackendError,
  type BackendRegistry,
  type DiskInfo,
  type ImageBackend,
  type OwnerStamp,
} from '@ephemera/image-backend';
import type { DriverConfig } from './config.js';
import { DriverError } from './errors.js';

export const GiB = 1024 ** 3;
export const MiB = 1024 ** 2;

/** The guest device name of the `index`th disk on `bus` (vda, vdb, ...). */
export function targetDev(bus: DriverConfig['disk']['bus'], index: number): string {
  const prefix = bus === 'virtio' ? 'vd' : bus === 'ide' ? 'hd' : 'sd';
  return prefix + String.fromCharCode(97 + index);
}

export function errMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** A loaded backend, or INVALID_ARGUMENT naming the loaded ones. */
export function requireBackend(backends: BackendRegistry, name: string): ImageBackend {
  try {
    return backends.get(name);
  } catch (err) {
    if (isImageBackendError(err, 'UNKNOWN_BACKEND')) {
      throw new DriverError(
        'INVALID_ARGUMENT',
        `backend ${name} is not loaded (loaded: ${backends.names().join(', ')}); add it to images.enabled`,
        { cause: err },
      );
    }
    throw err;
  }
}

/** A loaded backend or undefined. */
export function tryBackend(backends: BackendRegistry, name: string): ImageBackend | undefined {
  try {
    return backends.get(name);
  } catch {
    return undefined;
  }
}

/** Glance's "not found" and the resolver's "no usable plan" as driver errors; anything else as it is. */
export function imageError(imageId: string, err: unknown): unknown {
  if (isGlanceError(err, 'GLANCE_NOT_FOUND'))
    return new DriverError('IMAGE_NOT_FOUND', `Glance image ${imageId} not found`, { cause: err });
  if (isGlanceError(err, 'GLANCE_NO_PLAN')) return new DriverError('IMAGE_UNUSABLE', err.message, { cause: err });
  return err;
}

/** The version of this driver package (written into every disk's owner record). */
export const DRIVER_VERSION: string = (
  JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }
).version;

/** The owner stamp of disks this host creates or takes over. */
export function ownerStamp(config: DriverConfig): OwnerStamp {
  return { hostId: config.host.id, version: DRIVER_VERSION };
}

/**
 * Whose a listed disk is, seen from host `hostId`: `mine`, `unowned` (no owner record: made before
 * ownership, or a create that died before recording it) or `other` (another host's: never touched).
 */
export function ownership(d: Pick<DiskInfo, 'owner'>, hostId: string): 'mine' | 'unowned' | 'other' {
  if (!d.owner) return 'unowned';
  return d.owner.hostId === hostId ? 'mine' : 'other';
}

/**
 * Gives the disks of instance `rec` to `owner` (`setOwner`): those owned by `onlyFrom` or by nobody
 * when `onlyFrom` is given, else every disk not already `owner`'s. Backends without owners: nothing.
 */
export async function takeDisks(
  backends: BackendRegistry,
  rec: { uuid: string; backend: string },
  owner: OwnerStamp,
  onlyFrom?: string,
): Promise<void> {
  const backend = requireBackend(backends, rec.backend);
  if (!backend.setOwner) return;
  for (const d of await backend.list({ instance: rec.uuid })) {
    if (d.owner?.hostId === owner.hostId) continue;
    if (onlyFrom !== undefined && d.owner && d.owner.hostId !== onlyFrom) continue;
    await backend.setOwner(d.disk, owner);
  }
}
