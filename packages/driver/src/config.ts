/**
 * The driver's configuration: an introspectable schema (every option has a type, a default, a
 * description, an environment variable and, where one exists, the equivalent Nova option), a
 * validator, and a loader that layers defaults < dev stack < JSON file < environment < overrides.
 *
 * `docs/configuration.md` is generated from {@link CONFIG_SCHEMA} ({@link configReference}).
 */
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { BACKEND_NAMES, BOOTABLE_BACKENDS, type BootableBackendName } from './backend-names.js';
import { ConfigError } from './errors.js';

/** The value types an option can have. */
export type OptionType = 'string' | 'path' | 'url' | 'uuid' | 'integer' | 'boolean' | 'enum' | 'string[]';

/** One option of the schema. */
export interface OptionSpec {
  /** Dotted key, e.g. `images.rbd.pool`. */
  readonly key: string;
  readonly type: OptionType;
  /** What it does (one or two sentences). */
  readonly description: string;
  /** The default (`undefined`: unset unless given). Paths may use `${stateDir}`. */
  readonly default: string | number | boolean | readonly string[] | undefined;
  /** Environment variable that sets it: `EPHEMERA_` + the key in upper snake case. */
  readonly env: string;
  /** The Nova option it corresponds to (`[section] name`), when there is one. */
  readonly nova?: string;
  /** Allowed values (`enum`). */
  readonly values?: readonly string[];
  /** Inclusive bounds (`integer`). */
  readonly min?: number;
  readonly max?: number;
  /** Never printed or logged (tokens, passwords). */
  readonly secret?: boolean;
}

type Spec = Omit<OptionSpec, 'env' | 'key'>;

