import { nbdJson, rbdLocation, rbdUri, type NbdLocation, type RbdLocation } from '@ephemera/qemu-img-wrapper';

/** Where qemu-img writes: an RBD image reached with a ceph.conf and (optionally) a keyring path. */
export interface RbdTarget {
  pool: string;
  image: string;
  /** Read a snapshot (sources only). */
  snapshot?: string;
  /** cephx id without `client.`. */
  user: string;
  confPath: string;
  /** A keyring *file*; never a key. */
  keyringPath?: string;
}

/** The `@ephemera/qemu-img-wrapper` location of an RBD target (`rbd:` URI spelling, paths only). */
export function rbdTarget(t: RbdTarget): RbdLocation {
  return rbdLocation(t, 'uri');
}

/**
 * `rbd:pool/image:id=user:conf=path[:keyring=path]`, with QEMU's backslash escaping. Only file
 * paths: a key can never reach qemu-img's argv.
 */
export function rbdTargetUri(t: RbdTarget): string {
  return rbdUri(t);
}

/** The `json:` spelling of an NBD export (a loopback server's) for QEMU's nbd driver (format from `-f`). */
export function nbdSource(loc: NbdLocation): string {
  return nbdJson(loc);
}
