import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import {
  CONFIG_SCHEMA,
  ConfigError,
  configReference,
  defaultHostId,
  fromStack,
  isHostId,
  isDriverError,
  loadConfig,
  redactConfig,
} from '@ephemera/driver';

const stack = {
  dir: '/srv/stack',
  ceph: {
    fsid: 'acada594-e091-4f05-9d45-e3735cb2db40',
    users: {
      ephemera: {
        id: 'ephemera',
        keyringPath: '/srv/stack/ceph/ephemera.keyring',
        confPath: '/srv/stack/ceph/ephemera.conf',
      },
    },
    pools: { images: 'images', vms: 'vms' },
  },
  glance: { url: 'http://127.0.0.1:30626', pool: 'images' },
  libvirt: {
    uri: 'qemu+unix:///system?socket=/x',
    domainType: 'qemu' as const,
    cephSecretUuid: '8e70ab7a-6a5f-46ba-bb10-b691cc1fb11f',
  },
};

describe('config schema', () => {
  it('documents every option: description, env var, default; Nova names where they exist', () => {
    expect(CONFIG_SCHEMA.length).toBeGreaterThan(30);
    const keys = new Set<string>();
    for (const o of CONFIG_SCHEMA) {
      expect(o.description.length, o.key).toBeGreaterThan(5);
      expect(o.env).toMatch(/^EPHEMERA_[A-Z0-9_]+$/);
      expect(keys.has(o.key)).toBe(false);
      keys.add(o.key);
      if (o.type === 'enum') expect(o.values!.length).toBeGreaterThan(0);
    }
    const nova = Object.fromEntries(CONFIG_SCHEMA.filter((o) => o.nova).map((o) => [o.key, o.nova]));
    expect(nova['images.type']).toBe('[libvirt] images_type');
    expect(nova['images.rbd.pool']).toBe('[libvirt] images_rbd_pool');
    expect(nova['images.rbd.cephConf']).toBe('[libvirt] images_rbd_ceph_conf');
    expect(nova['images.rbd.user']).toBe('[libvirt] rbd_user');
    expect(nova['images.rbd.secretUuid']).toBe('[libvirt] rbd_secret_uuid');
    expect(nova['images.lvm.volumeGroup']).toBe('[libvirt] images_volume_group');
    expect(nova['images.useCowImages']).toBe('[DEFAULT] use_cow_images');
    expect(nova['images.forceRawImages']).toBe('[DEFAULT] force_raw_images');
    expect(nova['instancesPath']).toBe('[DEFAULT] instances_path');
    expect(CONFIG_SCHEMA.find((o) => o.key === 'images.rbd.secretUuid')!.env).toBe('EPHEMERA_IMAGES_RBD_SECRET_UUID');
  });

  it('renders a markdown reference with one row per option', () => {
    const md = configReference();
    expect(md.split('\n')).toHaveLength(CONFIG_SCHEMA.length + 2);
    expect(md).toContain('`EPHEMERA_IMAGES_TYPE`');
  });
});

