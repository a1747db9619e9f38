/** The driver's typed events. */
import type { ProgressEvent } from '@ephemera/image-backend';

/** Steps of a spawn, in order. */
export type SpawnStep =
  | 'preflight'
  | 'resolve'
  | 'key'
  | 'root-disk'
  | 'ephemeral-disk'
  | 'swap-disk'
  | 'secret'
  | 'xml'
  | 'define'
  | 'start';

/** An operation's step started or finished. */
export interface StepEvent {
  instance: string;
  op: string;
  step: string;
  status: 'started' | 'done' | 'failed';
  durationMs?: number;
  error?: string;
}

/** Progress of a long step (image download, import, conversion). */
export interface DriverProgressEvent extends ProgressEvent {
  instance: string;
  op: string;
  step: string;
}

/** An instance's state changed (from libvirt's lifecycle events and the driver's own operations). */
export interface InstanceLifecycleEvent {
  instance: string;
  /** `spawning`, `running`, `stopped`, `destroyed`, `error`, or libvirt's event name. */
  state: string;
  detail?: string;
}

/** `driver.on(name, listener)` event map. */
export interface DriverEvents {
  step: [StepEvent];
  progress: [DriverProgressEvent];
  lifecycle: [InstanceLifecycleEvent];
}
