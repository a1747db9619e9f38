import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, expectTypeOf, it } from 'vitest';
import { z } from 'zod';
import {
  type BootableBackendName,
  CONFIG_SCHEMA,
  ConfigError,
  configValue,
  type DriverConfig,
  driverConfigSchema,
  loadConfig,
} from '@ephemera/driver';
import { option, optionLeaves } from '../../src/config-options.js';

const src = fileURLToPath(new URL('../../src/', import.meta.url));

/** What the driver, its backends and the CLI read of the configuration (the hand-written type before issue 17). */
interface DriverReads {
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

describe('the config schema is the single source of truth (issue 17)', () => {
  it('no config source casts through unknown', () => {
    const files = readdirSync(src).filter((f) => /^config.*\.ts$/.test(f));
    expect(files).toContain('config.ts');
    const casts = files.filter((f) => readFileSync(`${src}${f}`, 'utf8').includes('as unknown as'));
    expect(casts).toEqual([]);
  });

  it('DriverConfig is derived from driverConfigSchema and has the fields the driver reads', () => {
    // One exception: host.id is unset in the schema (its default is read off the machine) and always set once loaded.
    expectTypeOf<Omit<DriverConfig, 'host'>>().toEqualTypeOf<Omit<z.output<typeof driverConfigSchema>, 'host'>>();
    expectTypeOf<z.output<typeof driverConfigSchema>['host']['id']>().toEqualTypeOf<string | undefined>();
    expectTypeOf<DriverConfig['host']['id']>().toEqualTypeOf<string>();
    expectTypeOf<DriverConfig>().toExtend<DriverReads>();
    expectTypeOf<DriverConfig['images']['type']>().toEqualTypeOf<BootableBackendName>();
    expectTypeOf<DriverConfig['images']['rbd']['keyring']>().toEqualTypeOf<string | undefined>();
    expectTypeOf<DriverConfig['glance']['auth']>().toEqualTypeOf<'none' | 'token' | 'keystone'>();
    expectTypeOf<DriverConfig['timeouts']['startMs']>().toEqualTypeOf<number>();
    expectTypeOf<DriverConfig['images']['lvm']['devices']>().toEqualTypeOf<string[]>();
    // The runtime side of the same claim: the loader's result is what the schema parses it to.
    const { config } = loadConfig({ env: {}, overrides: { glance: { auth: 'token', token: 't' } } });
    expect(driverConfigSchema.parse(config)).toEqual(config);
  });

  it('CONFIG_SCHEMA lists the leaves of driverConfigSchema in order, with the defaults the schema gives', () => {
    // Nested objects are required; given empty, zod fills in every default.
    const skeleton = (o: z.ZodObject): Record<string, unknown> =>
      Object.fromEntries(
        Object.entries(o.shape).flatMap(([k, v]) => (v instanceof z.ZodObject ? [[k, skeleton(v)]] : [])),
      );
    const defaults = driverConfigSchema.parse(skeleton(driverConfigSchema));
    const leaves = (o: object, prefix = ''): string[] =>
      Object.entries(o).flatMap(([k, v]) =>
        typeof v === 'object' && v !== null && !Array.isArray(v) ? leaves(v, `${prefix}${k}.`) : [`${prefix}${k}`],
      );
    const withDefault = CONFIG_SCHEMA.filter((o) => o.default !== undefined);
    expect(leaves(defaults)).toEqual(withDefault.map((o) => o.key));
    for (const o of withDefault)
      expect(configValue({ ...defaults, host: { id: 'h1' } }, o.key), o.key).toEqual(o.default);
    // Every default passes its own option's checks.
    expect(() => loadConfig({ env: {} })).not.toThrow();
  });

  it('an option is one leaf: key, env variable, type, default, bounds and docs all come from it', () => {
    const tree = z.object({
      host: z.object({
        id: option.string({ description: 'Host id.', nova: '[DEFAULT] host' }).default('h1'),
        slots: option.integer({ description: 'Slots.', min: 1, max: 8 }).optional(),
        pool: option.enum(['a', 'b'], { description: 'Pool.' }).default('a'),
      }),
    });
    const specs = optionLeaves(tree).map((l) => l.spec);
    expect(specs).toEqual([
      {
        key: 'host.id',
        env: 'EPHEMERA_HOST_ID',
        type: 'string',
        default: 'h1',
        nova: '[DEFAULT] host',
        description: 'Host id.',
      },
      {
        key: 'host.slots',
        env: 'EPHEMERA_HOST_SLOTS',
        type: 'integer',
        default: undefined,
        min: 1,
        max: 8,
        description: 'Slots.',
      },
      {
        key: 'host.pool',
        env: 'EPHEMERA_HOST_POOL',
        type: 'enum',
        values: ['a', 'b'],
        default: 'a',
        description: 'Pool.',
      },
    ]);
    const slots = optionLeaves(tree)[1]!.schema;
    expect(z.safeParse(slots, '4').data).toBe(4);
    expect(z.safeParse(slots, 9).error?.issues[0]?.message).toBe('must be <= 8');
    // A leaf that says neither its default nor that it may be unset, or not made by a builder, is refused.
    expect(() => optionLeaves(z.object({ x: option.string({ description: 'X.' }) }))).toThrow(/default.*optional/);
    expect(() => optionLeaves(z.object({ x: z.string().optional() }))).toThrow(/option builders/);
  });

  it('the loader checks each layer with the option schemas and keeps the messages', () => {
    const message = (overrides: Record<string, unknown>): string => {
      try {
        loadConfig({ env: {}, overrides });
      } catch (e) {
        expect(e).toBeInstanceOf(ConfigError);
        return (e as Error).message;
      }
      return 'no error';
    };
    expect(message({ timeouts: { startMs: '12x' } })).toContain('expected an integer, got "12x" (from override)');
    expect(message({ glance: { retries: 21 } })).toContain('must be <= 20 (from override)');
    expect(message({ images: { rbd: { pool: 'a\nb' } } })).toContain('must not contain control characters');
    expect(message({ images: { type: 5 } })).toContain('expected a string, got number');
    expect(message({ disk: { bus: 'usb' } })).toContain('must be one of virtio, sata, scsi, ide, got "usb"');
    expect(message({ glance: { url: 'http://u:p@x' } })).toContain('must not contain credentials');
    expect(message({ images: { enabled: [''] } })).toContain('expected non-empty strings');
  });
});
