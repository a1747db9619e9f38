import { lstat, unlink } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { QemuImgError } from './errors.js';
import { inspectImageFile, safetyCheck, type InspectedImage, type SafetyOptions } from './inspector/index.js';
import { isLocal, renderBacking, renderImageOpts, renderLocation, type ImageLocation } from './location.js';
import { ProgressParser } from './progress.js';
import { findSetpriv } from './pdeathsig.js';
import { renderSecretObject } from './secrets.js';
import { runQemuImg, type ResourceLimits, type RunResult } from './run.js';

import type {
  QemuImgOptions,
  CommonOptions,
  SnapshotInfo,
  ImageInfo,
  InfoOptions,
  CreateOptions,
  ConvertOptions,
  CheckResult,
  MeasureResult,
} from './qemu-img-types.js';
export type {
  QemuImgOptions,
  CommonOptions,
  SnapshotInfo,
  ImageInfo,
  InfoOptions,
  CreateOptions,
  CacheMode,
  ConvertOptions,
  CheckResult,
  MeasureResult,
} from './qemu-img-types.js';

const DEFAULT_LIMITS: ResourceLimits = { addressSpaceBytes: 1024 * 1024 * 1024, cpuSeconds: 30 };
const FORMAT_RE = /^[a-z0-9_-]{1,32}$/;
const OPTION_KEY_RE = /^[A-Za-z0-9_.-]{1,64}$/;

function invalid(command: string, message: string): QemuImgError {
  return new QemuImgError({ kind: 'invalid-argument', command, message });
}

function checkFormat(command: string, fmt: string, what = 'format'): string {
  if (!FORMAT_RE.test(fmt)) throw invalid(command, `invalid ${what} ${JSON.stringify(fmt)}`);
  return fmt;
}

function checkBytes(command: string, n: number, what: string, min = 0): string {
  if (!Number.isSafeInteger(n) || n < min) throw invalid(command, `${what} must be an integer >= ${min}`);
  return String(n);
}

/** Renders `-o` options, doubling commas in values as qemu's option parser requires. */
function renderOptions(command: string, opts: Record<string, string | number | boolean>): string {
  return Object.entries(opts)
    .map(([k, v]) => {
      if (!OPTION_KEY_RE.test(k)) throw invalid(command, `invalid option name ${JSON.stringify(k)}`);
      const s = typeof v === 'boolean' ? (v ? 'on' : 'off') : String(v);
      if (/[\0\n]/.test(s)) throw invalid(command, `invalid value for option ${k}`);
      return `${k}=${s.replace(/,/g, ',,')}`;
    })
    .join(',');
}

/**
 * Creating a LUKS key slot benchmarks PBKDF2 on the thread's CPU time; on a busy host with
 * tick-based CPU accounting that reads 0 ms and QEMU gives up ("Unable to get accurate CPU
 * usage"). Nothing was formatted then: the same command is run again, after a pause that grows
 * (5 tries in all: 3 back to back all failed once in a CI rehearsal, under a busy minute).
 */
async function retryPbkdfBenchmark(
  run: () => Promise<RunResult>,
  signal?: AbortSignal,
  beforeRetry?: () => Promise<void>,
): Promise<RunResult> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await run();
    } catch (e) {
      const stderr = (e as { stderr?: unknown }).stderr;
      if (attempt >= PBKDF_TRIES || signal?.aborted || typeof stderr !== 'string' || !stderr.includes(PBKDF_FLAKE)) {
        throw e;
      }
      // The failed run may have created the target before formatting it (an RBD image).
      await beforeRetry?.();
      // An abort ends the pause at once; the next run then rejects as aborted before it starts.
      await sleep(100 * 2 ** (attempt - 1), undefined, { signal }).catch(() => undefined);
    }
  }
}
const PBKDF_FLAKE = 'Unable to get accurate CPU usage';
const PBKDF_TRIES = 5;

