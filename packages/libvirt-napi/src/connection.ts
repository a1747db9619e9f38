import { EventEmitter } from 'node:events';
import { binding } from './binding.js';
import {
  CLOSE_REASONS,
  lifecycleEvent,
  SECRET_USAGE_TYPES,
  type CloseReason,
  type LifecycleEvent,
  type SecretUsageType,
} from './constants.js';
import { Domain } from './domain.js';
import type { ConnHandle, RawEvent } from './native.js';
import { Secret } from './secret.js';

/** Options for `connect()`. */
export interface ConnectOptions {
  /** Open a read-only connection (`VIR_CONNECT_RO`). */
  readOnly?: boolean;
  /**
   * Keepalive for remote connections so a dead daemon is noticed: a probe every `interval`
   * seconds, the connection closes (reason `'keepalive'`) after `count` unanswered probes.
   * Default `{ interval: 5, count: 3 }`; `false` disables it. Ignored by local drivers.
   */
  keepAlive?: { interval: number; count: number } | false;
}

/** Events a Connection emits. */
export interface ConnectionEvents {
  /** A domain changed state (started, stopped, crashed, ...), with libvirt's reason in `detail`. */
  lifecycle: [event: LifecycleEvent];
  /**
   * The connection to libvirtd was lost (`'eof'` when the daemon exited or restarted,
   * `'keepalive'` when it stopped answering, `'error'` on an I/O error). Not emitted by
   * `close()`. Every later call rejects: open a new connection.
   */
  close: [reason: CloseReason];
}

/** `libvirt` version numbers, e.g. 9.0.0 is `{ major: 9, minor: 0, release: 0, number: 9000000 }`. */
export interface LibvirtVersion {
  major: number;
  minor: number;
  release: number;
  /** libvirt's encoding: `major * 1_000_000 + minor * 1000 + release`. */
  number: number;
}

/** Parses libvirt's `major * 1_000_000 + minor * 1000 + release` version encoding. */
export function parseVersion(number: number): LibvirtVersion {
  return {
    major: Math.floor(number / 1_000_000),
    minor: Math.floor(number / 1000) % 1000,
    release: number % 1000,
    number,
  };
}

/**
 * Version of the libvirt client library this process loaded (local, no connection needed).
 * Implements virGetVersion().
 */
export function libvirtVersion(): LibvirtVersion {
  return parseVersion(binding().getVersion());
}

/** Options for `domainCapabilities()`; unset fields let libvirt pick the host's defaults. */
export interface DomainCapabilitiesOptions {
  emulatorBin?: string;
  arch?: string;
  machine?: string;
  /** e.g. `'kvm'` or `'qemu'`. */
  virtType?: string;
  flags?: number;
}

/** Options for `waitForLifecycle()`. */
export interface WaitForLifecycleOptions {
  /** Reject with a TimeoutError-named Error after this many milliseconds. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

const SECRET_USAGE_CODES = new Map<string, number>(SECRET_USAGE_TYPES.map((name, i) => [name, i]));

/**
 * An open connection to a libvirt driver (`qemu:///system`, `test:///default`, ...). Created by
 * `connect()`. Every method that can block runs on the binding's native worker threads and
 * returns a promise; failures reject with a LibvirtError.
 *
 * Events arrive through libvirt's event loop, which the binding runs on its own native thread.
 * Listeners do not keep the process alive (call `ref()` to change that). Call `close()` when done.
 */
export class Connection extends EventEmitter<ConnectionEvents> {
  /** The URI this connection was opened with. */
  readonly uri: string;
  /** Whether the connection is read-only. */
  readonly readOnly: boolean;
  #handle: ConnHandle | undefined;
  #closed = false;
  #lost: CloseReason | undefined;

  /** @internal use `connect()` */
  constructor(uri: string, readOnly: boolean) {
    super();
    this.uri = uri;
    this.readOnly = readOnly;
  }

  /** @internal */
  _attach(handle: ConnHandle): void {
    this.#handle = handle;
  }

  /** @internal receives native events on the JS thread. */
  _dispatch(...raw: RawEvent): void {
    if (raw[0] === 'lifecycle') {
      const { name, uuid, event, detail } = raw[1];
      const ev = lifecycleEvent({ name, uuid }, event, detail);
      if (ev !== undefined) this.emit('lifecycle', ev);
    } else {
      const reason = CLOSE_REASONS[raw[1].reason] ?? 'error';
      this.#lost = reason;
      this.emit('close', reason);
    }
  }

