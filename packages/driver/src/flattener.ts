/**
 * Background flattens (issue 21 item 4), the driver's side of a Nova-style split: the RBD backend
 * has the mechanics (`finishDirectSnapshot`, `flatten`, `cloneDepth`), the driver decides when
 * they run. One queue per driver, `images.rbd.flattenConcurrency` at a time (default 1: a flatten
 * reads the whole parent and writes the whole clone, so one at a time leaves the cluster's I/O to
 * the guests and to spawns). Each job runs under its instance's mutex (a destroy or a second
 * snapshot of that instance waits for it) and is journaled (`flatten`), so that `reconcile` knows
 * a flatten whose process died and breaks that process's lock instead of waiting it out. What is
 * pending is also readable from the cluster alone (the backend's `pendingDirectSnapshots`, a
 * disk's `cloneDepth`), which is what `reconcile` scans, so whichever host owns the disk resumes.
 */
import { inject, injectable } from 'inversify';
import {
  BACKEND_REGISTRY,
  type BackendRegistry,
  type DiskRef,
  type FlattenOptions,
  type ImageBackend,
  type ProgressEvent,
} from '@ephemera/image-backend';
import type { DriverConfig } from './config.js';
import { DriverError } from './errors.js';
import { DriverEventBus, InFlight } from './in-flight.js';
import type { Journal, JournalEntry } from './journal.js';
import type { Logger } from './logger.js';
import { DRIVER_TYPES } from './tokens.js';
import { errMessage, requireBackend } from './util.js';

/** What the clone-depth policy does with a new clone that has `depth` ancestors. */
export type CloneDepthAction = 'none' | 'background' | 'before-return';

/**
 * The clone-depth policy (Ceph-CSI's soft and hard clone depth): above `hard` ancestors the clone
 * is flattened before the spawn returns, above `soft` in the background, otherwise left alone.
 */
export function cloneDepthAction(depth: number, limits: { soft: number; hard: number }): CloneDepthAction {
  if (!Number.isSafeInteger(depth) || depth < 0)
    throw new DriverError('INVALID_ARGUMENT', `clone depth must be a non-negative integer, got ${depth}`);
  if (depth > limits.hard) return 'before-return';
  if (depth > limits.soft) return 'background';
  return 'none';
}

/**
 * Applies the clone-depth policy to a new disk: flattens it now (`before-return`, with progress
 * events) or tells the caller to queue it (`background`). Backends without `cloneDepth`: `none`.
 */
export async function cloneDepthPolicy(
  backend: ImageBackend,
  disk: DiskRef,
  limits: { soft: number; hard: number },
  opts: FlattenOptions,
): Promise<CloneDepthAction> {
  if (!backend.cloneDepth) return 'none';
  const action = cloneDepthAction(await backend.cloneDepth(disk), limits);
  if (action === 'before-return') await backend.flatten(disk, opts);
  return action;
}

/** A flatten to run: a deferred direct snapshot's image (`imageId`), or the disk itself (depth). */
export interface FlattenJob {
  readonly instance: string;
  readonly backend: string;
  readonly disk: string;
  /** Set: finish the direct snapshot `imageId`; unset: flatten the disk (clone-depth policy). */
  readonly imageId?: string;
}

const jobKey = (j: FlattenJob): string => `${j.backend}/${j.instance}/${j.disk}/${j.imageId ?? '-'}`;

@injectable()
export class Flattener {
  readonly #queue: FlattenJob[] = [];
  readonly #keys = new Set<string>();
  readonly #running = new Set<Promise<void>>();
  readonly #abort = new AbortController();
  #idle: (() => void)[] = [];
  #closed = false;

  constructor(
    @inject(DRIVER_TYPES.Config) private readonly config: DriverConfig,
    @inject(DRIVER_TYPES.Logger) private readonly log: Logger,
    @inject(DRIVER_TYPES.Journal) private readonly journal: Journal,
    @inject(BACKEND_REGISTRY) private readonly backends: BackendRegistry,
    @inject(DriverEventBus) private readonly events: DriverEventBus,
    @inject(InFlight) private readonly inFlight: InFlight,
  ) {}