/** The option definitions, by dotted key (order = documentation order). */
const DEFS: Record<string, Spec> = {
  stateDir: {
    type: 'path', default: '/var/lib/ephemera',
    description: 'Directory for the driver\'s state: the operation journal, instance records and serial console logs.',
  },
  instancesPath: {
    type: 'path', default: '${stateDir}/instances', nova: '[DEFAULT] instances_path',
    description: 'Where per-instance files live (console log, record; qcow2 disks with the qcow2 backend).',
  },
  'images.type': {
    type: 'enum', values: [...BOOTABLE_BACKENDS], default: 'rbd', nova: '[libvirt] images_type',
    description: 'Image backend for instance disks: `rbd` (Ceph, copy-on-write clones of Glance images), `qcow2` (local overlays), `lvm` (logical volumes).',
  },
  'images.enabled': {
    type: 'string[]', default: [],
    description: 'Further backends to load besides `images.type` (comma separated), so `boot --backend` can choose one per instance.',
  },
  'images.useCowImages': {
    type: 'boolean', default: true, nova: '[DEFAULT] use_cow_images',
    description: 'Make root disks as copy-on-write clones/overlays of the image when the backend can; `false` always imports a full copy.',
  },
  'images.forceRawImages': {
    type: 'boolean', default: true, nova: '[DEFAULT] force_raw_images',
    description: 'Convert non-raw images to raw when they are imported (the rbd and lvm backends always store raw).',
  },
  'images.rbd.pool': {
    type: 'string', default: 'vms', nova: '[libvirt] images_rbd_pool',
    description: 'RBD pool for instance disks.',
  },
  'images.rbd.cephConf': {
    type: 'path', default: '/etc/ceph/ceph.conf', nova: '[libvirt] images_rbd_ceph_conf',
    description: 'ceph.conf used to reach the cluster (monitors, keyring).',
  },
  'images.rbd.user': {
    type: 'string', default: 'ephemera', nova: '[libvirt] rbd_user',
    description: 'cephx user (without `client.`) for disks, also given to QEMU through the libvirt secret.',
  },
  'images.rbd.keyring': {
    type: 'path', default: undefined,
    description: 'Keyring file of `images.rbd.user` (default: the one named by the ceph.conf). The key is read from this file to define the libvirt secret; it never appears in argv or logs.',
  },
  'images.rbd.secretUuid': {
    type: 'uuid', default: undefined, nova: '[libvirt] rbd_secret_uuid',
    description: 'UUID of the libvirt ceph secret holding the user\'s key. Defined by the driver (once) when missing. Unset: a stable UUID derived from `images.rbd.user` and the `images.rbd.cephConf` path (`defaultSecretUuid()`), so hosts sharing both share the secret.',
  },
  'images.rbd.imagePools': {
    type: 'string[]', default: ['images'],
    description: 'Pools holding Glance images this node may clone from (comma separated).',
  },
  'images.rbd.connectTimeoutMs': {
    type: 'integer', default: 10_000, min: 100, nova: '[libvirt] rbd_connect_timeout (seconds)',
    description: 'Timeout to connect to Ceph and of each cluster operation.',
  },
  'images.rbd.cloneFormat': {
    type: 'enum', values: ['auto', '1', '2'], default: 'auto',
    description: 'RBD clone format: `2` (no protected snapshot needed), `1` (parent snapshot must be protected), `auto` (ask the cluster\'s `require_min_compat_client` once, on the first clone).',
  },
  'images.rbd.snapshotPool': {
    type: 'string', default: 'images',
    description: 'Pool direct snapshots are written to (Glance\'s `rbd_store_pool`), so the new Glance image lives where Glance reads.',
  },
  'images.rbd.snapshotUser': {
    type: 'string', default: undefined,
    description: 'cephx user allowed to write `images.rbd.snapshotPool` (e.g. `glance`). Unset: no direct snapshots (snapshots are uploaded).',
  },
  'images.rbd.snapshotCephConf': {
    type: 'path', default: undefined,
    description: 'ceph.conf for `images.rbd.snapshotUser` (default `images.rbd.cephConf`).',
  },
  'images.rbd.snapshotKeyring': {
    type: 'path', default: undefined,
    description: 'Keyring file of `images.rbd.snapshotUser`.',
  },
  'images.lvm.volumeGroup': {
    type: 'string', default: 'ephemera', nova: '[libvirt] images_volume_group',
    description: 'Volume group for instance disks (must exist).',
  },
  'images.lvm.wipe': {
    type: 'enum', values: ['zero', 'none'], default: 'zero', nova: '[libvirt] volume_clear',
    description: 'How a removed LV\'s data is destroyed.',
  },
  'images.lvm.devices': {
    type: 'string[]', default: [],
    description: 'Restrict LVM\'s device scan to these devices (comma separated, e.g. the VG\'s PVs).',
  },
  'images.qcow2.basePath': {
    type: 'path', default: '${stateDir}/instances/_base', nova: '[DEFAULT] image_cache_subdirectory_name',
    description: 'Shared cache of base images the qcow2 overlays point to.',
  },
  'glance.url': {
    type: 'url', default: 'http://127.0.0.1:9292', nova: '[glance] api_servers',
    description: 'Glance endpoint; a trailing `/v2` (as in a service catalog) is stripped, as OpenStack clients do.',
  },
  'glance.auth': {
    type: 'enum', values: ['none', 'token', 'keystone'], default: 'none', nova: '[glance] auth_type',
    description: 'How to authenticate to Glance: `none` (keystone-less), a static `token`, or Keystone v3 `keystone` password auth.',
  },
  'glance.token': {
    type: 'string', default: undefined, secret: true,
    description: 'Token for `glance.auth = token`.',
  },
  'glance.keystoneUrl': {
    type: 'url', default: undefined, nova: '[glance] auth_url',
    description: 'Keystone v3 endpoint for `glance.auth = keystone`.',
  },
  'glance.username': { type: 'string', default: undefined, nova: '[glance] username', description: 'Keystone user.' },
  'glance.password': { type: 'string', default: undefined, secret: true, nova: '[glance] password', description: 'Keystone password.' },
  'glance.project': { type: 'string', default: undefined, nova: '[glance] project_name', description: 'Keystone project.' },
  'glance.domain': { type: 'string', default: 'Default', nova: '[glance] user_domain_name', description: 'Keystone user and project domain.' },
  'glance.timeoutMs': {
    type: 'integer', default: 30_000, min: 100, nova: '[glance] timeout',
    description: 'Timeout of each Glance request (downloads: idle timeout).',
  },
  'glance.retries': {
    type: 'integer', default: 3, min: 0, max: 20, nova: '[glance] num_retries',
    description: 'Retries of a failed Glance request (5xx, connection errors).',
  },
  'libvirt.uri': {
    type: 'string', default: 'qemu:///system', nova: '[libvirt] connection_uri',
    description: 'libvirt connection URI.',
  },
  'libvirt.virtType': {
    type: 'enum', values: ['kvm', 'qemu'], default: 'kvm', nova: '[libvirt] virt_type',
    description: '`kvm` (hardware virtualisation) or `qemu` (TCG emulation).',
  },
  'libvirt.machineType': {
    type: 'string', default: 'pc', nova: '[libvirt] hw_machine_type',
    description: 'QEMU machine type.',
  },
  'libvirt.domainPrefix': {
    type: 'string', default: 'ephemera-', nova: '[DEFAULT] instance_name_template',
    description: 'libvirt domain names are this prefix followed by the instance UUID.',
  },
  'disk.bus': {
    type: 'enum', values: ['virtio', 'sata', 'scsi', 'ide'], default: 'virtio', nova: 'hw_disk_bus (image property)',
    description: 'Guest bus of instance disks.',
  },
  'disk.cacheMode': {
    type: 'enum', values: ['default', 'none', 'writethrough', 'writeback', 'directsync', 'unsafe'], default: 'writeback',
    nova: '[libvirt] disk_cachemodes',
    description: 'QEMU cache mode of instance disks.',
  },
  'disk.discard': {
    type: 'enum', values: ['unmap', 'ignore'], default: 'unmap', nova: '[libvirt] hw_disk_discard',
    description: 'Pass guest TRIM/discard to the storage (`unmap`) or drop it.',
  },
  'qos.totalBytesSec': { type: 'integer', default: 0, min: 0, nova: 'quota:disk_total_bytes_sec (flavor)', description: 'Per-disk throughput limit in bytes/s (0: none).' },
  'qos.totalIopsSec': { type: 'integer', default: 0, min: 0, nova: 'quota:disk_total_iops_sec (flavor)', description: 'Per-disk IOPS limit (0: none).' },
  'qos.readBytesSec': { type: 'integer', default: 0, min: 0, nova: 'quota:disk_read_bytes_sec (flavor)', description: 'Per-disk read throughput limit in bytes/s (0: none).' },
  'qos.writeBytesSec': { type: 'integer', default: 0, min: 0, nova: 'quota:disk_write_bytes_sec (flavor)', description: 'Per-disk write throughput limit in bytes/s (0: none).' },
  'timeouts.startMs': {
    type: 'integer', default: 60_000, min: 100,
    description: 'How long spawn and powerOn wait for the domain to run; past it the half-started domain is destroyed (TIMEOUT) and a spawn rolls back.',
  },
  'timeouts.stopMs': {
    type: 'integer', default: 30_000, min: 100, nova: '[DEFAULT] shutdown_timeout (seconds)',
    description: 'How long a graceful power-off waits before the domain is destroyed.',
  },
  'timeouts.diskBusyMs': {
    type: 'integer', default: 45_000, min: 0,
    description: 'How long removing a disk retries while it is busy (QEMU still closing it; a killed QEMU\'s RBD watch lingers for Ceph\'s 30 s watch timeout, so keep this above 30 s).',
  },
  'timeouts.libvirtReconnectMs': {
    type: 'integer', default: 15_000, min: 0,
    description: 'How long the driver keeps trying to reconnect to libvirt after the connection was lost (libvirtd restarting) before a call fails.',
  },
  'timeouts.importMs': {
    type: 'integer', default: 30 * 60_000, min: 1000,
    description: 'Upper bound of creating a root disk (clone, download, import, conversion).',
  },
  'log.level': {
    type: 'enum', values: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], default: 'info',
    description: 'pino log level.',
  },
};

