// Migration and job calls: the pure conversions (typed params, job stats), and what libvirt's
// test driver (test:///default) does with the calls. It implements none of them (libvirt 9.0's
// test driver has no migration, job stats, abort job or migration tuning): each must reject with
// a typed VIR_ERR_NO_SUPPORT, proving the call reached libvirt with valid arguments. The real
// behaviour is tested against the stack's libvirtd in test/integration/migration.test.ts.
import { randomUUID } from 'node:crypto';
import { createRequire } from 'node:module';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  connect,
  jobStatsFromRaw,
  JobStatsFlags,
  LibvirtError,
  MigrateFlags,
  migrateTypedParams,
  type Connection,
  type Domain,
  type MigrateParams,
} from '@ephemera/libvirt-napi';

describe('migrateTypedParams', () => {
  it('maps every parameter to its VIR_MIGRATE_PARAM_* name and type, one entry per list element', () => {
    const params: Required<MigrateParams> = {
      uri: 'tcp://127.0.0.2',
      destName: 'dst',
      destXml: '<domain/>',
      persistXml: '<domain/>',
      bandwidth: 100,
      bandwidthPostcopy: 200n,
      graphicsUri: 'spice://h',
      listenAddress: '127.0.0.1',
      migrateDisks: ['vda', 'vdb'],
      disksPort: 49200,
      disksUri: 'tcp://127.0.0.2',
      compression: ['xbzrle', 'mt'],
      compressionMtLevel: 1,
      compressionMtThreads: 2,
      compressionMtDthreads: 3,
      compressionXbzrleCache: 1n << 40n,
      autoConvergeInitial: 20,
      autoConvergeIncrement: 10,
      parallelConnections: 4,
      tlsDestination: 'dst.example',
    };
    expect(migrateTypedParams(params)).toEqual([
      ['migrate_uri', 7, 'tcp://127.0.0.2'],
      ['destination_name', 7, 'dst'],
      ['destination_xml', 7, '<domain/>'],
      ['persistent_xml', 7, '<domain/>'],
      ['bandwidth', 4, 100],
      ['bandwidth.postcopy', 4, 200n],
      ['graphics_uri', 7, 'spice://h'],
      ['listen_address', 7, '127.0.0.1'],
      ['migrate_disks', 7, 'vda'],
      ['migrate_disks', 7, 'vdb'],
      ['disks_port', 1, 49200],
      ['disks_uri', 7, 'tcp://127.0.0.2'],
      ['compression', 7, 'xbzrle'],
      ['compression', 7, 'mt'],
      ['compression.mt.level', 1, 1],
      ['compression.mt.threads', 1, 2],
      ['compression.mt.dthreads', 1, 3],
      ['compression.xbzrle.cache', 4, 1n << 40n],
      ['auto_converge.initial', 1, 20],
      ['auto_converge.increment', 1, 10],
      ['parallel.connections', 1, 4],
      ['tls.destination', 7, 'dst.example'],
    ]);
    expect(migrateTypedParams({})).toEqual([]);
    expect(migrateTypedParams({ destName: undefined, bandwidth: 0 })).toEqual([['bandwidth', 4, 0]]);
  });

  it.each([
    [{ bandwith: 10 }, TypeError, /unknown migrate param bandwith/],
    [{ destName: 5 }, TypeError, /destName must be a string/],
    [{ destName: 'a\0b' }, TypeError, /destName must not contain NUL/],
    [{ migrateDisks: 'vda' }, TypeError, /migrateDisks must be a non-empty array/],
    [{ migrateDisks: [] }, TypeError, /migrateDisks must be a non-empty array/],
    [{ compression: ['mt', 3] }, TypeError, /compression must be a string/],
    [{ disksPort: '49200' }, TypeError, /disksPort must be a number/],
    [{ disksPort: 1.5 }, RangeError, /disksPort must be an integer/],
    [{ parallelConnections: 2 ** 31 }, RangeError, /parallelConnections must be an integer/],
    [{ autoConvergeInitial: -1 }, RangeError, /autoConvergeInitial/],
    [{ bandwidth: -1 }, RangeError, /bandwidth must be a non-negative integer/],
    [{ bandwidth: 2 ** 53 }, RangeError, /bandwidth must be a non-negative integer/],
    [{ bandwidth: 1n << 64n }, RangeError, /bandwidth must be a non-negative integer/],
    [{ bandwidth: '1' }, TypeError, /bandwidth must be a number or bigint/],
  ] as const)('refuses %o', (params, type, message) => {
    expect(() => migrateTypedParams(params as unknown as MigrateParams)).toThrow(type);
    expect(() => migrateTypedParams(params as unknown as MigrateParams)).toThrow(message);
  });

  it('refuses a non-object', () => {
    expect(() => migrateTypedParams(null as unknown as MigrateParams)).toThrow(TypeError);
    expect(() => migrateTypedParams(['x'] as unknown as MigrateParams)).toThrow(TypeError);
  });
});

