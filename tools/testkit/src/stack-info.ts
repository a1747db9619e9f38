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

/**
 * One compute host of the stack (`tools/stack up --hosts N`): its own libvirtd (own mount
 * namespace, socket, fixed host UUID) and Ephemera state directory; Ceph, Glance and the libvirt
 * ceph secret (same UUID and key) are shared by all hosts.
 */
export interface StackHost {
  /** 1, 2, ...: host 1 is the stack's `libvirt` (the default host). */
  id: number;
  /** Its libvirtd's service name for `tools/stack start|stop|restart`: `libvirtd` (host 1), `libvirtd@<id>`. */
  service: string;
  /** URI of its libvirtd, e.g. `qemu+unix:///system?socket=<dir>/host2/libvirt/sock/libvirt-sock`. */
  libvirtUri: string;
  /** Its fixed libvirt host UUID (`host_uuid`; distinct per host, as live migration requires). */
  hostUuid: string;
  /** Its own Ephemera state directory (host 1: `<dir>/ephemera`; not created by the stack). */
  stateDir: string;
  /** Loopback address its libvirtd gives for incoming (non-tunnelled) migration: `127.0.0.<id+1>`. */
  migrationAddress: string;
  /** Its libvirtd's `migration_port_min`/`max` (distinct per host). */
  migrationPorts: { min: number; max: number };
  /** Pid of its libvirtd, or null while stopped. */
  pid: number | null;
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
  /** The compute hosts, host 1 first (one unless `up --hosts N` or `$EPHEMERA_STACK_HOSTS`). */
  hosts: StackHost[];
  /** Process ids the stack started, by service name (`libvirtd@<id>` for hosts after the first). */
  pids: Record<string, number>;
}
