/** The options and results of {@link QemuImg}'s commands (kept apart from the runner itself). */
import type { SafetyOptions } from './inspector/index.js';
import type { ImageLocation } from './location.js';
import type { ResourceLimits } from './run.js';
import type { QemuSecret } from './secrets.js';

/** Construction options of {@link QemuImg}. */
export interface QemuImgOptions {
  /** qemu-img binary (default `qemu-img`, found on PATH). */
  binary?: string;
  /** util-linux prlimit binary (default `prlimit`). */
  prlimitBinary?: string;
  /** Limits for untrusted inspection (`info`, `check`, `measure`). Default 1 GiB address space, 30 s CPU. */
  limits?: ResourceLimits;
  /** Timeout for short commands (everything except convert/rebase/commit). Default 60 s. */
  timeoutMs?: number;
  /** Grace between SIGTERM and SIGKILL when a run is cancelled or times out. Default 2 s. */
  killGraceMs?: number;
  /** Extra environment (the child gets only PATH, LC_ALL=C, LANG=C and these). */
  env?: Record<string, string>;
  /** Observer called with the full argv before every spawn (audit logging, tests). */
  onExec?: (argv: readonly string[]) => void;
  /**
   * qemu-img dies (SIGKILL) when this process dies, even when it is SIGKILLed: every run goes
   * through util-linux `setpriv --pdeathsig KILL` (found on PATH, or `setprivBinary`). Default
   * true; without setpriv installed it has no effect. A killed service otherwise leaves
   * `qemu-img convert` writing a file that its crash recovery has already removed.
   */
  dieWithParent?: boolean;
  /** util-linux setpriv binary (default: `setpriv` on PATH). */
  setprivBinary?: string;
}

/** Options shared by every command. */
export interface CommonOptions {
  /** Overrides the default timeout for this call (0 = none). */
  timeoutMs?: number;
  signal?: AbortSignal;
  /** Secret objects (`--object secret,...,file=`) the command's image options reference; see `withSecretFile`. */
  secrets?: readonly QemuSecret[];
}

/** One internal snapshot, as `qemu-img info` lists it. */
export interface SnapshotInfo {
  id: string;
  name: string;
  vmStateSize: number;
  dateSec: number;
  dateNsec: number;
  vmClockNsec: number;
}

/** Typed `qemu-img info --output=json`. */
export interface ImageInfo {
  filename: string;
  format: string;
  virtualSize: number;
  actualSize: number | undefined;
  clusterSize: number | undefined;
  dirty: boolean;
  encrypted: boolean;
  backingFilename: string | undefined;
  fullBackingFilename: string | undefined;
  backingFormat: string | undefined;
  snapshots: SnapshotInfo[];
  /** `format-specific` (e.g. qcow2 compat, refcount bits; vmdk extents). */
  formatSpecific: { type: string; data: Record<string, unknown> } | undefined;
  /**
   * With `backingChain: true`: the images below this one, nearest first. Otherwise undefined.
   */
  backingChain?: ImageInfo[];
}

/** Options of {@link QemuImg.info}. */
export interface InfoOptions extends CommonOptions {
  /** The image format; passed as `-f` so qemu-img never probes. */
  format?: string;
  /**
   * Treat the image as untrusted (default true): local files are inspected and safety-checked
   * first (qemu-img never runs on a rejected image), `-f` is always given (the detected format
   * when `format` is absent), and qemu-img runs under prlimit. Untrusted non-file images
   * need `format`.
   */
  untrusted?: boolean;
  /** Safety options for the pre-inspection (declaredFormat defaults to `format`). */
  safety?: SafetyOptions;
  /** Follow and report the backing chain (`--backing-chain`); not allowed when untrusted. */
  backingChain?: boolean;
}

