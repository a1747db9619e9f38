/**
 * The libvirt session: the connection, its reconnect after libvirtd restarts, domain lookups,
 * lifecycle events forwarded as the driver's, and starting a domain until it runs.
 */
import { inject, injectable } from 'inversify';
import { sleep } from '@ephemera/image-backend';
import { connect as libvirtConnect, isLibvirtError, type Connection, type Domain } from '@ephemera/libvirt-napi';
import type { DriverConfig } from './config.js';
import { DriverError } from './errors.js';
import { DriverEventBus } from './in-flight.js';
import { InstanceStore } from './instance-store.js';
import type { Logger } from './logger.js';
import { DRIVER_TYPES } from './tokens.js';
import type { InstanceInfo, InstanceRecord } from './types.js';
import { errMessage } from './util.js';

/** QEMU's words for a LUKS passphrase that opens no key slot. */
const WRONG_KEY = /cannot unlock any keyslot|invalid password|encryption load fail/i;

@injectable()
export class LibvirtSession {
  #conn: Connection;
  #connLost = false;
  #reconnecting: Promise<Connection> | undefined;
  #closed = false;

  constructor(
    @inject(DRIVER_TYPES.Config) private readonly config: DriverConfig,
    @inject(DRIVER_TYPES.Logger) private readonly log: Logger,
    @inject(DRIVER_TYPES.Libvirt) libvirt: Connection,
    @inject(InstanceStore) private readonly store: InstanceStore,
    @inject(DriverEventBus) private readonly events: DriverEventBus,
  ) {
    this.#conn = libvirt;
    this.#watch(libvirt);
  }

  #watch(conn: Connection): void {
    conn.on('lifecycle', (ev) => {
      const uuid = this.store.uuidOfDomain(ev.domain.name);
      if (uuid) this.events.emit('lifecycle', { instance: uuid, state: ev.event, detail: ev.detail });
    });
    conn.on('close', (reason) => {
      if (conn !== this.#conn) return;
      this.#connLost = true;
      this.log.warn({ reason }, 'libvirt connection lost: reconnecting on next use');
    });
  }

  /** The current connection (replaced after libvirtd restarts). */
  get current(): Connection {
    return this.#conn;
  }

