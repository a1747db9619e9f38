/**
 * Migration parameters and job statistics: typed views of the virTypedParameter lists that
 * virDomainMigrateToURI3() takes and virDomainGetJobStats() returns (names from libvirt 9.0).
 * Pure conversion; the calls themselves are on `Domain`.
 */
import { JOB_OPERATIONS, JOB_TYPES, type JobOperation, type JobType } from './constants.js';
import type { RawJobStats, RawTypedParam } from './native.js';

/** VIR_TYPED_PARAM_* numbers. */
const INT = 1;
const ULLONG = 4;
const STRING = 7;

type Kind = 'string' | 'strings' | 'int' | 'ullong';

/** Each parameter: its libvirt name (`VIR_MIGRATE_PARAM_*`) and value type. */
const MIGRATE_PARAMS = {
  uri: ['migrate_uri', 'string'],
  destName: ['destination_name', 'string'],
  destXml: ['destination_xml', 'string'],
  persistXml: ['persistent_xml', 'string'],
  bandwidth: ['bandwidth', 'ullong'],
  bandwidthPostcopy: ['bandwidth.postcopy', 'ullong'],
  graphicsUri: ['graphics_uri', 'string'],
  listenAddress: ['listen_address', 'string'],
  migrateDisks: ['migrate_disks', 'strings'],
  disksPort: ['disks_port', 'int'],
  disksUri: ['disks_uri', 'string'],
  compression: ['compression', 'strings'],
  compressionMtLevel: ['compression.mt.level', 'int'],
  compressionMtThreads: ['compression.mt.threads', 'int'],
  compressionMtDthreads: ['compression.mt.dthreads', 'int'],
  compressionXbzrleCache: ['compression.xbzrle.cache', 'ullong'],
  autoConvergeInitial: ['auto_converge.initial', 'int'],
  autoConvergeIncrement: ['auto_converge.increment', 'int'],
  parallelConnections: ['parallel.connections', 'int'],
  tlsDestination: ['tls.destination', 'string'],
} as const satisfies Record<string, readonly [string, Kind]>;

/**
 * `Domain.migrateToUri()` parameters (`VIR_MIGRATE_PARAM_*`); every field is optional and an
 * absent one is not sent (libvirt's default applies).
 */
export interface MigrateParams {
  /** `migrate_uri`: where QEMU sends the data (e.g. `tcp://127.0.0.2`); not with `TUNNELLED`. */
  uri?: string;
  /** `destination_name`: the domain's name on the destination. */
  destName?: string;
  /** `destination_xml`: the domain XML to use on the destination (ABI-compatible). */
  destXml?: string;
  /** `persistent_xml`: the persistent definition on the destination (with `PERSIST_DEST`). */
  persistXml?: string;
  /** `bandwidth`: maximum migration bandwidth in MiB/s. */
  bandwidth?: number | bigint;
  /** `bandwidth.postcopy`: bandwidth in MiB/s for the post-copy phase. */
  bandwidthPostcopy?: number | bigint;
  /** `graphics_uri`: where clients of the graphics console reconnect. */
  graphicsUri?: string;
  /** `listen_address`: the address the destination listens on for the migration stream. */
  listenAddress?: string;
  /** `migrate_disks`: target devs of the disks to copy (with `NON_SHARED_DISK`/`NON_SHARED_INC`). */
  migrateDisks?: readonly string[];
  /** `disks_port`: port of the destination's NBD server for disk copies. */
  disksPort?: number;
  /** `disks_uri`: URI of the destination's NBD server. */
  disksUri?: string;
  /** `compression`: methods to use (`'xbzrle'`, `'mt'`), with `MigrateFlags.COMPRESSED`. */
  compression?: readonly string[];
  /** `compression.mt.level`: multithreaded compression level. */
  compressionMtLevel?: number;
  /** `compression.mt.threads`: compression threads on the source. */
  compressionMtThreads?: number;
  /** `compression.mt.dthreads`: decompression threads on the destination. */
  compressionMtDthreads?: number;
  /** `compression.xbzrle.cache`: XBZRLE cache size in bytes. */
  compressionXbzrleCache?: number | bigint;
  /** `auto_converge.initial`: initial CPU throttling percentage (with `AUTO_CONVERGE`). */
  autoConvergeInitial?: number;
  /** `auto_converge.increment`: throttling increment percentage (with `AUTO_CONVERGE`). */
  autoConvergeIncrement?: number;
  /** `parallel.connections`: number of connections (with `MigrateFlags.PARALLEL`). */
  parallelConnections?: number;
  /** `tls.destination`: host name the destination's TLS certificate must match (with `TLS`). */
  tlsDestination?: string;
}