function num(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
}
function str(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

function parseInfo(o: Record<string, unknown>): ImageInfo {
  const snaps = Array.isArray(o['snapshots']) ? (o['snapshots'] as Record<string, unknown>[]) : [];
  const fs = o['format-specific'] as { type?: unknown; data?: unknown } | undefined;
  return {
    filename: str(o['filename']) ?? '',
    format: str(o['format']) ?? '',
    virtualSize: num(o['virtual-size']) ?? 0,
    actualSize: num(o['actual-size']),
    clusterSize: num(o['cluster-size']),
    dirty: o['dirty-flag'] === true,
    encrypted: o['encrypted'] === true,
    backingFilename: str(o['backing-filename']),
    fullBackingFilename: str(o['full-backing-filename']),
    backingFormat: str(o['backing-filename-format']),
    snapshots: snaps.map((s) => ({
      id: String(s['id'] ?? ''),
      name: String(s['name'] ?? ''),
      vmStateSize: num(s['vm-state-size']) ?? 0,
      dateSec: num(s['date-sec']) ?? 0,
      dateNsec: num(s['date-nsec']) ?? 0,
      vmClockNsec: (num(s['vm-clock-sec']) ?? 0) * 1e9 + (num(s['vm-clock-nsec']) ?? 0),
    })),
    formatSpecific:
      fs && typeof fs.type === 'string'
        ? { type: fs.type, data: (fs.data && typeof fs.data === 'object' ? fs.data : {}) as Record<string, unknown> }
        : undefined,
  };
}

/**
 * A safe qemu-img runner: argv only (never a shell), `LC_ALL=C`, timeouts, prlimit for untrusted
 * inspection, qemu-img's stderr in every error, progress events and cancellation.
 */
export class QemuImg {
  private readonly binary: string;
  private readonly prlimitBinary: string;
  private readonly limits: ResourceLimits;
  private readonly timeoutMs: number;
  private readonly killGraceMs: number;
  private readonly env: Record<string, string>;
  private readonly onExec: ((argv: readonly string[]) => void) | undefined;
  private readonly setprivBinary: string | undefined;

  constructor(options: QemuImgOptions = {}) {
    this.binary = options.binary ?? 'qemu-img';
    this.prlimitBinary = options.prlimitBinary ?? 'prlimit';
    this.limits = options.limits ?? DEFAULT_LIMITS;
    this.timeoutMs = options.timeoutMs ?? 60_000;
    this.killGraceMs = options.killGraceMs ?? 2_000;
    this.env = {
      PATH: process.env['PATH'] ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
      ...options.env,
      LC_ALL: 'C',
      LANG: 'C',
    };
    this.onExec = options.onExec;
    this.setprivBinary =
      options.dieWithParent === false ? undefined : (options.setprivBinary ?? findSetpriv(this.env['PATH']));
  }

  private run(
    command: string,
    args: string[],
    opts: CommonOptions & {
      limits?: boolean;
      okExitCodes?: number[];
      onStdout?: (t: string) => void;
      long?: boolean;
      beforeRetry?: () => Promise<void>;
    } & Pick<ConvertOptions, 'onAbort' | 'onKill' | 'killGraceMs'>,
  ): Promise<RunResult> {
    const timeout = opts.timeoutMs ?? (opts.long ? 0 : this.timeoutMs);
    const once = (): Promise<RunResult> =>
      runQemuImg({
        binary: this.binary,
        prlimitBinary: this.prlimitBinary,
        setprivBinary: this.setprivBinary,
        command,
        args: [command, ...(opts.secrets ?? []).flatMap(renderSecretObject), ...args],
        env: this.env,
        timeoutMs: timeout > 0 ? timeout : undefined,
        signal: opts.signal,
        limits: opts.limits ? this.limits : undefined,
        killGraceMs: opts.killGraceMs ?? this.killGraceMs,
        onAbort: opts.onAbort,
        onKill: opts.onKill,
        okExitCodes: opts.okExitCodes,
        onStdout: opts.onStdout,
        onExec: this.onExec,
      });
    if (!opts.secrets?.length) return once();
    return retryPbkdfBenchmark(once, opts.signal, opts.beforeRetry);
  }

  private parseJson(command: string, res: RunResult): unknown {
    try {
      return JSON.parse(res.stdout);
    } catch (e) {
      throw new QemuImgError({
        kind: 'parse',
        command,
        stderr: res.stderr,
        message: `qemu-img ${command} printed invalid JSON`,
        cause: e,
      });
    }
  }

  /**
   * Pre-flight for untrusted input: inspect a local file and safety-check it, returning the
   * format to pass as `-f`. Non-file locations need an explicit format.
   */
  private async vet(
    command: string,
    loc: ImageLocation,
    format: string | undefined,
    safety: SafetyOptions | undefined,
  ): Promise<{ format: string; inspected?: InspectedImage }> {
    if (format !== undefined) checkFormat(command, format);
    if (!isLocal(loc)) {
      if (format === undefined) throw invalid(command, 'an untrusted non-file image needs an explicit format');
      return { format };
    }
    const inspected = safetyCheck(await inspectImageFile(loc), {
      ...safety,
      declaredFormat: safety?.declaredFormat ?? (format === 'vpc' ? 'vhd' : format),
    });
    return { format: format ?? inspected.qemuFormat, inspected };
  }

  /**
   * `qemu-img info --output=json --force-share`. Untrusted by default: see
   * {@link InfoOptions.untrusted}.
   */
  async info(loc: ImageLocation, options: InfoOptions = {}): Promise<ImageInfo> {
    const untrusted = options.untrusted ?? true;
    let format = options.format;
    if (format !== undefined) checkFormat('info', format);
    if (untrusted) {
      if (options.backingChain) throw invalid('info', 'backingChain cannot be combined with untrusted');
      format = (await this.vet('info', loc, format, options.safety)).format;
    }
    const args = ['--output=json', '--force-share'];
    if (format) args.push('-f', format);
    if (options.backingChain) args.push('--backing-chain');
    args.push(renderLocation(loc));
    const res = await this.run('info', args, { ...options, limits: untrusted });
    const json = this.parseJson('info', res);
    if (Array.isArray(json)) {
      const [top, ...rest] = json.map((o) => parseInfo(o as Record<string, unknown>));
      if (!top) throw new QemuImgError({ kind: 'parse', command: 'info', message: 'empty backing chain' });
      return { ...top, backingChain: rest };
    }
    if (!json || typeof json !== 'object') {
      throw new QemuImgError({ kind: 'parse', command: 'info', message: 'qemu-img info printed no object' });
    }
    const info = parseInfo(json as Record<string, unknown>);
    return options.backingChain ? { ...info, backingChain: [] } : info;
  }

  /** `qemu-img create`. A backing file always comes with its format (`-F`). */
  async create(loc: ImageLocation, options: CreateOptions): Promise<void> {
    const args = ['-q', '-f', checkFormat('create', options.format)];
    if (options.backing) {
      if (!options.backing.format) throw invalid('create', 'a backing file needs its format');
      args.push(
        '-b',
        renderBacking(options.backing.file),
        '-F',
        checkFormat('create', options.backing.format, 'backing format'),
      );
      if (options.unsafeBacking) args.push('-u');
    } else if (options.size === undefined) {
      throw invalid('create', 'size is required without a backing file');
    }
    const o: Record<string, string | number | boolean> = { ...options.options };
    if (options.clusterSize !== undefined)
      o['cluster_size'] = Number(checkBytes('create', options.clusterSize, 'clusterSize', 512));
    if (options.preallocation) o['preallocation'] = options.preallocation;
    if (Object.keys(o).length) args.push('-o', renderOptions('create', o));
    args.push(renderLocation(loc));
    if (options.size !== undefined) args.push(checkBytes('create', options.size, 'size'));
    const { cleanup } = options;
    await this.run('create', args, {
      ...options,
      ...(cleanup && !isLocal(loc) ? { beforeRetry: async () => void (await cleanup(loc)) } : {}),
    });
  }

  /**
   * `qemu-img convert -p`. Progress arrives through `onProgress` (increasing, ending at 100).
   * On failure or abort the child is killed (SIGTERM, then SIGKILL), a local target this call
   * created is removed, and `cleanup` is called for other targets.
   */
  async convert(source: ImageLocation, target: ImageLocation, options: ConvertOptions): Promise<void> {
    const cmd = 'convert';
    let srcFormat = options.sourceFormat;
    if (options.untrusted ?? true) {
      srcFormat = (await this.vet(cmd, source, srcFormat, options.safety)).format;
    } else if (srcFormat === undefined) {
      throw invalid(cmd, 'sourceFormat is required for trusted converts (qemu-img must never probe)');
    }
    if (options.sourceImageOpts !== undefined && (options.untrusted ?? true))
      throw invalid(cmd, 'sourceImageOpts is for trusted sources only');
    const args = ['-p'];
    if (options.sourceImageOpts === undefined) args.push('-f', checkFormat(cmd, srcFormat!));
    else args.push('--image-opts');
    if (options.targetImageOpts === undefined) args.push('-O', checkFormat(cmd, options.targetFormat, 'target format'));
    else if (!options.noCreate) throw invalid(cmd, 'targetImageOpts needs noCreate');
    else args.push('--target-image-opts');
    if (options.parallel !== undefined) {
      if (!Number.isInteger(options.parallel) || options.parallel < 1 || options.parallel > 16) {
        throw invalid(cmd, 'parallel must be 1..16');
      }
      args.push('-m', String(options.parallel));
    }
    if (options.outOfOrder) args.push('-W');
    if (options.cache) args.push('-t', options.cache);
    if (options.sourceCache) args.push('-T', options.sourceCache);
    if (options.noCreate) args.push('-n');
    if (options.targetIsZero) {
      if (!options.noCreate) throw invalid(cmd, 'targetIsZero needs noCreate');
      args.push('--target-is-zero');
    }
    if (options.sparseSize !== undefined) args.push('-S', checkBytes(cmd, options.sparseSize, 'sparseSize'));
    if (options.compress) args.push('-c');
    if (options.targetOptions && Object.keys(options.targetOptions).length) {
      if (options.noCreate) throw invalid(cmd, 'targetOptions cannot be combined with noCreate');
      args.push('-o', renderOptions(cmd, options.targetOptions));
    }
    const src = renderLocation(source);
    const dst = renderLocation(target);
    args.push(options.sourceImageOpts ?? src, options.targetImageOpts ?? dst);

    const createdLocal = isLocal(target) && !(await exists(dst));
    const removeTarget = async (): Promise<void> => {
      if (isLocal(target)) {
        if (createdLocal) await unlink(dst).catch(() => undefined);
      } else if (options.cleanup) {
        await options.cleanup(target);
      }
    };
    // A retried run (-n aside) must not find the target the failed run created.
    await this.withProgress(
      cmd,
      { args, beforeRetry: options.noCreate ? undefined : removeTarget },
      options,
      removeTarget,
    );
  }

  private async withProgress(
    command: string,
    { args, beforeRetry }: { args: string[]; beforeRetry?: () => Promise<void> },
    options: CommonOptions & { onProgress?: (p: number) => void } & Pick<
        ConvertOptions,
        'onAbort' | 'onKill' | 'killGraceMs'
      >,
    onFailure?: () => Promise<void>,
  ): Promise<void> {
    const parser = new ProgressParser();
    const emit = (values: number[]): void => {
      for (const v of values) options.onProgress?.(v);
    };
    try {
      await this.run(command, args, {
        ...options,
        long: true,
        onStdout: (t) => emit(parser.feed(t)),
        ...(beforeRetry ? { beforeRetry } : {}),
      });
    } catch (e) {
      if (onFailure) await onFailure();
      throw e;
    }
    emit(parser.finish());
  }

  /** `qemu-img resize`. Shrinking needs `shrink: true`. */
  async resize(
    loc: ImageLocation,
    size: number,
    options: CommonOptions & {
      format: string;
      shrink?: boolean;
      preallocation?: 'off' | 'metadata' | 'falloc' | 'full';
    },
  ): Promise<void> {
    const args = ['-q', '-f', checkFormat('resize', options.format)];
    if (options.preallocation) args.push(`--preallocation=${options.preallocation}`);
    if (options.shrink) args.push('--shrink');
    args.push(renderLocation(loc), checkBytes('resize', size, 'size'));
    await this.run('resize', args, options);
  }

  /**
   * `qemu-img check --output=json`. Corruptions (exit 2) and leaks (exit 3) are results, not
   * errors. Untrusted by default (pre-inspection, prlimit); `repair` needs `untrusted: false`.
   */
  async check(
    loc: ImageLocation,
    options: CommonOptions & {
      format?: string;
      untrusted?: boolean;
      safety?: SafetyOptions;
      repair?: 'leaks' | 'all';
    } = {},
  ): Promise<CheckResult> {
    const untrusted = options.untrusted ?? true;
    let format = options.format;
    if (untrusted) {
      if (options.repair) throw invalid('check', 'repair needs untrusted: false');
      format = (await this.vet('check', loc, format, options.safety)).format;
    } else if (format === undefined) {
      throw invalid('check', 'format is required');
    }
    const args = ['--output=json', '-f', checkFormat('check', format!)];
    if (options.repair) args.push('-r', options.repair);
    else args.push('--force-share');
    args.push(renderLocation(loc));
    const res = await this.run('check', args, { ...options, limits: untrusted, okExitCodes: [2, 3] });
    const o = this.parseJson('check', res) as Record<string, unknown>;
    return {
      filename: str(o['filename']) ?? '',
      format: str(o['format']) ?? format!,
      exitCode: res.exitCode,
      checkErrors: num(o['check-errors']) ?? 0,
      corruptions: num(o['corruptions']) ?? 0,
      leaks: num(o['leaks']) ?? 0,
      corruptionsFixed: num(o['corruptions-fixed']) ?? 0,
      leaksFixed: num(o['leaks-fixed']) ?? 0,
      imageEndOffset: num(o['image-end-offset']),
      totalClusters: num(o['total-clusters']),
      allocatedClusters: num(o['allocated-clusters']),
      fragmentedClusters: num(o['fragmented-clusters']),
      compressedClusters: num(o['compressed-clusters']),
    };
  }

  /**
   * `qemu-img measure --output=json`: space a conversion to `targetFormat` needs, for an
   * existing image (`source`, untrusted by default) or a new one of `size` bytes.
   */
  async measure(
    input: { source: ImageLocation; format?: string; untrusted?: boolean; safety?: SafetyOptions } | { size: number },
    options: CommonOptions & { targetFormat: string; targetOptions?: Record<string, string | number | boolean> },
  ): Promise<MeasureResult> {
    const args = ['--output=json', '-O', checkFormat('measure', options.targetFormat, 'target format')];
    if (options.targetOptions && Object.keys(options.targetOptions).length) {
      args.push('-o', renderOptions('measure', options.targetOptions));
    }
    let limits = false;
    if ('size' in input) {
      args.push('--size', checkBytes('measure', input.size, 'size'));
    } else {
      let format = input.format;
      if (input.untrusted ?? true) {
        format = (await this.vet('measure', input.source, format, input.safety)).format;
        limits = true;
      } else if (format === undefined) {
        throw invalid('measure', 'format is required');
      }
      args.push('-f', checkFormat('measure', format!), renderLocation(input.source));
    }
    const res = await this.run('measure', args, { ...options, limits });
    const o = this.parseJson('measure', res) as Record<string, unknown>;
    const required = num(o['required']);
    const fullyAllocated = num(o['fully-allocated']);
    if (required === undefined || fullyAllocated === undefined) {
      throw new QemuImgError({
        kind: 'parse',
        command: 'measure',
        stderr: res.stderr,
        message: 'measure output lacks sizes',
      });
    }
    return { required, fullyAllocated, bitmaps: num(o['bitmaps']) };
  }

  /**
   * `qemu-img rebase -p`: change the backing file (`backing: null` flattens onto nothing).
   * The new backing format is mandatory (`-F`). `unsafe` (`-u`) only rewrites the header.
   */
  async rebase(
    loc: ImageLocation,
    options: CommonOptions & {
      format: string;
      backing: { file: ImageLocation; format: string } | null;
      unsafe?: boolean;
      onProgress?: (percent: number) => void;
    },
  ): Promise<void> {
    const args = ['-p', '-f', checkFormat('rebase', options.format)];
    if (options.unsafe) args.push('-u');
    if (options.backing) {
      args.push(
        '-b',
        renderBacking(options.backing.file),
        '-F',
        checkFormat('rebase', options.backing.format, 'backing format'),
      );
    } else {
      args.push('-b', '');
    }
    args.push(renderLocation(loc));
    await this.withProgress('rebase', { args }, options);
  }

  /** `qemu-img commit -p`: merge an overlay into its backing file (or `base`). `drop` = `-d`. */
  async commit(
    loc: ImageLocation,
    options: CommonOptions & {
      format: string;
      base?: ImageLocation;
      drop?: boolean;
      onProgress?: (percent: number) => void;
    },
  ): Promise<void> {
    const args = ['-p', '-f', checkFormat('commit', options.format)];
    if (options.base !== undefined) args.push('-b', renderLocation(options.base));
    if (options.drop) args.push('-d');
    args.push(renderLocation(loc));
    await this.withProgress('commit', { args }, options);
  }

  /** Internal snapshots of an image (from `qemu-img info`, which has a JSON form). */
  async listSnapshots(loc: ImageLocation, options: CommonOptions & { format: string }): Promise<SnapshotInfo[]> {
    const info = await this.info(loc, { ...options, untrusted: false });
    return info.snapshots;
  }

  /** `qemu-img snapshot -c NAME`. */
  async createSnapshot(loc: ImageLocation, name: string, options: CommonOptions & { format: string }): Promise<void> {
    await this.snapshot('-c', loc, name, options);
  }

  /** `qemu-img snapshot -a NAME`: revert the image to the snapshot. */
  async applySnapshot(loc: ImageLocation, name: string, options: CommonOptions & { format: string }): Promise<void> {
    await this.snapshot('-a', loc, name, options);
  }

  /** `qemu-img snapshot -d NAME`. */
  async deleteSnapshot(loc: ImageLocation, name: string, options: CommonOptions & { format: string }): Promise<void> {
    await this.snapshot('-d', loc, name, options);
  }

  private async snapshot(
    flag: string,
    loc: ImageLocation,
    name: string,
    options: CommonOptions & { format: string },
  ): Promise<void> {
    if (!name || /[\0\n]/.test(name) || name.length > 255) throw invalid('snapshot', 'invalid snapshot name');
    // `qemu-img snapshot` has no -f: --image-opts names the driver so qemu-img never probes.
    const opts = renderImageOpts(loc, checkFormat('snapshot', options.format));
    await this.run('snapshot', ['-q', '--image-opts', flag, name, opts], options);
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch {
    return false;
  }
}
