/**
 * Every driver option, once: its type, default, description, environment variable and, where one
 * exists, the equivalent Nova option. The {@link DriverConfig} type, the defaults, the validation
 * of each configuration layer, {@link CONFIG_SCHEMA} and `docs/configuration.md` all derive from
 * {@link driverConfigSchema}. Adding an option is one line here (see `option` in config-options.ts).
 */
import { z } from 'zod';
import { BOOTABLE_BACKENDS } from './backend-names.js';
import { type OptionLeaf, type OptionSpec, option, optionLeaves } from './config-options.js';

/**
 * The driver's configuration as a zod schema: nested objects as in a JSON config file, one
 * `option.*(...)` leaf per option, ending in `.default(value)` or `.optional()` (unset unless given).
 * Paths may use `${stateDir}` in their default.
 */
export const driverConfigSchema = z.object({
  stateDir: option
    .path({
      description: "Directory for the driver's state: the operation journal, instance records and serial console logs.",
    })
    .default('/var/lib/ephemera'),
  instancesPath: option
    .path({
      nova: '[DEFAULT] instances_path',
      description: 'Where per-instance files live (console log, record; qcow2 disks with the qcow2 backend).',
    })
    .default('${stateDir}/instances'),
  host: z.object({
    id: option
      .string({
        nova: '[DEFAULT] host',
        description:
          "This compute host's id, recorded as the owner of every disk it creates and in every log line; `list`, `gc` and `reconcile` touch only disks of this id. 1..64 of `A-Za-z0-9._-`, starting with a letter or digit, unique per host sharing a Ceph cluster. Unset: `/etc/machine-id`, else the hostname.",
      })
      .optional(),
  }),
  images: z.object({
    type: option
      .enum(BOOTABLE_BACKENDS, {
        nova: '[libvirt] images_type',
        description:
          'Image backend for instance disks: `rbd` (Ceph, copy-on-write clones of Glance images), `qcow2` (local overlays), `lvm` (logical volumes).',
      })
      .default('rbd'),
    enabled: option
      .list({
        description:
          'Further backends to load besides `images.type` (comma separated), so `boot --backend` can choose one per instance.',
      })
      .default([]),
    useCowImages: option
      .boolean({
        nova: '[DEFAULT] use_cow_images',
        description:
          'Make root disks as copy-on-write clones/overlays of the image when the backend can; `false` always imports a full copy.',
      })
      .default(true),
    forceRawImages: option
      .boolean({
        nova: '[DEFAULT] force_raw_images',
        description:
          'Convert non-raw images to raw when they are imported (the rbd and lvm backends always store raw).',
      })
      .default(true),
    rbd: z.object({
      pool: option
        .string({ nova: '[libvirt] images_rbd_pool', description: 'RBD pool for instance disks.' })
        .default('vms'),
      cephConf: option
        .path({
          nova: '[libvirt] images_rbd_ceph_conf',
          description: 'ceph.conf used to reach the cluster (monitors, keyring).',
        })
        .default('/etc/ceph/ceph.conf'),
      user: option
        .string({
          nova: '[libvirt] rbd_user',
          description: 'cephx user (without `client.`) for disks, also given to QEMU through the libvirt secret.',
        })
        .default('ephemera'),
      keyring: option
        .path({
          description:
            'Keyring file of `images.rbd.user` (default: the one named by the ceph.conf). The key is read from this file to define the libvirt secret; it never appears in argv or logs.',
        })
        .optional(),
      secretUuid: option
        .uuid({
          nova: '[libvirt] rbd_secret_uuid',
          description:
            "UUID of the libvirt ceph secret holding the user's key. Defined by the driver (once) when missing. Unset: a stable UUID derived from `images.rbd.user` and the `images.rbd.cephConf` path (`defaultSecretUuid()`), so hosts sharing both share the secret.",
        })
        .optional(),
      imagePools: option
        .list({ description: 'Pools holding Glance images this node may clone from (comma separated).' })
        .default(['images']),
      connectTimeoutMs: option
        .integer({
          nova: '[libvirt] rbd_connect_timeout (seconds)',
          min: 100,
          description: 'Timeout to connect to Ceph and of each cluster operation.',
        })
        .default(10_000),
      cloneFormat: option
        .enum(['auto', '1', '2'], {
          description:
            "RBD clone format: `2` (no protected snapshot needed), `1` (parent snapshot must be protected), `auto` (ask the cluster's `require_min_compat_client` once, on the open connection, in the background when the backend starts).",
        })
        .default('auto'),
      snapshotPool: option
        .string({
          description:
            "Pool direct snapshots are written to (Glance's `rbd_store_pool`), so the new Glance image lives where Glance reads.",
        })
        .default('images'),
      snapshotUser: option
        .string({
          description:
            'cephx user allowed to write `images.rbd.snapshotPool` (e.g. `glance`). Unset: no direct snapshots (snapshots are uploaded).',
        })
        .optional(),
      snapshotCephConf: option
        .path({ description: 'ceph.conf for `images.rbd.snapshotUser` (default `images.rbd.cephConf`).' })
        .optional(),
      snapshotKeyring: option.path({ description: 'Keyring file of `images.rbd.snapshotUser`.' }).optional(),
      snapshotFlatten: option
        .enum(['background', 'sync'], {
          description:
            "How a direct snapshot made by clone (`images.rbd.snapshotUser` may read `images.rbd.pool`) becomes independent of the instance disk: `background` returns as soon as the Glance image is usable (a protected snapshot of a clone of the disk) and flattens it afterwards (one queue per driver, `images.rbd.flattenConcurrency`; resumed by `reconcile` after a crash), so the snapshot's time does not grow with the disk; `sync` flattens before the snapshot returns (Nova's behaviour). Snapshots copied by stream (the snapshot user cannot read the instances pool) are always complete when they return.",
        })
        .default('background'),
      flattenConcurrency: option
        .integer({
          min: 1,
          max: 16,
          description:
            "How many background flattens (deferred direct snapshots, clones deeper than `images.rbd.cloneDepth.soft`) one driver runs at once. A flatten reads the whole parent and writes the whole clone: one at a time keeps the cluster's I/O for the guests and the spawns (Nova has no equivalent; Ceph-CSI queues flattens as Ceph manager tasks, `rbd task add flatten`, run one at a time).",
        })
        .default(1),
      cloneDepth: z.object({
        soft: option
          .integer({
            min: 1,
            description:
              "A new instance disk with more ancestors than this (a clone of a clone of ... of a Glance image: snapshots of instances, operators' own RBD locations) is flattened in the background after the spawn returns, so chains stay short (reads of a deep clone walk the chain). As Ceph-CSI's `rbdsoftmaxclonedepth` (default 4; its `minsnapshotsonimage` and `maxsnapshotsonimage` bound snapshots per image the same soft/hard way); Nova has no equivalent (its clones are never flattened).",
          })
          .default(4),
        hard: option
          .integer({
            min: 1,
            description:
              "A new instance disk with more ancestors than this is flattened before the spawn returns (with `flatten` progress events). As Ceph-CSI's `rbdhardmaxclonedepth` (default 8); Nova has no equivalent. Must be >= `images.rbd.cloneDepth.soft`.",
          })
          .default(8),
      }),
      goldenImages: option
        .boolean({
          description:
            'Golden images: an image the backend cannot clone (qcow2 and other non-raw formats, or raw images not on RBD in this cluster) is converted or imported once per cluster into `<images.rbd.goldenPool>/ephemera-golden-<image id>` (checksum verified while streaming, protected snapshot) and every instance disk is a clone of it; one process in the cluster builds it (a RADOS lock with a lease), the others wait. Off: every instance downloads and converts its own copy (as Nova).',
        })
        .default(false),
      goldenPool: option.string({ description: 'Pool of the golden images (default `images.rbd.pool`).' }).optional(),
      goldenUnusedSeconds: option
        .integer({
          nova: '[image_cache] remove_unused_original_minimum_age_seconds',
          min: 0,
          description:
            '`gc --cache` removes a golden image without clones that has not been cloned (or built) for this long; golden images whose Glance image is gone or has another checksum are removed whatever their age.',
        })
        .default(86_400),
    }),
    lvm: z.object({
      volumeGroup: option
        .string({ nova: '[libvirt] images_volume_group', description: 'Volume group for instance disks (must exist).' })
        .default('ephemera'),
      wipe: option
        .enum(['zero', 'none'], {
          nova: '[libvirt] volume_clear',
          description: "How a removed LV's data is destroyed.",
        })
        .default('zero'),
      devices: option
        .list({ description: "Restrict LVM's device scan to these devices (comma separated, e.g. the VG's PVs)." })
        .default([]),
    }),
    qcow2: z.object({
      basePath: option
        .path({
          nova: '[DEFAULT] image_cache_subdirectory_name',
          description: 'Shared cache of base images the qcow2 overlays point to.',
        })
        .default('${stateDir}/instances/_base'),
    }),
  }),
  glance: z.object({
    url: option
      .url({
        nova: '[glance] api_servers',
        description:
          'Glance endpoint; a trailing `/v2` (as in a service catalog) is stripped, as OpenStack clients do.',
      })
      .default('http://127.0.0.1:9292'),
    auth: option
      .enum(['none', 'token', 'keystone'], {
        nova: '[glance] auth_type',
        description:
          'How to authenticate to Glance: `none` (keystone-less), a static `token`, or Keystone v3 `keystone` password auth.',
      })
      .default('none'),
    token: option.string({ secret: true, description: 'Token for `glance.auth = token`.' }).optional(),
    keystoneUrl: option
      .url({ nova: '[glance] auth_url', description: 'Keystone v3 endpoint for `glance.auth = keystone`.' })
      .optional(),
    username: option.string({ nova: '[glance] username', description: 'Keystone user.' }).optional(),
    password: option.string({ nova: '[glance] password', secret: true, description: 'Keystone password.' }).optional(),
    project: option.string({ nova: '[glance] project_name', description: 'Keystone project.' }).optional(),
    domain: option
      .string({ nova: '[glance] user_domain_name', description: 'Keystone user and project domain.' })
      .default('Default'),
    timeoutMs: option
      .integer({
        nova: '[glance] timeout',
        min: 100,
        description: 'Timeout of each Glance request (downloads: idle timeout).',
      })
      .default(30_000),
    retries: option
      .integer({
        nova: '[glance] num_retries',
        min: 0,
        max: 20,
        description: 'Retries of a failed Glance request (5xx, connection errors).',
      })
      .default(3),
  }),
  libvirt: z.object({
    uri: option
      .string({ nova: '[libvirt] connection_uri', description: 'libvirt connection URI.' })
      .default('qemu:///system'),
    virtType: option
      .enum(['kvm', 'qemu'], {
        nova: '[libvirt] virt_type',
        description: '`kvm` (hardware virtualisation) or `qemu` (TCG emulation).',
      })
      .default('kvm'),
    machineType: option.string({ nova: '[libvirt] hw_machine_type', description: 'QEMU machine type.' }).default('pc'),
    domainPrefix: option
      .string({
        nova: '[DEFAULT] instance_name_template',
        description: 'libvirt domain names are this prefix followed by the instance UUID.',
      })
      .default('ephemera-'),
    migrationTunnelled: option
      .boolean({
        nova: '[libvirt] live_migration_tunnelled',
        description:
          "Live migration of instances on shared disks (RBD) sends the guest's memory through the two libvirtds' connection (true) instead of QEMU to QEMU over TCP to the destination libvirtd's `migration_address` (false, as Nova's default). Tunnelled needs no migration port open on the destination but relays every byte through both libvirtds: the guest's downtime grows (issue 19.7 bench: about 1.4x to 2x here). Block migration (qcow2) is never tunnelled (QEMU 7.2 refuses disk copies in it).",
      })
      .default(false),
  }),
  disk: z.object({
    bus: option
      .enum(['virtio', 'sata', 'scsi', 'ide'], {
        nova: 'hw_disk_bus (image property)',
        description: 'Guest bus of instance disks.',
      })
      .default('virtio'),
    cacheMode: option
      .enum(['default', 'none', 'writethrough', 'writeback', 'directsync', 'unsafe'], {
        nova: '[libvirt] disk_cachemodes',
        description: 'QEMU cache mode of instance disks.',
      })
      .default('writeback'),
    discard: option
      .enum(['unmap', 'ignore'], {
        nova: '[libvirt] hw_disk_discard',
        description: 'Pass guest TRIM/discard to the storage (`unmap`) or drop it.',
      })
      .default('unmap'),
  }),
  qos: z.object({
    totalBytesSec: option
      .integer({
        nova: 'quota:disk_total_bytes_sec (flavor)',
        min: 0,
        description: 'Per-disk throughput limit in bytes/s (0: none).',
      })
      .default(0),
    totalIopsSec: option
      .integer({ nova: 'quota:disk_total_iops_sec (flavor)', min: 0, description: 'Per-disk IOPS limit (0: none).' })
      .default(0),
    readBytesSec: option
      .integer({
        nova: 'quota:disk_read_bytes_sec (flavor)',
        min: 0,
        description: 'Per-disk read throughput limit in bytes/s (0: none).',
      })
      .default(0),
    writeBytesSec: option
      .integer({
        nova: 'quota:disk_write_bytes_sec (flavor)',
        min: 0,
        description: 'Per-disk write throughput limit in bytes/s (0: none).',
      })
      .default(0),
  }),
  timeouts: z.object({
    startMs: option
      .integer({
        min: 100,
        description:
          'How long spawn and powerOn wait for the domain to run; past it the half-started domain is destroyed (TIMEOUT) and a spawn rolls back.',
      })
      .default(60_000),
    stopMs: option
      .integer({
        nova: '[DEFAULT] shutdown_timeout (seconds)',
        min: 100,
        description: 'How long a graceful power-off waits before the domain is destroyed.',
      })
      .default(30_000),
    diskBusyMs: option
      .integer({
        min: 0,
        description:
          "How long removing a disk retries while it is busy (QEMU still closing it; a killed QEMU's RBD watch lingers for Ceph's 30 s watch timeout, so keep this above 30 s).",
      })
      .default(45_000),
    libvirtReconnectMs: option
      .integer({
        min: 0,
        description:
          'How long the driver keeps trying to reconnect to libvirt after the connection was lost (libvirtd restarting) before a call fails.',
      })
      .default(15_000),
    importMs: option
      .integer({
        min: 1000,
        description: 'Upper bound of creating a root disk (clone, download, import, conversion).',
      })
      .default(30 * 60_000),
  }),
  log: z.object({
    level: option
      .enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], { description: 'pino log level.' })
      .default('info'),
  }),
});

/** The validated configuration (derived from {@link driverConfigSchema}: options with a default are always set). */
export type DriverConfig = Omit<z.output<typeof driverConfigSchema>, 'host'> & {
  /** This compute host: `id` is always set once loaded (unset in the schema: its default depends on the machine). */
  host: { id: string };
};

const LEAVES = optionLeaves(driverConfigSchema);

/** Every option, in documentation order. */
export const CONFIG_SCHEMA: readonly OptionSpec[] = Object.freeze(LEAVES.map((l) => l.spec));

/** The schema validating one option's values, by dotted key. */
export const OPTION_SCHEMAS: ReadonlyMap<string, OptionLeaf> = new Map(LEAVES.map((l) => [l.spec.key, l]));