  /** A live libvirt connection: reconnects (once, shared) when libvirtd closed the last one. */
  async connection(): Promise<Connection> {
    if (this.#closed) throw new DriverError('INVALID_ARGUMENT', 'the driver is closed');
    if (!this.#connLost && !this.#conn.closed && this.#conn.isAlive()) return this.#conn;
    this.#reconnecting ??= (async () => {
      try {
        const old = this.#conn;
        // libvirtd restarting refuses connections for a moment: retry, with backoff, for up to
        // timeouts.libvirtReconnectMs (so a spawn's rollback still reaches it).
        const deadline = performance.now() + this.config.timeouts.libvirtReconnectMs;
        let fresh: Connection;
        for (let delay = 100; ; delay = Math.min(delay * 2, 1_000)) {
          try {
            fresh = await libvirtConnect(this.config.libvirt.uri);
            break;
          } catch (err) {
            if (this.#closed || performance.now() + delay > deadline) throw err;
            this.log.debug({ err: errMessage(err) }, 'libvirt reconnect failed: retrying');
            await sleep(delay);
          }
        }
        this.#conn = fresh;
        this.#connLost = false;
        this.#watch(fresh);
        await old.close().catch(() => undefined);
        this.log.info('reconnected to libvirt');
        return fresh;
      } finally {
        this.#reconnecting = undefined;
      }
    })();
    return this.#reconnecting;
  }

  /** The domain with this UUID, or undefined. */
  async domain(uuid: string): Promise<Domain | undefined> {
    try {
      return await (await this.connection()).lookupByUUID(uuid);
    } catch (err) {
      if (isLibvirtError(err, 'VIR_ERR_NO_DOMAIN')) return undefined;
      throw err;
    }
  }

  /** The domain with this UUID, or INSTANCE_NOT_FOUND. */
  async requireDomain(uuid: string): Promise<Domain> {
    const dom = await this.domain(uuid);
    if (!dom) throw new DriverError('INSTANCE_NOT_FOUND', `instance ${uuid} has no domain`, { instance: uuid });
    return dom;
  }

  /** A record with its domain's current state (`missing` when the domain is gone). */
  async info(rec: InstanceRecord): Promise<InstanceInfo> {
    const dom = await this.domain(rec.uuid);
    if (!dom) return { ...rec, state: 'missing' };
    const st = await dom.state();
    return { ...rec, state: st.state, stateReason: String(st.reason) };
  }

  /** True when a defined domain's XML names `secretUuid` (so the secret must stay). */
  async secretInUse(secretUuid: string): Promise<boolean> {
    for (const d of await (await this.connection()).listAllDomains()) {
      const xml = await d.xml().catch(() => '');
      if (xml.includes(secretUuid)) return true;
    }
    return false;
  }

  /**
   * Starts a defined domain and waits for libvirt's `started` event (or a running state). An
   * abort of `signal` stops the wait at once (ABORTED); libvirtd's start goes on, and the caller's
   * rollback settles it (`Compensator`'s settleStart) before destroying the domain.
   */
  async start(uuid: string, signal?: AbortSignal): Promise<void> {
    const dom = await this.domain(uuid);
    if (!dom) throw new DriverError('INSTANCE_NOT_FOUND', `no domain ${uuid}`, { instance: uuid });
    const ms = this.config.timeouts.startMs;
    const ac = new AbortController();
    const started = (await this.connection()).waitForLifecycle((e) => e.domain.uuid === uuid && e.event === 'started', {
      timeoutMs: ms,
      signal: ac.signal,
    });
    started.catch(() => undefined);
    // virDomainCreate blocks until QEMU is up, and QEMU waits for its disks (an unreachable Ceph
    // monitor: minutes). Past the deadline the half-started domain is destroyed, which makes
    // create() return.
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      dom.destroy().catch(() => undefined);
    }, ms);
    let onAbort: (() => void) | undefined;
    try {
      signal?.throwIfAborted();
      const run = (async () => {
        await dom.create();
        await started;
      })();
      if (signal) {
        run.catch(() => undefined);
        await Promise.race([
          run,
          new Promise<never>((_, reject) => {
            onAbort = () => reject(signal.reason);
            signal.addEventListener('abort', onAbort, { once: true });
          }),
        ]);
      } else {
        await run;
      }
    } catch (err) {
      ac.abort();
      if (signal?.aborted)
        throw new DriverError('ABORTED', `start of domain ${uuid} aborted`, { instance: uuid, cause: err });
      const st = timedOut ? undefined : await dom.state().catch(() => undefined);
      if (st && (st.state === 'running' || (st.state === 'shutoff' && st.reason === 'shutdown'))) return;
      // QEMU could not unlock an encrypted disk with the secret's value: a key problem, typed.
      const code =
        timedOut || (err as Error).name === 'TimeoutError'
          ? 'TIMEOUT'
          : WRONG_KEY.test(errMessage(err))
            ? 'ENCRYPTION_KEY'
            : 'SPAWN_FAILED';
      throw new DriverError(
        code,
        `domain ${uuid} did not start${timedOut ? ` within ${ms} ms` : ''}: ${errMessage(err)}`,
        { instance: uuid, cause: err },
      );
    } finally {
      if (onAbort) signal?.removeEventListener('abort', onAbort);
      // Aborted: the rollback's settleStart bounds the wait for libvirtd's start instead.
      clearTimeout(timer);
    }
  }

  /** Refuses further use (a reconnect in progress stops retrying). */
  markClosed(): void {
    this.#closed = true;
  }

  /** Closes the connection; the session refuses further use. */
  async close(): Promise<void> {
    this.#closed = true;
    await this.#conn.close().catch(() => undefined);
  }
}