function envName(key: string): string {
  return 'EPHEMERA_' + key.replace(/\./g, '_').replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase();
}

/** Every option, in documentation order. */
export const CONFIG_SCHEMA: readonly OptionSpec[] = Object.freeze(
  Object.entries(DEFS).map(([key, s]) => Object.freeze({ key, env: envName(key), ...s })),
);

/** The validated configuration. */
export interface DriverConfig {
  stateDir: string;
  instancesPath: string;
  images: {
    type: BootableBackendName;
    enabled: string[];
    useCowImages: boolean;
    forceRawImages: boolean;
    rbd: {
      pool: string;
      cephConf: string;
      user: string;
      keyring?: string;
      secretUuid?: string;
      imagePools: string[];
      connectTimeoutMs: number;
      cloneFormat: 'auto' | '1' | '2';
      snapshotPool: string;
      snapshotUser?: string;
      snapshotCephConf?: string;
      snapshotKeyring?: string;
    };
    lvm: { volumeGroup: string; wipe: 'zero' | 'none'; devices: string[] };
    qcow2: { basePath: string };
  };
  glance: {
    url: string;
    auth: 'none' | 'token' | 'keystone';
    token?: string;
    keystoneUrl?: string;
    username?: string;
    password?: string;
    project?: string;
    domain: string;
    timeoutMs: number;
    retries: number;
  };
  libvirt: { uri: string; virtType: 'kvm' | 'qemu'; machineType: string; domainPrefix: string };
  disk: {
    bus: 'virtio' | 'sata' | 'scsi' | 'ide';
    cacheMode: 'default' | 'none' | 'writethrough' | 'writeback' | 'directsync' | 'unsafe';
    discard: 'unmap' | 'ignore';
  };
  qos: { totalBytesSec: number; totalIopsSec: number; readBytesSec: number; writeBytesSec: number };
  timeouts: { startMs: number; stopMs: number; diskBusyMs: number; libvirtReconnectMs: number; importMs: number };
  log: { level: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent' };
}

/** A partial configuration (nested, as in a JSON file). */
export type ConfigInput = { [key: string]: unknown };

/** Where each value of a loaded configuration came from. */
export type ConfigSource = 'default' | 'stack' | 'file' | 'env' | 'override';

/** A loaded configuration and the origin of each value. */
export interface LoadedConfig {
  config: DriverConfig;
  sources: Record<string, ConfigSource>;
}

/** A cephx user of the dev stack. */
export interface CephUserLike {
  id: string;
  keyringPath: string;
  confPath: string;
}

/** The subset of the dev stack's `stack.json` the driver reads (see `tools/testkit`). */
export interface StackInfoLike {
  dir: string;
  ceph: {
    fsid: string;
    users: { ephemera: CephUserLike; glance?: CephUserLike };
    pools: { images: string; vms: string };
  };
  glance: { url: string; pool?: string };
  libvirt: { uri: string; domainType: 'kvm' | 'qemu'; cephSecretUuid: string };
}

/** Configuration values that make the driver work on the dev stack described by `stack`. */
export function fromStack(stack: StackInfoLike): ConfigInput {
  const u = stack.ceph.users.ephemera;
  const g = stack.ceph.users.glance;
  return {
    stateDir: join(stack.dir, 'ephemera'),
    images: {
      rbd: {
        pool: stack.ceph.pools.vms,
        cephConf: u.confPath,
        user: u.id,
        keyring: u.keyringPath,
        secretUuid: stack.libvirt.cephSecretUuid,
        imagePools: [stack.glance.pool ?? stack.ceph.pools.images],
        snapshotPool: stack.glance.pool ?? stack.ceph.pools.images,
        ...(g ? { snapshotUser: g.id, snapshotCephConf: g.confPath, snapshotKeyring: g.keyringPath } : {}),
      },
    },
    glance: { url: stack.glance.url },
    libvirt: { uri: stack.libvirt.uri, virtType: stack.libvirt.domainType },
  };
}

function getPath(obj: unknown, key: string): unknown {
  let cur: unknown = obj;
  for (const part of key.split('.')) {
    if (typeof cur !== 'object' || cur === null || Array.isArray(cur)) return undefined;
    cur = (cur as Record<string, unknown>)[part];
  }
  return cur;
}

function setPath(obj: Record<string, unknown>, key: string, value: unknown): void {
  const parts = key.split('.');
  let cur = obj;
  for (const p of parts.slice(0, -1)) {
    if (typeof cur[p] !== 'object' || cur[p] === null) cur[p] = {};
    cur = cur[p] as Record<string, unknown>;
  }
  cur[parts[parts.length - 1]!] = value;
}

/**
 * Every dotted leaf key of a nested input (for unknown-key detection). A key that itself contains
 * a dot (`{"images.rbd.pool": ...}`, at any level) is refused: values are only read from nested
 * objects, so accepting it would silently ignore the value.
 */
function leafKeys(obj: unknown, source: ConfigSource, prefix = ''): string[] {
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) return prefix ? [prefix] : [];
  const out: string[] = [];
  for (const [k, v] of Object.entries(obj)) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (k.includes('.')) {
      const nested = `${key.split('.').map((p) => `{${JSON.stringify(p)}: `).join('')}...${'}'.repeat(key.split('.').length)}`;
      throw new ConfigError(key, `unknown option ${JSON.stringify(k)} (from ${source}): dotted keys are not read, nest them: ${nested}`);
    }
    if (DEFS[key] !== undefined) out.push(key);
    else if (typeof v === 'object' && v !== null && !Array.isArray(v)) out.push(...leafKeys(v, source, key));
    else out.push(key);
  }
  return out;
}