  /** Queues a job (a job already queued or running is not queued twice). Ignored after `close()`. */
  enqueue(job: FlattenJob): void {
    const key = jobKey(job);
    if (this.#closed || this.#keys.has(key)) return;
    this.#keys.add(key);
    this.#queue.push(job);
    this.#pump();
  }

  /** Whether a job for this (instance, disk, image) is queued or running here. */
  has(job: FlattenJob): boolean {
    return this.#keys.has(jobKey(job));
  }

  /** Resolves when nothing is queued or running. */
  idle(): Promise<void> {
    if (this.#keys.size === 0) return Promise.resolve();
    return new Promise((r) => this.#idle.push(r));
  }

  /**
   * Stops: queued jobs are dropped (their state is on the cluster: the next `reconcile` queues
   * them again), running ones are aborted where they can be (a librbd flatten in progress cannot
   * be interrupted: it is waited for) and their journal entries are left for `reconcile`.
   */
  async close(): Promise<void> {
    this.#closed = true;
    this.#abort.abort();
    for (const j of this.#queue.splice(0)) this.#keys.delete(jobKey(j));
    await Promise.allSettled([...this.#running]);
    this.#settle();
  }

  /**
   * Runs a job now (the caller holds the instance's mutex), journaled. `orphaned`: a process that
   * was running it died (its lock on the image is broken rather than waited out).
   */
  async run(job: FlattenJob, orphaned = false): Promise<void> {
    const backend = requireBackend(this.backends, job.backend);
    const disk: DiskRef = { instance: job.instance, name: job.disk };
    const op = await this.journal.begin('flatten', job.instance, { ...job });
    this.inFlight.active.add(op.opId);
    const step = job.imageId ? 'snapshot-flatten' : 'depth-flatten';
    const onProgress = (e: ProgressEvent) =>
      this.events.emit('progress', { ...e, instance: job.instance, op: 'flatten', step });
    const signal = this.#abort.signal;
    try {
      if (job.imageId) {
        if (!backend.finishDirectSnapshot)
          throw new DriverError('UNSUPPORTED', `backend ${backend.name} cannot finish direct snapshots`);
        await backend.finishDirectSnapshot(disk, { imageId: job.imageId, signal, onProgress, orphaned });
      } else await backend.flatten(disk, { signal, onProgress });
      await op.end('committed');
    } catch (err) {
      // Aborted by close(): the entry stays open for reconcile; otherwise the state on the cluster
      // still says what is pending, and the next reconcile queues it again.
      if (!signal.aborted) await op.end('rolled-back', errMessage(err)).catch(() => undefined);
      throw err;
    } finally {
      this.inFlight.active.delete(op.opId);
    }
  }

  /** Resumes the flatten of a journal entry whose process died (see `reconcile`). */
  async resume(e: JournalEntry): Promise<void> {
    const d = e.data;
    const job: FlattenJob = {
      instance: e.instance,
      backend: String(d.backend),
      disk: String(d.disk),
      ...(typeof d.imageId === 'string' ? { imageId: d.imageId } : {}),
    };
    await this.run(job, true);
  }

  #pump(): void {
    while (!this.#closed && this.#running.size < this.config.images.rbd.flattenConcurrency && this.#queue.length) {
      const job = this.#queue.shift()!;
      const log = this.log.child({ instance: job.instance, op: 'flatten' });
      const p: Promise<void> = this.inFlight.mutex
        .run(job.instance, () => this.run(job))
        .then(
          () => log.info({ disk: job.disk, imageId: job.imageId }, 'background flatten done'),
          (err) =>
            log.warn({ disk: job.disk, imageId: job.imageId, err: errMessage(err) }, 'background flatten failed'),
        )
        .finally(() => {
          this.#running.delete(p);
          this.#keys.delete(jobKey(job));
          this.#pump();
          this.#settle();
        });
      this.#running.add(p);
    }
  }

  #settle(): void {
    if (this.#keys.size > 0) return;
    for (const r of this.#idle.splice(0)) r();
  }
}
