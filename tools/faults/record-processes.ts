/**
 * Records every child process this Node process starts (program, argv, and the env entries that
 * differ from the parent's), by wrapping `node:child_process`'s functions and re-syncing the ESM
 * named exports (`syncBuiltinESMExports`), so modules that did `import { execFile } from
 * 'node:child_process'` are recorded too. Used by the reliability tests to prove that no command
 * carries a secret or lets hostile input change its arguments.
 */
import { createRequire, syncBuiltinESMExports } from 'node:module';

const require = createRequire(import.meta.url);
// eslint-disable-next-line @typescript-eslint/no-require-imports
const cp = require('node:child_process') as Record<string, unknown>;

/** One recorded child process. */
export interface RecordedProcess {
  fn: string;
  file: string;
  args: string[];
  /** Environment entries passed that differ from process.env (names and values). */
  env: Record<string, string>;
  /** Whether a shell was asked for (`shell: true`, `exec`, `execSync`). */
  shell: boolean;
}

const WRAPPED = ['spawn', 'spawnSync', 'execFile', 'execFileSync', 'exec', 'execSync', 'fork'] as const;
let originals: Record<string, unknown> | undefined;
const recorded: RecordedProcess[] = [];

function record(fn: string, a: unknown[]): void {
  let file = String(a[0]);
  let args: string[] = [];
  let opts: { env?: Record<string, string>; shell?: unknown } | undefined;
  if (Array.isArray(a[1])) {
    args = (a[1] as unknown[]).map(String);
    opts = a[2] as typeof opts;
  } else if (a[1] && typeof a[1] === 'object') opts = a[1] as typeof opts;
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(opts?.env ?? {})) if (process.env[k] !== v && v !== undefined) env[k] = String(v);
  const shell = fn === 'exec' || fn === 'execSync' || Boolean(opts?.shell);
  if (fn === 'exec' || fn === 'execSync') file = String(a[0]);
  recorded.push({ fn, file, args, env, shell });
}

/** Starts recording (idempotent). */
export function startRecordingProcesses(): void {
  if (originals) return;
  originals = {};
  for (const name of WRAPPED) {
    const orig = cp[name] as (...a: unknown[]) => unknown;
    originals[name] = orig;
    cp[name] = function (this: unknown, ...a: unknown[]) {
      record(name, a);
      return orig.apply(this, a);
    };
    // keep util.promisify(execFile) working: it uses the custom promisified symbol
    const custom = (orig as unknown as Record<symbol, unknown>)[Symbol.for('nodejs.util.promisify.custom')];
    if (custom) {
      (cp[name] as unknown as Record<symbol, unknown>)[Symbol.for('nodejs.util.promisify.custom')] = function (
        this: unknown,
        ...a: unknown[]
      ) {
        record(name, a);
        return (custom as (...x: unknown[]) => unknown).apply(this, a);
      };
    }
  }
  syncBuiltinESMExports();
}

/** Stops recording and restores the originals. */
export function stopRecordingProcesses(): void {
  if (!originals) return;
  for (const name of WRAPPED) cp[name] = originals[name];
  originals = undefined;
  syncBuiltinESMExports();
}

/** The processes recorded so far (and clears the list when `clear`). */
export function recordedProcesses(clear = false): RecordedProcess[] {
  const out = [...recorded];
  if (clear) recorded.length = 0;
  return out;
}