  get #h(): ConnHandle {
    if (this.#handle === undefined) throw new Error('connection is not open');
    return this.#handle;
  }

  /** True once `close()` was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Set when libvirt reported the connection lost (the `close` event's reason). */
  get lostReason(): CloseReason | undefined {
    return this.#lost;
  }

  /** Whether the connection is usable (a local check, no round trip). Implements virConnectIsAlive(). */
  isAlive(): boolean {
    return !this.#closed && this.#handle !== undefined && binding().isAlive(this.#handle);
  }

  /** Keep the process alive while this connection can deliver events. Binding only (no libvirt call). */
  ref(): this {
    if (this.#handle !== undefined) binding().setEventsRef(this.#handle, true);
    return this;
  }

  /** Undo `ref()` (the default: an open connection does not keep the process alive). Binding only (no libvirt call). */
  unref(): this {
    if (this.#handle !== undefined) binding().setEventsRef(this.#handle, false);
    return this;
  }

  /** Version of the libvirt library the daemon side uses. Implements virConnectGetLibVersion(). */
  async libVersion(): Promise<LibvirtVersion> {
    return parseVersion(await binding().libVersion(this.#h));
  }

  /** Version of the hypervisor (e.g. QEMU 7.2.0 is 7002000). Implements virConnectGetVersion(). */
  async hypervisorVersion(): Promise<LibvirtVersion> {
    return parseVersion(await binding().hypervisorVersion(this.#h));
  }

  /** The host name of the hypervisor host. Implements virConnectGetHostname(). */
  hostname(): Promise<string> {
    return binding().hostname(this.#h);
  }

  /** The host capabilities XML. Implements virConnectGetCapabilities(). */
  capabilities(): Promise<string> {
    return binding().capabilities(this.#h);
  }

  /**
   * The domain capabilities XML for an emulator/arch/machine/virt type.
   * Implements virConnectGetDomainCapabilities().
   */
  domainCapabilities(options: DomainCapabilitiesOptions = {}): Promise<string> {
    return binding().domainCapabilities(
      this.#h,
      options.emulatorBin,
      options.arch,
      options.machine,
      options.virtType,
      options.flags ?? 0,
    );
  }

  /** All domains matching `flags` (`ListDomainsFlags`; 0 = all). Implements virConnectListAllDomains(). */
  async listAllDomains(flags = 0): Promise<Domain[]> {
    const raw = await binding().listAllDomains(this.#h, flags);
    return raw.map((r) => new Domain(this, r));
  }

  /**
   * Defines (or updates) a persistent domain from XML (`DefineFlags`); does not start it.
   * Implements virDomainDefineXMLFlags().
   */
  async defineXML(xml: string, flags = 0): Promise<Domain> {
    return new Domain(this, await binding().defineXML(this.#h, xml, flags));
  }

  /** Creates and starts a transient domain from XML (`StartFlags`). Implements virDomainCreateXML(). */
  async createXML(xml: string, flags = 0): Promise<Domain> {
    return new Domain(this, await binding().createXML(this.#h, xml, flags));
  }

  /** Looks a domain up by name (rejects with `VIR_ERR_NO_DOMAIN`). Implements virDomainLookupByName(). */
  async lookupByName(name: string): Promise<Domain> {
    return new Domain(this, await binding().lookupByName(this.#h, name));
  }

  /** Looks a domain up by UUID (rejects with `VIR_ERR_NO_DOMAIN`). Implements virDomainLookupByUUIDString(). */
  async lookupByUUID(uuid: string): Promise<Domain> {
    return new Domain(this, await binding().lookupByUUID(this.#h, uuid));
  }

  /**
   * Defines (or updates) a secret from XML; set its value with `secret.setValue()`.
   * Implements virSecretDefineXML().
   */
  async defineSecret(xml: string, flags = 0): Promise<Secret> {
    return new Secret(this, await binding().defineSecret(this.#h, xml, flags));
  }

  /**
   * Looks a secret up by usage, e.g. `('ceph', 'client.nova secret')` (rejects with `VIR_ERR_NO_SECRET`).
   * Implements virSecretLookupByUsage().
   */
  async lookupSecretByUsage(type: SecretUsageType, usage: string): Promise<Secret> {
    const code = SECRET_USAGE_CODES.get(type);
    if (code === undefined) throw new TypeError(`unknown secret usage type: ${String(type)}`);
    return new Secret(this, await binding().lookupSecretByUsage(this.#h, usage, code));
  }

  /** Looks a secret up by UUID (rejects with `VIR_ERR_NO_SECRET`). Implements virSecretLookupByUUIDString(). */
  async lookupSecretByUUID(uuid: string): Promise<Secret> {
    return new Secret(this, await binding().lookupSecretByUUID(this.#h, uuid));
  }

  /** All secrets matching `flags` (`ListSecretsFlags`; 0 = all). Implements virConnectListAllSecrets(). */
  async listAllSecrets(flags = 0): Promise<Secret[]> {
    const raw = await binding().listAllSecrets(this.#h, flags);
    return raw.map((r) => new Secret(this, r));
  }

  /**
   * Resolves with the first lifecycle event matching `filter`. Call it before the action that
   * causes the event.
   */
  waitForLifecycle(
    filter: (event: LifecycleEvent) => boolean,
    options: WaitForLifecycleOptions = {},
  ): Promise<LifecycleEvent> {
    return new Promise((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      let listening = false;
      const cleanup = (): void => {
        this.off('lifecycle', onEvent);
        this.off('close', onClose);
        if (listening) this.setMaxListeners(this.getMaxListeners() - 1);
        listening = false;
        if (timer !== undefined) clearTimeout(timer);
        options.signal?.removeEventListener('abort', onAbort);
      };
      const onEvent = (ev: LifecycleEvent): void => {
        let match: boolean;
        try {
          match = filter(ev);
        } catch (err) {
          cleanup();
          reject(err);
          return;
        }
        if (match) {
          cleanup();
          resolve(ev);
        }
      };
      const onClose = (reason: CloseReason): void => {
        cleanup();
        reject(new Error(`connection lost (${reason}) while waiting for a lifecycle event`));
      };
      const onAbort = (): void => {
        cleanup();
        reject(options.signal?.reason ?? new Error('aborted'));
      };
      if (options.signal?.aborted) {
        onAbort();
        return;
      }
      // One listener per waiter, gone when it settles: as many as the caller's concurrent waits
      // (a driver's concurrent spawns), not a leak, so the warning's bound grows with them.
      this.setMaxListeners(this.getMaxListeners() + 1);
      listening = true;
      this.on('lifecycle', onEvent);
      this.on('close', onClose);
      options.signal?.addEventListener('abort', onAbort, { once: true });
      if (options.timeoutMs !== undefined) {
        timer = setTimeout(() => {
          cleanup();
          const err = new Error(`no matching lifecycle event within ${options.timeoutMs} ms`);
          err.name = 'TimeoutError';
          reject(err);
        }, options.timeoutMs);
      }
    });
  }

  /**
   * Deregisters the event callbacks and closes the connection. Idempotent. Domains and secrets
   * obtained from it become unusable once they are garbage-collected or the connection is gone.
   * Implements virConnectClose().
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#handle !== undefined) await binding().close(this.#handle);
  }
}

/**
 * Opens a connection to `uri` (e.g. `qemu:///system`, `qemu+unix:///system?socket=/path`,
 * `test:///default`). Rejects with a LibvirtError if libvirt cannot connect, and with a
 * LibvirtLoadError if the native addon is missing.
 * Implements virConnectOpenAuth().
 */
export async function connect(uri: string, options: ConnectOptions = {}): Promise<Connection> {
  const b = binding();
  const readOnly = options.readOnly === true;
  const ka = options.keepAlive === false ? { interval: 0, count: 0 } : (options.keepAlive ?? { interval: 5, count: 3 });
  const conn = new Connection(uri, readOnly);
  const emit = (...ev: RawEvent): void => {
    try {
      conn._dispatch(...ev);
    } catch (err) {
      // A listener threw: report it as an uncaught exception, as for any event listener
      // (an exception thrown into a native thread-safe callback would only be a warning).
      process.nextTick(() => {
        throw err;
      });
    }
  };
  const handle = await b.connect(uri, readOnly, emit, ka.interval, ka.count);
  conn._attach(handle);
  return conn;
}