describe('jobStatsFromRaw', () => {
  it('types the known fields and keeps every field, unknown ones included, in raw', () => {
    const raw = {
      operation: 5,
      time_elapsed: 1234n,
      downtime: 42n,
      setup_time: 3n,
      data_total: 67108864n,
      data_processed: 1048576n,
      data_remaining: 66060288n,
      memory_total: 67108864n,
      memory_processed: 1048576n,
      memory_remaining: 66060288n,
      memory_iteration: 2n,
      memory_dirty_rate: 17n,
      memory_bps: 123456n,
      auto_converge_throttle: 20,
      future_field: 7n,
      future_text: 'x',
    };
    const s = jobStatsFromRaw({ type: 2, params: raw });
    expect(s).toEqual({
      type: 'unbounded',
      typeCode: 2,
      operation: 'migration_out',
      timeElapsed: 1234,
      downtime: 42,
      setupTime: 3,
      dataTotal: 67108864,
      dataProcessed: 1048576,
      dataRemaining: 66060288,
      memTotal: 67108864,
      memProcessed: 1048576,
      memRemaining: 66060288,
      memIteration: 2,
      memDirtyRate: 17,
      memBps: 123456,
      autoConvergeThrottle: 20,
      raw,
    });
  });

  it('maps completed/failed jobs and unknown numbers', () => {
    expect(jobStatsFromRaw({ type: 0, params: {} })).toEqual({ type: 'none', typeCode: 0, raw: {} });
    expect(
      jobStatsFromRaw({ type: 4, params: { success: false, errmsg: 'operation aborted', operation: 99 } }),
    ).toMatchObject({
      type: 'failed',
      success: false,
      errmsg: 'operation aborted',
      operation: 'unknown',
    });
    expect(jobStatsFromRaw({ type: 42, params: {} }).type).toBe('unknown');
  });
});