describe('loadConfig', () => {
  it('defaults alone give a complete, valid configuration', () => {
    const { config, sources } = loadConfig({ env: {} });
    expect(config.images.type).toBe('rbd');
    expect(config.images.rbd.pool).toBe('vms');
    expect(config.instancesPath).toBe('/var/lib/ephemera/instances');
    expect(config.images.qcow2.basePath).toBe('/var/lib/ephemera/instances/_base');
    expect(sources['images.type']).toBe('default');
    // above Ceph's 30 s watch timeout: a QEMU killed by reconcile keeps its disk busy that long
    expect(config.timeouts.diskBusyMs).toBeGreaterThan(30_000);
  });

  it('layers stack < file < env < overrides and records where each value came from', () => {
    const dir = mkdtempSync(join(tmpdir(), 'eph-cfg-'));
    onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'c.json');
    writeFileSync(
      file,
      JSON.stringify({ images: { type: 'lvm', lvm: { volumeGroup: 'vg0' } }, timeouts: { startMs: 5000 } }),
    );
    const { config, sources } = loadConfig({
      stack,
      file,
      env: {
        EPHEMERA_TIMEOUTS_START_MS: '7000',
        EPHEMERA_DISK_DISCARD: 'ignore',
        EPHEMERA_IMAGES_ENABLED: 'rbd, qcow2',
      },
      overrides: { log: { level: 'silent' } },
    });
    expect(config.stateDir).toBe('/srv/stack/ephemera');
    expect(config.instancesPath).toBe('/srv/stack/ephemera/instances');
    expect(config.glance.url).toBe('http://127.0.0.1:30626');
    expect(config.libvirt.virtType).toBe('qemu');
    expect(config.images.rbd.secretUuid).toBe(stack.libvirt.cephSecretUuid);
    expect(config.images.type).toBe('lvm');
    expect(config.images.lvm.volumeGroup).toBe('vg0');
    expect(config.timeouts.startMs).toBe(7000);
    expect(config.disk.discard).toBe('ignore');
    expect(config.images.enabled).toEqual(['rbd', 'qcow2']);
    expect(config.log.level).toBe('silent');
    expect(sources).toMatchObject({
      'glance.url': 'stack',
      'images.type': 'file',
      'timeouts.startMs': 'env',
      'log.level': 'override',
      'glance.timeoutMs': 'default',
    });
  });

  it.each([
    [{ images: { type: 'zfs' } }, 'images.type'],
    [{ timeouts: { startMs: 5 } }, 'timeouts.startMs'],
    [{ timeouts: { startMs: '12x' } }, 'timeouts.startMs'],
    [{ glance: { url: 'ftp://x' } }, 'glance.url'],
    [{ glance: { url: 'http://user:pw@x' } }, 'glance.url'],
    [{ images: { rbd: { secretUuid: 'nope' } } }, 'images.rbd.secretUuid'],
    [{ images: { rbd: { pool: 'a\nb' } } }, 'images.rbd.pool'],
    [{ images: { nope: 1 } }, 'images.nope'],
    [{ glance: { auth: 'token' } }, 'glance.token'],
    [{ images: { enabled: ['rbd', 'zfs'] } }, 'images.enabled'],
  ])('refuses %j naming %s', (overrides, key) => {
    let err: unknown;
    try {
      loadConfig({ env: {}, overrides });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect(isDriverError(err, 'INVALID_CONFIG')).toBe(true);
    expect((err as ConfigError).key).toBe(key);
  });

  it.each([
    [{ 'images.rbd.pool': 'other' }, 'images.rbd.pool'],
    [{ images: { 'rbd.pool': 'other' } }, 'images.rbd.pool'],
    [{ images: { rbd: { 'pool.x': 'other' } } }, 'images.rbd.pool.x'],
    [{ 'log.level': 'debug' }, 'log.level'],
    [{ 'nope.deeper': 1 }, 'nope.deeper'],
  ])('a dotted key %j in a config file throws naming %s (nested keys only)', (content, key) => {
    const dir = mkdtempSync(join(tmpdir(), 'eph-cfg-'));
    onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'c.json');
    writeFileSync(file, JSON.stringify(content));
    let err: unknown;
    try {
      loadConfig({ env: {}, file });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).key).toBe(key);
    expect((err as Error).message).toMatch(/unknown option/);
    expect((err as Error).message).toContain('from file');
  });

  it("the caller's defaults sit above the built-in ones and under the file, the environment and overrides", () => {
    const dir = mkdtempSync(join(tmpdir(), 'eph-cfg-'));
    onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'c.json');
    writeFileSync(file, JSON.stringify({ log: { level: 'error' } }));
    const defaults = { log: { level: 'warn' } };
    const only = loadConfig({ env: {}, defaults });
    expect(only.config.log.level).toBe('warn');
    expect(only.sources['log.level']).toBe('default');
    expect(loadConfig({ env: {}, defaults, file }).config.log.level).toBe('error');
    expect(loadConfig({ env: { EPHEMERA_LOG_LEVEL: 'info' }, defaults, file }).config.log.level).toBe('info');
    expect(
      loadConfig({ env: { EPHEMERA_LOG_LEVEL: 'info' }, defaults, file, overrides: { log: { level: 'debug' } } }).config
        .log.level,
    ).toBe('debug');
    expect(() => loadConfig({ env: {}, defaults: { log: { level: 'loud' } } })).toThrow(ConfigError);
  });

  it('names the environment variable of a bad env value', () => {
    expect(() => loadConfig({ env: { EPHEMERA_IMAGES_USE_COW_IMAGES: 'maybe' } })).toThrow(
      /EPHEMERA_IMAGES_USE_COW_IMAGES/,
    );
  });

  it('redacts secrets', () => {
    const { config } = loadConfig({ env: {}, overrides: { glance: { auth: 'token', token: 'sekrit' } } });
    expect(JSON.stringify(redactConfig(config))).not.toContain('sekrit');
    expect(config.glance.token).toBe('sekrit');
  });

  it('fromStack only uses keys of the schema', () => {
    expect(() => loadConfig({ env: {}, stack })).not.toThrow();
    expect(fromStack(stack)).toMatchObject({ images: { rbd: { pool: 'vms', user: 'ephemera' } } });
  });
});

describe('host.id', () => {
  it('defaults to /etc/machine-id, else the hostname, and is a short safe token', () => {
    const dir = mkdtempSync(join(tmpdir(), 'eph-host-'));
    onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
    const mid = join(dir, 'machine-id');
    writeFileSync(mid, '3d1219c7c4c5404aaa1f6d2a48adfda4\n');
    expect(defaultHostId(mid, () => 'ignored')).toBe('3d1219c7c4c5404aaa1f6d2a48adfda4');
    // missing or empty machine-id: the hostname (lower case)
    expect(defaultHostId(join(dir, 'absent'), () => 'Compute-07.example')).toBe('compute-07.example');
    writeFileSync(mid, '\n');
    expect(defaultHostId(mid, () => 'node9')).toBe('node9');
    // what loadConfig uses when host.id is not given
    const { config, sources } = loadConfig({ env: {} });
    expect(config.host.id).toBe(defaultHostId());
    expect(isHostId(config.host.id)).toBe(true);
    expect(sources['host.id']).toBe('default');
  });

  it('is set by the environment, the file or overrides, and a bad id is refused naming the key', () => {
    expect(loadConfig({ env: { EPHEMERA_HOST_ID: 'compute-a' } }).config.host.id).toBe('compute-a');
    expect(loadConfig({ env: {}, overrides: { host: { id: 'b.2_x' } } }).config.host.id).toBe('b.2_x');
    for (const bad of ['has space', 'a/b', '-lead', 'x'.repeat(65), '../etc', 'semi;colon']) {
      let err: unknown;
      try {
        loadConfig({ env: {}, overrides: { host: { id: bad } } });
      } catch (e) {
        err = e;
      }
      expect(err, bad).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).message).toContain('host.id');
    }
  });
});
