/**
 * The driver's configuration loader: layers defaults < dev stack < JSON file < environment <
 * overrides, checking each value with its option's schema from `driverConfigSchema`
 * (config-schema.ts), where every option, its type, default and documentation are defined once.
 *
 * `docs/configuration.md` is generated from {@link CONFIG_SCHEMA} ({@link configReference}).
 */
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import { BACKEND_NAMES } from './backend-names.js';
import { z } from 'zod';
import { isHostId } from '@ephemera/image-backend';
import { ConfigError } from './errors.js';

export type { OptionSpec, OptionType } from './config-options.js';
export { CONFIG_SCHEMA, type DriverConfig, driverConfigSchema } from './config-schema.js';
import type { OptionSpec } from './config-options.js';
import { CONFIG_SCHEMA, type DriverConfig, driverConfigSchema, OPTION_SCHEMAS } from './config-schema.js';

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

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function getPath(obj: unknown, key: string): unknown {
  let cur: unknown = obj;
  for (const part of key.split('.')) {
    if (!isRecord(cur)) return undefined;
    cur = cur[part];
  }
  return cur;
}

function setPath(obj: Record<string, unknown>, key: string, value: unknown): void {
  const parts = key.split('.');
  let cur = obj;
  for (const p of parts.slice(0, -1)) {
    const next = cur[p];
    if (isRecord(next)) cur = next;
    else {
      const created: Record<string, unknown> = {};
      cur[p] = created;
      cur = created;
    }
  }
  cur[parts[parts.length - 1]!] = value;
}

/**
 * Every dotted leaf key of a nested input (for unknown-key detection). A key that itself contains
 * a dot (`{"images.rbd.pool": ...}`, at any level) is refused: values are only read from nested
 * objects, so accepting it would silently ignore the value.
 */
function leafKeys(obj: unknown, source: ConfigSource, prefix = ''): string[] {
  if (!isRecord(obj)) return prefix ? [prefix] : [];
  const out: string[] = [];
  for (const [k, v] of Object.entries(obj)) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (k.includes('.')) {
      const nested = `${key
        .split('.')
        .map((p) => `{${JSON.stringify(p)}: `)
        .join('')}...${'}'.repeat(key.split('.').length)}`;
      throw new ConfigError(
        key,
        `unknown option ${JSON.stringify(k)} (from ${source}): dotted keys are not read, nest them: ${nested}`,
      );
    }
    if (OPTION_SCHEMAS.has(key)) out.push(key);
    else if (isRecord(v)) out.push(...leafKeys(v, source, key));
    else out.push(key);
  }
  return out;
}

/** Converts and checks one value with its option's schema (strings from the environment are parsed). */
function coerce(spec: OptionSpec, schema: z.core.$ZodType, raw: unknown, from: ConfigSource): unknown {
  const r = z.safeParse(schema, raw);
  if (r.success) return r.data;
  // The first issue, as the checks run in order: type, then content, then bounds.
  throw new ConfigError(
    spec.key,
    `${r.error.issues[0]?.message ?? 'invalid'} (from ${from === 'env' ? spec.env : from})`,
  );
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
      throw new ConfigError('file', `cannot read ${file}: ${err instanceof Error ? err.message : String(err)}`);
    }
    if (!isRecord(parsed)) throw new ConfigError('file', `${file} must hold a JSON object`);
    layers.push(['file', parsed]);
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
      const option = OPTION_SCHEMAS.get(key);
      if (!option) throw new ConfigError(key, `unknown option (from ${source})`);
      const raw = getPath(layer, key);
      if (raw === undefined || raw === null) continue;
      setPath(out, key, coerce(option.spec, option.schema, raw, source));
      sources[key] = source;
    }
  }
  if (getPath(out, 'host.id') === undefined) {
    setPath(out, 'host.id', defaultHostId());
    sources['host.id'] = 'default';
  }
  const stateDir = resolve(String(out.stateDir));
  out.stateDir = stateDir;
  for (const spec of CONFIG_SCHEMA) {
    if (spec.type !== 'path') continue;
    const v = getPath(out, spec.key);
    if (typeof v === 'string') setPath(out, spec.key, resolve(v.replace('${stateDir}', stateDir)));
  }
  // Every value was checked as its layer was read; this pass types the result (the checks are idempotent).
  const parsed = driverConfigSchema.safeParse(out);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new ConfigError(issue?.path.join('.') ?? 'config', issue?.message ?? 'invalid');
  }
  const { host, ...rest } = parsed.data;
  // host.id was filled above when no layer set it: only a machine without machine-id or hostname lacks one.
  const config: DriverConfig = { ...rest, host: { id: host.id ?? '' } };
  checkCombinations(config);
  return { config, sources };
}

/**
 * The default host id: the content of `machineIdPath` (`/etc/machine-id`), else the hostname (lower
 * case). Not validated here: `loadConfig` refuses an unusable one naming `host.id`.
 */
export function defaultHostId(machineIdPath = '/etc/machine-id', host: () => string = hostname): string {
  try {
    const id = readFileSync(machineIdPath, 'utf8').trim();
    if (id) return id;
  } catch {
    // no machine-id (containers): the hostname
  }
  return host().trim().toLowerCase();
}

function checkCombinations(c: DriverConfig): void {
  if (!isHostId(c.host.id))
    throw new ConfigError(
      'host.id',
      `${JSON.stringify(c.host.id)} is not a usable host id: 1..64 of A-Za-z0-9._-, starting with a letter or digit`,
    );
  const known: readonly string[] = BACKEND_NAMES;
  for (const b of c.images.enabled) {
    if (!known.includes(b))
      throw new ConfigError('images.enabled', `unknown backend ${JSON.stringify(b)} (known: ${known.join(', ')})`);
  }
  const depth = c.images.rbd.cloneDepth;
  if (depth.hard < depth.soft)
    throw new ConfigError(
      'images.rbd.cloneDepth.hard',
      `must be >= images.rbd.cloneDepth.soft (${depth.soft}), got ${depth.hard}`,
    );
  if (c.glance.auth === 'token' && !c.glance.token)
    throw new ConfigError('glance.token', 'required when glance.auth is token');
  if (c.glance.auth === 'keystone') {
    for (const k of ['keystoneUrl', 'username', 'password', 'project'] as const) {
      if (!c.glance[k]) throw new ConfigError(`glance.${k}`, 'required when glance.auth is keystone');
    }
  }
}

/** The configuration with secret options replaced by `***` (for logs and `ephemera config`). */
export function redactConfig(config: DriverConfig): DriverConfig {
  const copy = structuredClone(config);
  for (const spec of CONFIG_SCHEMA) {
    // Only string options are secret (option.string), so `***` keeps the copy a DriverConfig.
    if (spec.secret && getPath(copy, spec.key) !== undefined) setPath(copy, spec.key, '***');
  }
  return copy;
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
    lines.push(
      `| \`${s.key}\` | ${type} | ${fmt(s.default)} | \`${s.env}\` | ${s.nova ? cell(s.nova) : ''} | ${cell(s.description)} |`,
    );
  }
  return lines.join('\n');
}
