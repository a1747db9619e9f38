import { isRbdError } from '@ephemera/ceph-rbd-napi';

/**
 * How recent a monitor's answer may be for a clone to skip its own ping (ms). A spawn's preflight
 * pings just before its clone, and a burst of clones would otherwise send one mon command each,
 * which competes with the clone for this host's CPU (about 5 % of a clone on the dev stack). Much
 * shorter than librados' own monitor failure detection (`mon_client_ping_timeout`, 30 s).
 */
export const MONITOR_FRESH_MS = 1000;

/** `rados_mon_command` errors that mean no monitor answered; any other error is an answer (EACCES). */
const NO_ANSWER = new Set(['ETIMEDOUT', 'ESHUTDOWN', 'ENOTCONN']);

/**
 * Whether a Ceph monitor answers. Callers at the same time share one ping (its answer comes after
 * each of them asked), and a caller may accept an answer at most `freshMs` old, unless a ping
 * since went unanswered.
 */
export class MonitorProbe {
  #answeredAt = Number.NEGATIVE_INFINITY;
  #pending: Promise<void> | undefined;

  constructor(
    private readonly ping: () => Promise<void>,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** Resolves when a monitor answers (or answered within `freshMs`); rejects with the ping's error otherwise. */
  check(freshMs = 0): Promise<void> {
    if (freshMs > 0 && this.now() - this.#answeredAt < freshMs) return Promise.resolve();
    this.#pending ??= this.ping()
      .then(
        () => this.#answered(),
        (e: unknown) => {
          if (isRbdError(e) && !NO_ANSWER.has(e.code)) return this.#answered();
          this.#answeredAt = Number.NEGATIVE_INFINITY; // an older answer no longer counts
          throw e;
        },
      )
      .finally(() => {
        this.#pending = undefined;
      });
    return this.#pending;
  }

  #answered(): void {
    this.#answeredAt = this.now();
  }
}