/** Options of {@link QemuImg.create}. */
export interface CreateOptions extends CommonOptions {
  format: string;
  /** Virtual size in bytes (optional with a backing file: it then defaults to the backing size). */
  size?: number;
  /** Backing file; its format is mandatory so qemu never probes it. */
  backing?: { file: ImageLocation; format: string };
  /** `cluster_size` in bytes (qcow2, qed, vhdx). */
  clusterSize?: number;
  /** `preallocation`: off, metadata, falloc, full. */
  preallocation?: 'off' | 'metadata' | 'falloc' | 'full';
  /** Further `-o` options, e.g. `{ compat: '1.1', lazy_refcounts: true }`. */
  options?: Record<string, string | number | boolean>;
  /** `-u`: do not open the backing file (it may not exist yet). */
  unsafeBacking?: boolean;
  /**
   * Removes what a failed LUKS create made of a target the wrapper cannot remove itself (RBD),
   * before the create is run again (see the PBKDF benchmark retry): librbd refuses an existing image.
   */
  cleanup?: (target: ImageLocation) => Promise<void> | void;
}

/** Cache modes qemu-img accepts for `-t`/`-T`. */
export type CacheMode = 'none' | 'writeback' | 'writethrough' | 'directsync' | 'unsafe';

/** Options of {@link QemuImg.convert}. */
export interface ConvertOptions extends CommonOptions {
  /** Source format (`-f`). When absent, a local source is inspected and its detected format used. */
  sourceFormat?: string;
  /** Target format (`-O`). */
  targetFormat: string;
  /**
   * Inspect and safety-check a local source first (default true): a source that fails
   * {@link safetyCheck} is never handed to qemu-img. Set false for trusted images that have
   * backing files you created yourself.
   */
  untrusted?: boolean;
  safety?: SafetyOptions;
  /** Progress callback; values are increasing and the last is 100. */
  onProgress?: (percent: number) => void;
  /** `-m`: parallel coroutines (1..16). */
  parallel?: number;
  /** `-W`: allow out-of-order writes. */
  outOfOrder?: boolean;
  /** `-t`: target cache mode. */
  cache?: CacheMode;
  /** `-T`: source cache mode. */
  sourceCache?: CacheMode;
  /** `-n`: do not create the target (it must exist, e.g. a pre-created RBD image). */
  noCreate?: boolean;
  /** `-S`: bytes of zeros that make a hole (0 = fully allocated target). */
  sparseSize?: number;
  /** `-c`: compress (qcow2). */
  compress?: boolean;
  /** `--target-is-zero` (with `noCreate`): the target reads as zeros already. */
  targetIsZero?: boolean;
  /** `-o` target options. */
  targetOptions?: Record<string, string | number | boolean>;
  /**
   * With `noCreate`: open the target with these `--target-image-opts` (e.g. `luksImageOpts`) instead
   * of its location and `-O`; `targetFormat` is then only informational.
   */
  targetImageOpts?: string;
  /** Trusted sources only: open the source with these `--image-opts` (e.g. `luksImageOpts`) instead of `-f`. */
  sourceImageOpts?: string;
  /**
   * Called after a failed or aborted convert with the target, for targets the wrapper cannot
   * remove itself (RBD): e.g. `rbd rm`. Local files created by this convert are removed by the
   * wrapper. Also called before a LUKS convert is run again (the PBKDF benchmark retry), so the
   * second run does not find the first run's target.
   */
  cleanup?: (target: ImageLocation) => Promise<void> | void;
  /** On an abort, before any kill: see `RunSpec.onAbort` (SIGTERM then waits `killGraceMs`). */
  onAbort?: () => void;
  /** Called before each signal sent to qemu-img (e.g. its librbd watch then lingers). */
  onKill?: () => void;
  /** Overrides the SIGTERM-to-SIGKILL grace for this call. */
  killGraceMs?: number;
}

/** Result of {@link QemuImg.check}. */
export interface CheckResult {
  filename: string;
  format: string;
  /** 0 clean, 2 corruptions, 3 leaks (qemu-img's exit status). */
  exitCode: number;
  checkErrors: number;
  corruptions: number;
  leaks: number;
  corruptionsFixed: number;
  leaksFixed: number;
  imageEndOffset: number | undefined;
  totalClusters: number | undefined;
  allocatedClusters: number | undefined;
  fragmentedClusters: number | undefined;
  compressedClusters: number | undefined;
}

/** Result of {@link QemuImg.measure}. */
export interface MeasureResult {
  /** Bytes the target needs for the source's data. */
  required: number;
  /** Bytes the target needs fully allocated. */
  fullyAllocated: number;
  bitmaps: number | undefined;
}