const UUID_RE = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;

/** Converts and checks one value (strings from the environment are parsed). */
function coerce(spec: OptionSpec, raw: unknown, from: ConfigSource): unknown {
  const bad = (why: string): never => {
    throw new ConfigError(spec.key, `${why} (from ${from === 'env' ? spec.env : from})`);
  };
  const str = (): string => {
    if (typeof raw !== 'string') return bad(`expected a string, got ${typeof raw}`);
    if (/[\0-\x1f\x7f]/.test(raw)) return bad('must not contain control characters');
    return raw;
  };
  switch (spec.type) {
    case 'string': {
      const s = str();
      if (s.length === 0) bad('must not be empty');
      return s;
    }
    case 'path': {
      const s = str();
      if (s.length === 0) bad('must not be empty');
      return s;
    }
    case 'url': {
      const s = str().replace(/\/+$/, '');
      let u: URL;
      try {
        u = new URL(s);
      } catch {
        return bad(`not a URL: ${JSON.stringify(s)}`);
      }
      if (u.protocol !== 'http:' && u.protocol !== 'https:') bad('must be an http(s) URL');
      if (u.username || u.password) bad('must not contain credentials');
      return s;
    }
    case 'uuid': {
      const s = str();
      if (!UUID_RE.test(s)) bad(`not a UUID: ${JSON.stringify(s)}`);
      return s.toLowerCase();
    }
    case 'integer': {
      let n = raw;
      if (typeof n === 'string' && /^-?\d+$/.test(n.trim())) n = Number(n.trim());
      if (typeof n !== 'number' || !Number.isSafeInteger(n)) return bad(`expected an integer, got ${JSON.stringify(raw)}`);
      if (spec.min !== undefined && n < spec.min) bad(`must be >= ${spec.min}`);
      if (spec.max !== undefined && n > spec.max) bad(`must be <= ${spec.max}`);
      return n;
    }
    case 'boolean': {
      if (typeof raw === 'boolean') return raw;
      if (typeof raw === 'string') {
        const s = raw.trim().toLowerCase();
        if (['1', 'true', 'yes', 'on'].includes(s)) return true;
        if (['0', 'false', 'no', 'off'].includes(s)) return false;
      }
      return bad(`expected a boolean, got ${JSON.stringify(raw)}`);
    }
    case 'enum': {
      const s = str();
      if (!spec.values!.includes(s)) bad(`must be one of ${spec.values!.join(', ')}, got ${JSON.stringify(s)}`);
      return s;
    }
    case 'string[]': {
      let arr = raw;
      if (typeof arr === 'string') arr = arr.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
      if (!Array.isArray(arr)) return bad('expected a list of strings');
      for (const v of arr) {
        if (typeof v !== 'string' || v.length === 0 || /[\0-\x1f\x7f]/.test(v)) bad('expected non-empty strings');
      }
      return [...(arr as string[])];
    }
  }
}

