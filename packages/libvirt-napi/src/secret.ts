import { binding, closedError } from './binding.js';
import { SECRET_USAGE_TYPES, type SecretUsageType } from './constants.js';
import type { Connection } from './connection.js';
import type { RawSecret, SecretHandle } from './native.js';

/**
 * A libvirt secret (e.g. a Ceph key referenced from disk XML by UUID). The binding never reads a
 * secret's value back and never puts it in errors, logs or XML: `setValue` copies the bytes to
 * native memory, hands them to libvirt and zeroes the copy.
 */
export class Secret {
  /** The connection this secret was obtained from. */
  readonly connection: Connection;
  readonly #handle: SecretHandle;
  readonly #uuid: string;
  readonly #usageType: SecretUsageType;
  readonly #usageID: string;

  /** @internal */
  constructor(connection: Connection, raw: RawSecret) {
    this.connection = connection;
    this.#handle = raw.handle;
    this.#uuid = raw.uuid;
    this.#usageType = SECRET_USAGE_TYPES[raw.usageType] ?? 'none';
    this.#usageID = raw.usageID;
  }

  /** The native handle, or a rejection once the connection was closed. */
  #run<T>(call: (h: SecretHandle) => Promise<T>): Promise<T> {
    if (this.connection.closed) return Promise.reject(closedError());
    return call(this.#handle);
  }

  /** The secret's UUID. */
  uuid(): string {
    return this.#uuid;
  }

  /** What the secret is for, e.g. `'ceph'`. */
  usageType(): SecretUsageType {
    return this.#usageType;
  }

  /** The usage name, e.g. `'client.nova secret'` for a ceph secret. */
  usageID(): string {
    return this.#usageID;
  }

  /** The secret's definition XML (libvirt never includes the value). Implements virSecretGetXMLDesc(). */
  xml(): Promise<string> {
    return this.#run((h) => binding().secretXML(h, 0));
  }

  /**
   * Sets the secret's value to `bytes` (raw bytes; for a Ceph key pass the decoded key:
   * `Buffer.from(keyBase64, 'base64')`). The caller keeps ownership of `bytes`.
   * Implements virSecretSetValue().
   */
  setValue(bytes: Uint8Array): Promise<void> {
    if (!(bytes instanceof Uint8Array)) {
      return Promise.reject(new TypeError('secret value must be a Uint8Array'));
    }
    return this.#run((h) => binding().secretSetValue(h, bytes, 0));
  }

  /** Deletes the secret. Implements virSecretUndefine(). */
  undefine(): Promise<void> {
    return this.#run((h) => binding().secretUndefine(h));
  }

  /** @internal */
  toJSON(): { uuid: string; usageType: SecretUsageType; usageID: string } {
    return { uuid: this.#uuid, usageType: this.#usageType, usageID: this.#usageID };
  }
}