describe('migration and job calls on test:///default', () => {
  let conn: Connection;
  let dom: Domain;
  const name = `lvnapi-mig-${randomUUID().slice(0, 8)}`;

  beforeAll(async () => {
    conn = await connect('test:///default');
    dom = await conn.createXML(
      `<domain type='test'><name>${name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os></domain>`,
    );
  });

  afterAll(async () => {
    await dom?.destroy().catch(() => {});
    await conn?.close();
  });

  async function code(p: Promise<unknown>): Promise<string> {
    try {
      await p;
    } catch (err) {
      expect(err).toBeInstanceOf(LibvirtError);
      return (err as LibvirtError).codeName;
    }
    return 'resolved';
  }

  it('the test driver reports each call as unsupported with a typed VIR_ERR_NO_SUPPORT', async () => {
    const flags = MigrateFlags.LIVE | MigrateFlags.PEER2PEER | MigrateFlags.TUNNELLED;
    const all = {
      migrateToUri: await code(
        dom.migrateToUri(
          'test:///default',
          { bandwidth: 10n, migrateDisks: ['vda', 'vdb'], destName: 'x', disksPort: 1 },
          flags,
        ),
      ),
      getJobStats: await code(dom.getJobStats()),
      getJobStatsCompleted: await code(dom.getJobStats(JobStatsFlags.COMPLETED)),
      abortJob: await code(dom.abortJob()),
      abortJobFlags: await code(dom.abortJobFlags(0)),
      migrateSetMaxDowntime: await code(dom.migrateSetMaxDowntime(100)),
      migrateGetMaxDowntime: await code(dom.migrateGetMaxDowntime()),
      migrateSetMaxSpeed: await code(dom.migrateSetMaxSpeed(10)),
      migrateGetMaxSpeed: await code(dom.migrateGetMaxSpeed()),
    };
    // virDomainMigrateToURI3() checks the source driver's migration features first.
    const { migrateToUri, ...rest } = all;
    expect(migrateToUri).toBe('VIR_ERR_ARGUMENT_UNSUPPORTED');
    expect(rest).toEqual(Object.fromEntries(Object.keys(rest).map((k) => [k, 'VIR_ERR_NO_SUPPORT'])));
    await expect(dom.migrateToUri('test:///default', {}, flags)).rejects.toThrow(/p2p migration is not supported/);
    expect((await dom.state()).state).toBe('running');
  });

  it('bad arguments reject with TypeError/RangeError before reaching libvirt, and the domain is untouched', async () => {
    await expect(dom.migrateToUri('test:///default', { bandwith: 1 } as unknown as MigrateParams)).rejects.toThrow(
      TypeError,
    );
    await expect(dom.migrateToUri('', {})).rejects.toThrow(TypeError);
    await expect(dom.migrateToUri('test:///default', { disksPort: -5 })).rejects.toThrow(RangeError);
    await expect(dom.migrateSetMaxDowntime(-1)).rejects.toThrow(RangeError);
    await expect(dom.migrateSetMaxSpeed(1.5)).rejects.toThrow(RangeError);
    expect((await dom.state()).state).toBe('running');
  });

  it('calls on a closed connection reject with VIR_ERR_INVALID_CONN', async () => {
    const c2 = await connect('test:///default');
    const d2 = await c2.lookupByName(name);
    await c2.close();
    expect(await code(d2.getJobStats())).toBe('VIR_ERR_INVALID_CONN');
    expect(await code(d2.abortJob())).toBe('VIR_ERR_INVALID_CONN');
    expect(await code(d2.migrateToUri('test:///default'))).toBe('VIR_ERR_INVALID_CONN');
  });
});

describe('raw addon: typed params it cannot convert', () => {
  // The TS layer validates first; the addon must still refuse (not crash on) a malformed list.
  const addon = createRequire(import.meta.url)('../../build/Release/ephemera_libvirt.node') as {
    connect(uri: string, ro: boolean, emit: () => void, i: number, c: number): Promise<unknown>;
    listAllDomains(c: unknown, flags: number): Promise<{ handle: unknown }[]>;
    domainMigrateToURI(d: unknown, uri: string, params: unknown, flags: number): Promise<void>;
    close(c: unknown): Promise<void>;
  };

  it.each([
    ['not an array', 'x', TypeError],
    ['an entry that is not a triple', [['migrate_uri', 7]], TypeError],
    ['an unknown type', [['a', 9, 1]], RangeError],
    ['a name too long for libvirt', [['n'.repeat(80), 7, 'x']], RangeError],
    ['an INT over 32 bits', [['disks_port', 1, 2 ** 40]], RangeError],
    ['a fractional ULLONG', [['bandwidth', 4, 1.5]], RangeError],
    ['a negative ULLONG bigint', [['bandwidth', 4, -1n]], RangeError],
    ['a string param given a number', [['migrate_uri', 7, 1]], TypeError],
  ])('throws for %s', async (_what, params, type) => {
    await (await connect('test:///default')).close(); // loads and initialises the addon
    const c = await addon.connect('test:///default', false, () => {}, 5, 3);
    try {
      const [d] = await addon.listAllDomains(c, 0);
      expect(() => addon.domainMigrateToURI(d!.handle, 'test:///default', params, 0)).toThrow(type);
    } finally {
      await addon.close(c);
    }
  });
});
