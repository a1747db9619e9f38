import { spawn } from 'node:child_process';
import { QemuImgError } from './errors.js';
import { withParentDeathSignal } from './pdeathsig.js';

/** Resource limits applied with util-linux `prlimit` (setrlimit before exec). */
export interface ResourceLimits {
  /** RLIMIT_AS: bytes of address space. */
  addressSpaceBytes: number;
  /** RLIMIT_CPU: seconds of CPU time. */
  cpuSeconds: number;
}

export interface RunSpec {
  binary: string;
  prlimitBinary: string;
  /**
   * util-linux `setpriv`: the child runs under `setpriv --pdeathsig KILL` and dies with this
   * process (even a SIGKILLed one). Undefined: no parent-death signal.
   */
  setprivBinary?: string | undefined;
  command: string;
  args: string[];
  env: Record<string, string>;
  timeoutMs: number | undefined;
  signal: AbortSignal | undefined;
  limits: ResourceLimits | undefined;
  killGraceMs: number;
  /** Exit codes that are not failures (e.g. `check` reports corruption as 2/3). */
  okExitCodes?: readonly number[];
  onStdout?: (text: string) => void;
  onExec?: (argv: readonly string[]) => void;
  /**
   * Called once when `signal` fires, before any kill: a chance to make qemu-img fail on its own
   * (e.g. fail its HTTP source) so it closes its handles cleanly. SIGTERM then follows after
   * `killGraceMs`, SIGKILL after twice that. Without it SIGTERM is sent at once.
   */
  onAbort?: () => void;
  /** Called before each signal sent to the still running child (a killed client leaves state behind). */
  onKill?: () => void;
}

export interface RunResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

const MAX_CAPTURE = 16 * 1024 * 1024;
const MAX_STDERR = 64 * 1024;

function append(buf: string, more: string, cap: number): string {
  const s = buf + more;
  return s.length > cap ? s.slice(s.length - cap) : s;
}

/**
 * Runs qemu-img with an argv array (never a shell), optional prlimit, timeout and AbortSignal;
 * under `setpriv --pdeathsig KILL` when `setprivBinary` is given (it dies with this process).
 */
export function runQemuImg(spec: RunSpec): Promise<RunResult> {
  const inner = spec.limits
    ? [
        spec.prlimitBinary,
        `--as=${Math.floor(spec.limits.addressSpaceBytes)}`,
        `--cpu=${Math.floor(spec.limits.cpuSeconds)}`,
        '--',
        spec.binary,
        ...spec.args,
      ]
    : [spec.binary, ...spec.args];
  const argv = spec.setprivBinary ? withParentDeathSignal(inner, spec.setprivBinary) : inner;
  const fail = (init: Omit<ConstructorParameters<typeof QemuImgError>[0], 'command' | 'args'>): QemuImgError =>
    new QemuImgError({ command: spec.command, args: spec.args, ...init });

  return new Promise<RunResult>((resolve, reject) => {
    if (spec.signal?.aborted) {
      reject(fail({ kind: 'aborted', message: `qemu-img ${spec.command} aborted before it started` }));
      return;
    }
    spec.onExec?.(argv);
    const child = spawn(argv[0]!, argv.slice(1), {
      env: spec.env,
      stdio: ['ignore', 'pipe', 'pipe'],
      shell: false,
    });
    let stdout = '';
    let stderr = '';
    let why: 'timeout' | 'aborted' | undefined;
    let spawnError: Error | undefined;
    let killTimer: NodeJS.Timeout | undefined;
    let termTimer: NodeJS.Timeout | undefined;
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', (t: string) => {
      stdout = append(stdout, t, MAX_CAPTURE);
      try {
        spec.onStdout?.(t);
      } catch {
        // A listener's exception must not break process supervision.
      }
    });
    child.stderr.on('data', (t: string) => {
      stderr = append(stderr, t, MAX_STDERR);
    });

    const signalChild = (sig: NodeJS.Signals): void => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      try {
        spec.onKill?.();
      } catch {
        // A listener's exception must not break process supervision.
      }
      child.kill(sig);
    };
    const kill = (reason: 'timeout' | 'aborted'): void => {
      if (why) return;
      why = reason;
      // Cooperative first on an abort when the caller can make qemu-img fail on its own.
      const cooperative = reason === 'aborted' && spec.onAbort !== undefined;
      if (cooperative) {
        try {
          spec.onAbort!();
        } catch {
          // A listener's exception must not break process supervision.
        }
      }
      const termAfter = cooperative ? spec.killGraceMs : 0;
      if (termAfter === 0) signalChild('SIGTERM');
      else termTimer = setTimeout(() => signalChild('SIGTERM'), termAfter);
      killTimer = setTimeout(() => signalChild('SIGKILL'), termAfter + spec.killGraceMs);
      termTimer?.unref();
      killTimer.unref();
    };
    const timer = spec.timeoutMs ? setTimeout(() => kill('timeout'), spec.timeoutMs) : undefined;
    const onAbort = (): void => kill('aborted');
    spec.signal?.addEventListener('abort', onAbort, { once: true });

    child.on('error', (e) => {
      spawnError = e;
    });
    child.on('close', (code, sig) => {
      if (timer) clearTimeout(timer);
      if (killTimer) clearTimeout(killTimer);
      if (termTimer) clearTimeout(termTimer);
      spec.signal?.removeEventListener('abort', onAbort);
      const err = stderr.trim();
      if (spawnError) {
        reject(
          fail({
            kind: 'spawn',
            message: `cannot run ${argv[0]}: ${spawnError.message}`,
            cause: spawnError,
          }),
        );
      } else if (why === 'aborted') {
        // The abort's reason (the caller's own error) is the cause and is named in the message.
        const reason: unknown = spec.signal?.reason;
        const because = reason instanceof Error && reason.message ? `: ${reason.message}` : '';
        reject(
          fail({
            kind: 'aborted',
            exitCode: code,
            signal: sig,
            stderr: err,
            message: `qemu-img ${spec.command} aborted${because}`,
            ...(reason !== undefined ? { cause: reason } : {}),
          }),
        );
      } else if (why === 'timeout') {
        reject(
          fail({
            kind: 'timeout',
            exitCode: code,
            signal: sig,
            stderr: err,
            message: `qemu-img ${spec.command} timed out after ${spec.timeoutMs} ms`,
          }),
        );
      } else if (sig) {
        reject(
          fail({
            kind: 'signal',
            signal: sig,
            stderr: err,
            message: `qemu-img ${spec.command} was killed by ${sig}${spec.limits ? ' (resource limits in force)' : ''}${err ? `: ${err}` : ''}`,
          }),
        );
      } else if (code !== 0 && !(spec.okExitCodes ?? []).includes(code ?? -1)) {
        reject(
          fail({
            kind: 'exit',
            exitCode: code,
            stderr: err,
            message: `qemu-img ${spec.command} failed (exit ${code})${err ? `: ${err}` : ''}`,
          }),
        );
      } else {
        resolve({ stdout, stderr, exitCode: code ?? 0 });
      }
    });
  });
}