/** Options of {@link loadConfig}. */
export interface LoadConfigOptions {
  /** A JSON file (nested keys, as {@link DriverConfig}). Default: `$EPHEMERA_CONFIG` when set. */
  file?: string;
  /** Environment to read `EPHEMERA_*` variables from (default `process.env`; `{}` to ignore it). */
  env?: Readonly<Record<string, string | undefined>>;
  /** The caller's own defaults (e.g. the CLI's quieter `log.level`): over the built-in ones, under everything else. */
  defaults?: ConfigInput;
  /** Dev stack defaults (see {@link fromStack}), applied over the built-in defaults. */
  stack?: StackInfoLike;
  /** Applied last (e.g. CLI flags). */
  overrides?: ConfigInput;
}

/**
 * Loads and validates the configuration: built-in defaults, then the caller's `defaults`, then `stack`, then the JSON `file`,
 * then `EPHEMERA_*` environment variables, then `overrides`. Unknown keys and bad values throw a
 * {@link ConfigError} naming the key and where the value came from.
 */
export function loadConfig(options: LoadConfigOptions = {}): LoadedConfig {
  const env = options.env ?? process.env;
  const layers: [ConfigSource, ConfigInput][] = [];
  if (options.defaults) layers.push(['default', options.defaults]);
  if (options.stack) layers.push(['stack', fromStack(options.stack)]);
  const file = options.file ?? env.EPHEMERA_CONFIG;
  if (file) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(readFileSync(resolve(file), 'utf8'));
    } catch (err) {
      throw new ConfigError('file', `cannot read ${file}: ${(err as Error).message}`);
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new ConfigError('file', `${file} must hold a JSON object`);
    layers.push(['file', parsed as ConfigInput]);
  }
  const fromEnv: ConfigInput = {};
  for (const spec of CONFIG_SCHEMA) {
    const v = env[spec.env];
    if (v !== undefined && v !== '') setPath(fromEnv, spec.key, v);
  }
  layers.push(['env', fromEnv]);
  if (options.overrides) layers.push(['override', options.overrides]);

  const out: Record<string, unknown> = {};
  const sources: Record<string, ConfigSource> = {};
  for (const spec of CONFIG_SCHEMA) {
    if (spec.default !== undefined) {
      setPath(out, spec.key, Array.isArray(spec.default) ? [...spec.default] : spec.default);
      sources[spec.key] = 'default';
    }
  }
  for (const [source, layer] of layers) {
    for (const key of leafKeys(layer, source)) {
      const spec = CONFIG_SCHEMA.find((s) => s.key === key);
      if (!spec) throw new ConfigError(key, `unknown option (from ${source})`);
      const raw = getPath(layer, key);
      if (raw === undefined || raw === null) continue;
      setPath(out, key, coerce(spec, raw, source));
      sources[key] = source;
    }
  }
  const stateDir = resolve(out.stateDir as string);
  out.stateDir = stateDir;
  for (const spec of CONFIG_SCHEMA) {
    if (spec.type !== 'path') continue;
    const v = getPath(out, spec.key);
    if (typeof v === 'string') setPath(out, spec.key, resolve(v.replace('${stateDir}', stateDir)));
  }
  const config = out as unknown as DriverConfig;
  checkCombinations(config);
  return { config, sources };
}

