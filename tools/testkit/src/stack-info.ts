/**
 * The shape of `stack.json`, written by `tools/stack up` into the stack directory
 * (default `<repo>/.stack`, overridden by `EPHEMERA_STACK_DIR`). It is everything a client
 * needs to reach the dev stack. Secrets are never inlined: only keyring *paths*.
 */
export interface CephUser {
  /** cephx id without the `client.` prefix, e.g. `ephemera`. */
  id: string;
  /** Path of a keyring file holding this user's key. */
  keyringPath: string;
  /** A ceph.conf for this user (mon_host + keyring), usable by librados, qemu and the rbd CLI. */
  confPath: string;
}

export interface StackInfo {
  /** Absolute path of the stack's state directory. */
  dir: string;
  /** ISO time of the `up` that created this stack. */
  createdAt: string;
  ceph: {
    fsid: string;
    /** Admin ceph.conf (keyring = client.admin). */
    confPath: string;
    /** `mon_host` value, e.g. `[v2:127.0.0.1:40001,v1:127.0.0.1:40000]`. */
    monHost: string;
    /** Monitors as host/port pairs for the msgr v1 protocol (what QEMU/libvirt `<host>` uses). */
    monitors: { host: string; port: number }[];
    users: {
      admin: CephUser;
      glance: CephUser;
      ephemera: CephUser;
    };
    pools: { images: string; vms: string; rbd: string };
    /** `memstore` or `bluestore`. */
    objectStore: string;
  };
  glance: {
    /** Base URL, e.g. `http://127.0.0.1:40100` (no trailing slash, no `/v2`). */
    url: string;
    port: number;
    /** The rbd store pool Glance writes to. */
    pool: string;
  };
  libvirt: {
    /** URI of the stack's own libvirtd (QEMU driver), e.g. `qemu+unix:///system?socket=...`. */
    uri: string;
    /** Whether guests can use KVM here. */
    accel: 'kvm' | 'tcg';
    /** libvirt `<domain type=...>` matching `accel`: `kvm` or `qemu`. */
    domainType: 'kvm' | 'qemu';
    /** UUID of a libvirt ceph secret holding client.ephemera's key, defined at `up`. */
    cephSecretUuid: string;
  };
  /** Process ids the stack started, by service name. */
  pids: Record<string, number>;
}
