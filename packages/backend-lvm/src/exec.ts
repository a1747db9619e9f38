import { execFile } from 'node:child_process';

/** A spawned command failed (non-zero exit, signal, timeout or abort). */
export class CommandError extends Error {
  override readonly name = 'CommandError';
  constructor(
    message: string,
    /** The program and its arguments. */
    readonly argv: readonly string[],
    /** Exit code, or `null` when killed by a signal / not started. */
    readonly exitCode: number | null,
    /** Trimmed stderr of the command. */
    readonly stderr: string,
    /** True when the timeout fired. */
    readonly timedOut: boolean,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export interface RunOptions {
  /** Milliseconds before the command is killed (default 60 s). */
  timeoutMs?: number;
  /** Extra environment variables. */
  env?: Record<string, string>;
  signal?: AbortSignal;
  /** Maximum stdout/stderr size in bytes (default 16 MiB). */
  maxBuffer?: number;
}

export interface RunResult {
  stdout: string;
  stderr: string;
}

/** Runs `file` with `args` (never a shell) and resolves with its output; rejects with {@link CommandError}. */
export function run(file: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  const timeoutMs = options.timeoutMs ?? 60_000;
  const argv = [file, ...args];
  return new Promise((resolve, reject) => {
    execFile(
      file,
      args,
      {
        timeout: timeoutMs,
        killSignal: 'SIGKILL',
        maxBuffer: options.maxBuffer ?? 16 * 1024 * 1024,
        env: { ...process.env, LC_ALL: 'C', ...options.env },
        signal: options.signal,
        encoding: 'utf8',
      },
      (error, stdout, stderr) => {
        if (!error) {
          resolve({ stdout, stderr });
          return;
        }
        const err = error as NodeJS.ErrnoException & { code?: unknown; killed?: boolean; signal?: string };
        const exitCode = typeof err.code === 'number' ? err.code : null;
        const timedOut = err.killed === true && err.signal === 'SIGKILL' && !options.signal?.aborted;
        const errText = filterNoise(stderr ?? '');
        const why = options.signal?.aborted
          ? 'aborted'
          : timedOut
            ? `timed out after ${timeoutMs} ms`
            : exitCode !== null
              ? `exited with code ${exitCode}`
              : typeof err.code === 'string'
                ? err.code
                : `killed by ${err.signal ?? 'unknown signal'}`;
        reject(
          new CommandError(
            `${argv.join(' ')} ${why}${errText ? `: ${errText}` : ''}`,
            argv,
            exitCode,
            errText,
            timedOut,
            { cause: error },
          ),
        );
      },
    );
  });
}

/** Drops LVM's informational warnings that every no-device-mapper command prints. */
export function filterNoise(stderr: string): string {
  return stderr
    .split('\n')
    .map((l) => l.trim())
    .filter(
      (l) =>
        l.length > 0 &&
        !l.startsWith('WARNING: Activation disabled') &&
        !/^File descriptor \d+ .* leaked on/.test(l) &&
        !/^WARNING: Logical volume .* not zeroed/.test(l),
    )
    .join('\n');
}