const ULLONG_MAX = (1n << 64n) - 1n;

function checkString(key: string, v: unknown): string {
  if (typeof v !== 'string') throw new TypeError(`migrate param ${key} must be a string`);
  // libvirt copies C strings: a NUL would silently cut the value.
  if (v.includes('\0')) throw new TypeError(`migrate param ${key} must not contain NUL`);
  return v;
}

/**
 * Validates `params` and converts them to the `[name, type, value]` list the addon turns into a
 * virTypedParameter array (a list param gives one entry per element). Throws TypeError for an
 * unknown key or a wrong type, RangeError for an out-of-range number.
 */
export function migrateTypedParams(params: MigrateParams): RawTypedParam[] {
  if (params === null || typeof params !== 'object' || Array.isArray(params)) {
    throw new TypeError('migrate params must be an object');
  }
  const out: RawTypedParam[] = [];
  for (const [key, value] of Object.entries(params)) {
    if (!Object.hasOwn(MIGRATE_PARAMS, key)) throw new TypeError(`unknown migrate param ${key}`);
    if (value === undefined) continue;
    const [name, kind] = MIGRATE_PARAMS[key as keyof typeof MIGRATE_PARAMS];
    switch (kind) {
      case 'string':
        out.push([name, STRING, checkString(key, value)]);
        break;
      case 'strings': {
        if (!Array.isArray(value) || value.length === 0) {
          throw new TypeError(`migrate param ${key} must be a non-empty array of strings`);
        }
        for (const v of value as unknown[]) out.push([name, STRING, checkString(key, v)]);
        break;
      }
      case 'int':
        if (typeof value !== 'number') throw new TypeError(`migrate param ${key} must be a number`);
        if (!Number.isInteger(value) || value < 0 || value > 0x7fffffff) {
          throw new RangeError(`migrate param ${key} must be an integer in 0..2147483647`);
        }
        out.push([name, INT, value]);
        break;
      case 'ullong': {
        if (typeof value !== 'number' && typeof value !== 'bigint') {
          throw new TypeError(`migrate param ${key} must be a number or bigint`);
        }
        const ok =
          typeof value === 'bigint' ? value >= 0n && value <= ULLONG_MAX : Number.isSafeInteger(value) && value >= 0;
        if (!ok) throw new RangeError(`migrate param ${key} must be a non-negative integer`);
        out.push([name, ULLONG, value]);
        break;
      }
    }
  }
  return out;
}

/**
 * `Domain.getJobStats()`: the job's type and its statistics. A field is present only when
 * libvirt reports it (which depends on the job and its phase). Times are in ms, sizes in bytes,
 * rates in bytes/s (`memDirtyRate` in pages/s).
 */
