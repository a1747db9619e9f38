/**
 * The libvirt ceph secret an RBD disk names, as spawns need it: checked before a spawn journals
 * anything, defined (journaled) when missing, and remembered once libvirt holds it, so that later
 * spawns make no libvirt call for it. A secret removed behind our back fails the domain start:
 * `forget()` it, `ensure()` it again and retry.
 */
import { inject, injectable } from 'inversify';
import type { ImageBackend } from '@ephemera/image-backend';
import { isLibvirtError } from '@ephemera/libvirt-napi';
import { defineCephSecret, findCephSecret, readCephKey } from './ceph.js';
import { DriverError } from './errors.js';
import type { JournalOp } from './journal.js';
import { LibvirtSession } from './libvirt-session.js';
import type { Logger } from './logger.js';
import { DRIVER_TYPES } from './tokens.js';
import type { CephContext } from './types.js';

@injectable()
export class CephSecretGuard {
  /** Secret UUIDs libvirt is known to hold (seen at driver start or by a spawn). */
  readonly #known = new Set<string>();

  constructor(
    @inject(DRIVER_TYPES.Logger) private readonly log: Logger,
    @inject(DRIVER_TYPES.CephContext) private readonly ceph: CephContext,
    @inject(LibvirtSession) private readonly session: LibvirtSession,
  ) {}

  /** Forgets what we knew of these secrets (the start said one is gone). */
  forget(uuids: Iterable<string>): void {
    for (const u of uuids) this.#known.delete(u);
  }

  /**
   * Checks, before anything is journaled or created, that the ceph secret an RBD disk will name
   * is usable: libvirt holds it under the configured UUID, or it can be defined (no other UUID for
   * the user, a keyring with the user's key). Otherwise the spawn fails with INVALID_CONFIG.
   */
  async check(backend: ImageBackend): Promise<void> {
    const c = this.ceph;
    if (backend.name !== 'rbd' || !c.secretUuid || (await this.#held(c.secretUuid))) return;
    if (!c.keyringPath)
      throw new DriverError(
        'INVALID_CONFIG',
        `libvirt has no ceph secret ${c.secretUuid} and there is no keyring for client.${c.user} to define it: set images.rbd.keyring`,
      );
    // Only proves the key can be read (the error names the file, never the key); zeroed at once.
    (await readCephKey(c.keyringPath, c.user)).fill(0);
  }

  /**
   * Whether libvirt holds `uuid` as the user's ceph secret (remembered once seen); INVALID_CONFIG
   * when it holds the user's secret under another UUID.
   */
  async #held(uuid: string): Promise<boolean> {
    if (this.#known.has(uuid)) return true;
    const existing = await findCephSecret(await this.session.connection(), uuid, this.ceph.user);
    if (existing === uuid) {
      this.#known.add(uuid);
      return true;
    }
    if (existing !== undefined) {
      throw new DriverError(
        'INVALID_CONFIG',
        `libvirt already has a ceph secret for client.${this.ceph.user} with UUID ${existing}; set images.rbd.secretUuid to it`,
      );
    }
    return false;
  }

  /**
   * Looks the configured ceph secret up once (at driver start), so that spawns need not. Never
   * fails: a spawn checks again when the secret was not found.
   */
  async verify(): Promise<void> {
    const c = this.ceph;
    if (!c.secretUuid) return;
    const found = await findCephSecret(await this.session.connection(), c.secretUuid, c.user).catch(() => undefined);
    if (found === c.secretUuid) this.#known.add(found);
  }

  /** Defines the ceph secret when libvirt does not have it (journaled, so rollback can remove it). */
  async ensure(op: JournalOp, uuid: string): Promise<void> {
    const c = this.ceph;
    if (await this.#held(uuid)) return;
    if (!c.keyringPath)
      throw new DriverError('INVALID_CONFIG', `no keyring for client.${c.user}: set images.rbd.keyring`);
    await op.intent('secret', { kind: 'secret', uuid, created: true });
    await defineCephSecret(await this.session.connection(), uuid, c.user, c.keyringPath);
    await op.done('secret');
    this.#known.add(uuid);
    this.log.info({ instance: op.instance, secretUuid: uuid }, `defined libvirt ceph secret for client.${c.user}`);
  }
}

/** libvirt refused to start a domain because a secret its disks name does not exist. */
export function isMissingSecret(err: unknown): boolean {
  for (let e = err; e; e = (e as { cause?: unknown }).cause) if (isLibvirtError(e, 'VIR_ERR_NO_SECRET')) return true;
  return false;
}
