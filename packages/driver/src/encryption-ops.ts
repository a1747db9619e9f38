/** Journal resources of an instance's encryption (its key and volume secret), for destroy and gc. */
import { DriverError } from './errors.js';
import type { JournalResource } from './journal.js';
import type { LibvirtSession } from './libvirt-session.js';
import { hasSecret, volumeSecretUuid } from './encryption.js';
import type { InstanceRecord } from './types.js';

/**
 * The key and the volume secret of an instance, in the order to journal them (so the secret is
 * undone before the key). From the record; without one (a half-made instance), the derived secret
 * UUID when libvirt has it, with the instance UUID as key id in the current provider.
 */
export async function encryptionResources(
  session: LibvirtSession,
  rec: InstanceRecord | undefined | null,
  uuid: string,
  provider?: string,
): Promise<JournalResource[]> {
  const enc = rec?.encryption;
  if (enc) {
    return [
      { kind: 'key', provider: enc.keyProvider, id: enc.keyId },
      { kind: 'secret', uuid: enc.secretUuid, created: true },
    ];
  }
  const secretUuid = volumeSecretUuid(uuid);
  if (rec || !(await hasSecret(await session.connection(), secretUuid))) return [];
  return [
    ...(provider ? [{ kind: 'key' as const, provider, id: uuid }] : []),
    { kind: 'secret', uuid: secretUuid, created: true },
  ];
}

/**
 * Refused up front, before anything is journaled or changed: growing the LUKS payload and
 * uploading the decrypted bytes of an encrypted disk are not implemented.
 */
export function unsupportedEncrypted(uuid: string, what: 'resize'): DriverError {
  return new DriverError(
    'UNSUPPORTED',
    `instance ${uuid} has encrypted disks: ${what} of an encrypted disk (capability encryption) is not supported`,
    { instance: uuid },
  );
}

/** What `explain` adds for RBD: an encrypted root disk is never a clone there. */
export const RBD_ENCRYPTED_NOTE =
  'encrypted (encryption / hw:ephemeral_encryption): copied, not cloned, because Ceph 16 cannot encrypt a clone of a plain image; qemu-img streams the image into a LUKS image';