export interface JobStats {
  /** `'none'` when no job runs; `'unbounded'` for a running migration; `'completed'`/`'failed'` with `COMPLETED`. */
  type: JobType | 'unknown';
  /** libvirt's `virDomainJobType` number. */
  typeCode: number;
  /** `operation`: what the job does (`'migration_out'` on the source of a migration). */
  operation?: JobOperation | 'unknown';
  timeElapsed?: number;
  timeElapsedNet?: number;
  timeRemaining?: number;
  /** `downtime`: the guest's (expected, or for a completed job real) downtime in ms. */
  downtime?: number;
  downtimeNet?: number;
  setupTime?: number;
  dataTotal?: number;
  dataProcessed?: number;
  dataRemaining?: number;
  memTotal?: number;
  memProcessed?: number;
  memRemaining?: number;
  memConstant?: number;
  memNormal?: number;
  memNormalBytes?: number;
  memBps?: number;
  memDirtyRate?: number;
  memPageSize?: number;
  /** `memory_iteration`: number of memory passes so far. */
  memIteration?: number;
  memPostcopyReqs?: number;
  diskTotal?: number;
  diskProcessed?: number;
  diskRemaining?: number;
  diskBps?: number;
  diskTempUsed?: number;
  diskTempTotal?: number;
  compressionCache?: number;
  compressionBytes?: number;
  compressionPages?: number;
  compressionCacheMisses?: number;
  compressionOverflow?: number;
  autoConvergeThrottle?: number;
  /** `success`: whether a completed job succeeded. */
  success?: boolean;
  /** `errmsg`: why a failed job failed. */
  errmsg?: string;
  /** Every field as libvirt returned it, by libvirt name, including ones this binding does not know (64-bit integers as bigint). */
  raw: Record<string, number | bigint | boolean | string>;
}

type NumericStat = Exclude<keyof JobStats, 'type' | 'typeCode' | 'operation' | 'success' | 'errmsg' | 'raw'>;

/** libvirt's `VIR_DOMAIN_JOB_*` field names of the numeric statistics. */
const NUMERIC_STATS = {
  time_elapsed: 'timeElapsed',
  time_elapsed_net: 'timeElapsedNet',
  time_remaining: 'timeRemaining',
  downtime: 'downtime',
  downtime_net: 'downtimeNet',
  setup_time: 'setupTime',
  data_total: 'dataTotal',
  data_processed: 'dataProcessed',
  data_remaining: 'dataRemaining',
  memory_total: 'memTotal',
  memory_processed: 'memProcessed',
  memory_remaining: 'memRemaining',
  memory_constant: 'memConstant',
  memory_normal: 'memNormal',
  memory_normal_bytes: 'memNormalBytes',
  memory_bps: 'memBps',
  memory_dirty_rate: 'memDirtyRate',
  memory_page_size: 'memPageSize',
  memory_iteration: 'memIteration',
  memory_postcopy_requests: 'memPostcopyReqs',
  disk_total: 'diskTotal',
  disk_processed: 'diskProcessed',
  disk_remaining: 'diskRemaining',
  disk_bps: 'diskBps',
  disk_temp_used: 'diskTempUsed',
  disk_temp_total: 'diskTempTotal',
  compression_cache: 'compressionCache',
  compression_bytes: 'compressionBytes',
  compression_pages: 'compressionPages',
  compression_cache_misses: 'compressionCacheMisses',
  compression_overflow: 'compressionOverflow',
  auto_converge_throttle: 'autoConvergeThrottle',
} as const satisfies Record<string, NumericStat>;

/**
 * Maps virDomainGetJobStats()'s raw result to `JobStats`. Known numeric fields become numbers
 * (byte counts and milliseconds stay far below 2^53); `raw` keeps everything as returned.
 */
export function jobStatsFromRaw(rawStats: RawJobStats): JobStats {
  const { type: typeCode, params } = rawStats;
  const stats: JobStats = { type: JOB_TYPES[typeCode] ?? 'unknown', typeCode, raw: { ...params } };
  for (const [name, value] of Object.entries(params)) {
    if (Object.hasOwn(NUMERIC_STATS, name) && (typeof value === 'number' || typeof value === 'bigint')) {
      stats[NUMERIC_STATS[name as keyof typeof NUMERIC_STATS]] = Number(value);
    } else if (name === 'operation' && typeof value === 'number') {
      stats.operation = JOB_OPERATIONS[value] ?? 'unknown';
    } else if (name === 'success' && typeof value === 'boolean') {
      stats.success = value;
    } else if (name === 'errmsg' && typeof value === 'string') {
      stats.errmsg = value;
    }
  }
  return stats;
}