function checkCombinations(c: DriverConfig): void {
  const known: readonly string[] = BACKEND_NAMES;
  for (const b of c.images.enabled) {
    if (!known.includes(b)) throw new ConfigError('images.enabled', `unknown backend ${JSON.stringify(b)} (known: ${known.join(', ')})`);
  }
  if (c.glance.auth === 'token' && !c.glance.token) throw new ConfigError('glance.token', 'required when glance.auth is token');
  if (c.glance.auth === 'keystone') {
    for (const k of ['keystoneUrl', 'username', 'password', 'project'] as const) {
      if (!c.glance[k]) throw new ConfigError(`glance.${k}`, 'required when glance.auth is keystone');
    }
  }
}

/** The configuration with secret options replaced by `***` (for logs and `ephemera config`). */
export function redactConfig(config: DriverConfig): DriverConfig {
  const copy = JSON.parse(JSON.stringify(config)) as Record<string, unknown>;
  for (const spec of CONFIG_SCHEMA) {
    if (spec.secret && getPath(copy, spec.key) !== undefined) setPath(copy, spec.key, '***');
  }
  return copy as unknown as DriverConfig;
}

/** Reads one option's value from a configuration by dotted key. */
export function configValue(config: DriverConfig, key: string): unknown {
  return getPath(config, key);
}

/**
 * Markdown reference of every option (key, type, default, environment variable, Nova equivalent,
 * description): the generator of `docs/configuration.md`.
 */
export function configReference(): string {
  const cell = (s: string): string => s.replace(/\|/g, '\\|');
  const fmt = (d: OptionSpec['default']): string =>
    d === undefined ? '(unset)' : Array.isArray(d) ? (d.length ? `\`${d.join(',')}\`` : '(empty)') : `\`${String(d)}\``;
  const lines = [
    '| option | type | default | environment | Nova | description |',
    '| --- | --- | --- | --- | --- | --- |',
  ];
  for (const s of CONFIG_SCHEMA) {
    const type = s.type === 'enum' ? s.values!.map((v) => `\`${v}\``).join(' \\| ') : s.type;
    lines.push(`| \`${s.key}\` | ${type} | ${fmt(s.default)} | \`${s.env}\` | ${s.nova ? cell(s.nova) : ''} | ${cell(s.description)} |`);
  }
  return lines.join('\n');
}
