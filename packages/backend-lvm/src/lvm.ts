import { open, readFile } from 'node:fs/promises';
import { CommandError, run } from './exec.js';

/** Why an LVM command failed, classified from its stderr. */
export type LvmFailure =
  | 'lv-not-found'
  | 'lv-exists'
  | 'vg-not-found'
  | 'insufficient-space'
  | 'insufficient-contiguous-space'
  | 'failed';

/** An LVM command failed; `kind` says why. */
export class LvmError extends Error {
  override readonly name = 'LvmError';
  constructor(
    message: string,
    readonly kind: LvmFailure,
    readonly stderr: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** Classifies an lvm2 stderr text (lvm2 2.03 wording). */
export function classifyLvmStderr(stderr: string): LvmFailure {
  if (/Insufficient suitable contiguous allocatable extents/i.test(stderr)) return 'insufficient-contiguous-space';
  if (/insufficient free space|Insufficient free space|Insufficient suitable allocatable extents/i.test(stderr))
    return 'insufficient-space';
  if (/Logical Volume "[^"]*" already exists/i.test(stderr)) return 'lv-exists';
  if (/Volume group "[^"]*" not found/i.test(stderr)) return 'vg-not-found';
  if (/Failed to find logical volume|logical volume\(s\) not found/i.test(stderr)) return 'lv-not-found';
  return 'failed';
}

/**
 * Whether the running kernel offers device-mapper (what LV activation needs). The node
 * `/dev/mapper/control` alone proves nothing: libdevmapper creates it on first use even when the
 * kernel has no driver, and opening it then fails with ENODEV. So: the kernel's device lists
 * (`/proc/misc`, `/proc/devices`) first, then whether the control node opens.
 */
export async function detectDeviceMapper(): Promise<boolean> {
  for (const file of ['/proc/misc', '/proc/devices']) {
    try {
      const text = await readFile(file, 'utf8');
      if (/\bdevice-mapper\b/.test(text)) return true;
    } catch {
      // not readable: keep looking
    }
  }
  try {
    const fh = await open('/dev/mapper/control', 'r');
    await fh.close();
    return true;
  } catch {
    return false;
  }
}

/** One logical volume as reported by `lvs`. */
export interface LvInfo {
  name: string;
  /** Size in bytes. */
  sizeBytes: number;
  /** `lv_attr`, e.g. `-wi-a-----`. */
  attr: string;
  tags: string[];
  /** Number of segments (a loop mapping needs exactly one). */
  segmentCount: number;
  /** Segments: PV path and first/last physical extent of each. */
  segments: LvSegment[];
  /** `/dev/<vg>/<lv>`. */
  path: string;
  /** Whether the LV is active (only possible with device-mapper). */
  active: boolean;
}

export interface LvSegment {
  pv: string;
  firstExtent: number;
  lastExtent: number;
}

/** Volume group facts from `vgs`. */
export interface VgInfo {
  name: string;
  extentSize: number;
  extentCount: number;
  freeExtents: number;
  sizeBytes: number;
  freeBytes: number;
}

/** Physical volume facts from `pvs`. */
export interface PvInfo {
  name: string;
  vg: string;
  /** Offset of the first physical extent on the PV, in bytes. */
  peStart: number;
  sizeBytes: number;
  freeBytes: number;
}

export interface LvmOptions {
  /** The volume group every call works in. */
  volumeGroup: string;
  /** Whether device-mapper is present; when false every command runs with `--driverloaded n`. */
  deviceMapper: boolean;
  /** Restrict LVM's device scan to these devices (`--devices`), e.g. the VG's PVs. */
  devices?: readonly string[];
  /** Per-command timeout (default 60 s). */
  timeoutMs?: number;
  /** Directory holding the lvm tools (default: resolved through PATH). */
  binDir?: string;
}

type Report = { report: Record<string, Record<string, string>[]>[] };

/** Parses `--reportformat json` output and returns the rows of the `key` section(s). */
export function parseReport(stdout: string, key: 'lv' | 'vg' | 'pv' | 'seg'): Record<string, string>[] {
  let parsed: Report;
  try {
    parsed = JSON.parse(stdout) as Report;
  } catch (cause) {
    throw new LvmError(`unparseable LVM JSON report: ${stdout.slice(0, 200)}`, 'failed', '', { cause });
  }
  const rows: Record<string, string>[] = [];
  for (const section of parsed.report ?? []) {
    const r = section[key];
    if (Array.isArray(r)) rows.push(...r);
  }
  return rows;
}

/** Parses `seg_pe_ranges` such as `/dev/loop0:0-4` (several ranges are space separated). */
export function parsePeRanges(text: string): LvSegment[] {
  const out: LvSegment[] = [];
  for (const part of text.trim().split(/\s+/).filter(Boolean)) {
    const m = /^(.*):(\d+)-(\d+)$/.exec(part);
    if (!m) throw new LvmError(`unexpected seg_pe_ranges value: ${part}`, 'failed', '');
    out.push({ pv: m[1]!, firstExtent: Number(m[2]), lastExtent: Number(m[3]) });
  }
  return out;
}

const num = (v: string | undefined): number => {
  const n = Number(v ?? '');
  if (!Number.isFinite(n)) throw new LvmError(`unexpected number in LVM report: ${String(v)}`, 'failed', '');
  return n;
};

/**
 * Thin, typed layer over the lvm2 commands for one volume group: JSON reports, create,
 * extend, rename, remove, activation. Commands run without a shell, with a timeout,
 * `LVM_SUPPRESS_FD_WARNINGS=1`, and `--driverloaded n` when device-mapper is absent.
 */
export class Lvm {
  readonly vg: string;
  readonly deviceMapper: boolean;
  private readonly devices: readonly string[];
  private readonly timeoutMs: number;
  private readonly binDir: string | undefined;

  constructor(options: LvmOptions) {
    if (!/^[A-Za-z0-9+_.-]+$/.test(options.volumeGroup) || options.volumeGroup.startsWith('-'))
      throw new TypeError(`invalid volume group name: ${options.volumeGroup}`);
    this.vg = options.volumeGroup;
    this.deviceMapper = options.deviceMapper;
    this.devices = options.devices ?? [];
    this.timeoutMs = options.timeoutMs ?? 60_000;
    this.binDir = options.binDir;
  }

  /** Runs one lvm command (`lvs`, `lvcreate`, ...) with the common options. */
  async command(cmd: string, args: readonly string[], signal?: AbortSignal): Promise<string> {
    const common: string[] = [];
    if (!this.deviceMapper) common.push('--driverloaded', 'n');
    if (this.devices.length > 0) common.push('--devices', this.devices.join(','));
    const file = this.binDir ? `${this.binDir}/${cmd}` : cmd;
    try {
      const { stdout } = await run(file, [...common, ...args], {
        timeoutMs: this.timeoutMs,
        env: { LVM_SUPPRESS_FD_WARNINGS: '1' },
        signal,
      });
      return stdout;
    } catch (e) {
      if (e instanceof CommandError) {
        throw new LvmError(e.message, classifyLvmStderr(e.stderr), e.stderr, { cause: e });
      }
      throw e;
    }
  }

  /** The volume group's extent size and free space. */
  async vgInfo(): Promise<VgInfo> {
    const out = await this.command('vgs', [
      '--reportformat',
      'json',
      '--units',
      'b',
      '--nosuffix',
      '-o',
      'vg_name,vg_extent_size,vg_extent_count,vg_free_count,vg_size,vg_free',
      this.vg,
    ]);
    const row = parseReport(out, 'vg')[0];
    if (!row) throw new LvmError(`Volume group "${this.vg}" not found`, 'vg-not-found', '');
    return {
      name: row.vg_name!,
      extentSize: num(row.vg_extent_size),
      extentCount: num(row.vg_extent_count),
      freeExtents: num(row.vg_free_count),
      sizeBytes: num(row.vg_size),
      freeBytes: num(row.vg_free),
    };
  }

  /** The volume group's physical volumes. */
  async pvs(): Promise<PvInfo[]> {
    const out = await this.command('pvs', [
      '--reportformat',
      'json',
      '--units',
      'b',
      '--nosuffix',
      '-o',
      'pv_name,vg_name,pe_start,pv_size,pv_free',
      '-S',
      `vg_name=${this.vg}`,
    ]);
    return parseReport(out, 'pv').map((r) => ({
      name: r.pv_name!,
      vg: r.vg_name!,
      peStart: num(r.pe_start),
      sizeBytes: num(r.pv_size),
      freeBytes: num(r.pv_free),
    }));
  }

  /** All LVs of the volume group (optionally only those whose name starts with `prefix`). */
  async lvs(prefix?: string): Promise<LvInfo[]> {
    const out = await this.command('lvs', [
      '--reportformat',
      'json',
      '--units',
      'b',
      '--nosuffix',
      '-o',
      'lv_name,lv_size,lv_attr,lv_tags,seg_count,seg_pe_ranges',
      '--segments',
      this.vg,
    ]);
    // --segments yields one row per segment; fold them per LV.
    const byName = new Map<string, LvInfo>();
    for (const r of parseReport(out, 'seg')) {
      const name = r.lv_name!;
      if (prefix !== undefined && !name.startsWith(prefix)) continue;
      let lv = byName.get(name);
      if (!lv) {
        const attr = r.lv_attr ?? '';
        lv = {
          name,
          sizeBytes: num(r.lv_size),
          attr,
          tags: (r.lv_tags ?? '').split(',').filter(Boolean),
          segmentCount: num(r.seg_count),
          segments: [],
          path: `/dev/${this.vg}/${name}`,
          active: attr[4] === 'a',
        };
        byName.set(name, lv);
      }
      if (r.seg_pe_ranges) lv.segments.push(...parsePeRanges(r.seg_pe_ranges));
    }
    return [...byName.values()];
  }

  /** One LV, or `undefined` when it does not exist. */
  async lv(name: string): Promise<LvInfo | undefined> {
    return (await this.lvs()).find((l) => l.name === name);
  }

  /**
   * Creates a linear LV of `extents` extents. Without device-mapper it is created inactive and
   * contiguous (`--alloc contiguous -an -Zn`), so one loop device can map it.
   */
  async create(
    name: string,
    extents: number,
    options: { tags?: readonly string[]; signal?: AbortSignal } = {},
  ): Promise<void> {
    assertLvName(name);
    const args = ['-y', '-n', name, '-l', String(extents), '--type', 'linear'];
    if (!this.deviceMapper) args.push('--alloc', 'contiguous', '-an', '-Zn');
    else args.push('-ay', '-Wy', '-Zy');
    for (const t of options.tags ?? []) args.push('--addtag', t);
    args.push(this.vg);
    await this.command('lvcreate', args, options.signal);
  }

  /** Grows an LV to `extents` extents in total. */
  async extend(name: string, extents: number, signal?: AbortSignal): Promise<void> {
    assertLvName(name);
    const args = ['-y', '-l', String(extents)];
    if (!this.deviceMapper) args.push('--alloc', 'contiguous');
    args.push(`${this.vg}/${name}`);
    await this.command('lvextend', args, signal);
  }

  /** Renames an LV. */
  async rename(from: string, to: string): Promise<void> {
    assertLvName(from);
    assertLvName(to);
    await this.command('lvrename', [this.vg, from, to]);
  }

  /** Adds and removes tags on an LV. */
  async changeTags(name: string, add: readonly string[], del: readonly string[]): Promise<void> {
    assertLvName(name);
    const args: string[] = [];
    for (const t of add) args.push('--addtag', t);
    for (const t of del) args.push('--deltag', t);
    if (args.length === 0) return;
    await this.command('lvchange', [...args, `${this.vg}/${name}`]);
  }

  /** Activates (`lvchange -ay`) an LV; only meaningful with device-mapper. */
  async activate(name: string): Promise<void> {
    assertLvName(name);
    if (!this.deviceMapper) throw new LvmError('activation needs device-mapper', 'failed', '');
    await this.command('lvchange', ['-ay', `${this.vg}/${name}`]);
  }

  /** Removes an LV (deactivating it first with device-mapper). */
  async remove(name: string): Promise<void> {
    assertLvName(name);
    if (this.deviceMapper) {
      try {
        await this.command('lvchange', ['-an', `${this.vg}/${name}`]);
      } catch (e) {
        if (!(e instanceof LvmError && e.kind === 'lv-not-found')) throw e;
      }
    }
    await this.command('lvremove', ['-y', `${this.vg}/${name}`]);
  }
}

/** LV names: lvm2's character set, no leading `-`, not `.`/`..`, at most 127 characters. */
export function assertLvName(name: string): void {
  if (
    !/^[A-Za-z0-9+_.-]+$/.test(name) ||
    name.startsWith('-') ||
    name === '.' ||
    name === '..' ||
    name.length > 127 ||
    /^(snapshot|pvmove)/.test(name)
  )
    throw new TypeError(`invalid logical volume name: ${name}`);
}
