/**
 * Encryption keys of encrypted disks. A key provider stores one passphrase per key id (the driver
 * uses the instance UUID: one key per instance). The driver ships a file provider; an embedder
 * binds another one (Barbican, Vault) to {@link KEY_PROVIDER}, as it would bind a backend.
 */

/** Stores the passphrases of encrypted disks. Implementations never log or print a key. */
export interface KeyProvider {
  /** Provider name, e.g. `file`, `barbican` (recorded in the journal to find the key again). */
  readonly name: string;
  /**
   * Makes a new random key for `keyId` and returns it (the caller zeroes the bytes after use).
   * Rejects when a key with that id exists (a key is never replaced silently).
   */
  createKey(keyId: string): Promise<Uint8Array>;
  /** The key of `keyId`; rejects when there is none. The caller zeroes the bytes after use. */
  getKey(keyId: string): Promise<Uint8Array>;
  /** Deletes the key of `keyId`. Idempotent: `false` when there was none. */
  deleteKey(keyId: string): Promise<boolean>;
  /** Optional: every key id it holds (lets gc find keys a crash left without an instance). */
  listKeys?(): Promise<string[]>;
}

/** inversify service identifier of the {@link KeyProvider} (`Symbol.for`, so separately built copies agree). */
export const KEY_PROVIDER: unique symbol = Symbol.for('@ephemera/image-backend:KeyProvider');
