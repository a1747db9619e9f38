/** Small helpers shared by the driver's collaborators. */
import { GlanceNotFoundError, NoUsablePlanError } from '@ephemera/glance';
import { isImageBackendError, type BackendRegistry, type ImageBackend } from '@ephemera/image-backend';
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
      throw new DriverError('INVALID_ARGUMENT', `backend ${name} is not loaded (loaded: ${backends.names().join(', ')}); add it to images.enabled`, { cause: err });
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
  if (err instanceof GlanceNotFoundError) return new DriverError('IMAGE_NOT_FOUND', `Glance image ${imageId} not found`, { cause: err });
  if (err instanceof NoUsablePlanError) return new DriverError('IMAGE_UNUSABLE', err.message, { cause: err });
  return err;
}
