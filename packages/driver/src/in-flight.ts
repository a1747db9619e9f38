/** What the driver's collaborators share about operations running in this process. */
import { EventEmitter } from 'node:events';
import { injectable } from 'inversify';
import type { DriverEvents } from './events.js';
import { KeyedMutex } from './mutex.js';

/** The per-instance lock and the journal operations this process is running. */
@injectable()
export class InFlight {
  /** One operation per instance at a time. */
  readonly mutex = new KeyedMutex();
  /** opIds of operations in progress here (reconcile skips them; `operations()` calls them in-progress). */
  readonly active = new Set<string>();
}

/** The driver's event emitter (`step`, `progress`, `lifecycle`), shared by the collaborators that emit. */
export class DriverEventBus extends EventEmitter<DriverEvents> {}
