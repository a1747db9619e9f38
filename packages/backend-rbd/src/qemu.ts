import { spawn } from 'node:child_process';
import { ProgressParser, withParentDeathSignal } from '@ephemera/qemu-img-wrapper';

/** Where qemu-img writes: an RBD image reached with a ceph.conf and (optionally) a keyring path. */
export interface RbdTarget {
  pool: string;
  image: string;
  /** Read a snapshot (sources only). */
  snapshot?: string;
  /** cephx id without `client.`. */
  user: string;
  confPath: string;
  /** A keyring *file*; never a key. */
  keyringPath?: string;
}

function esc(s: string): string {
  return s.replace(/[\\:@/]/g, (c) => `\\${c}`);
}
function escValue(s: string): string {
  return s.replace(/[\\:@]/g, (c) => `\\${c}`);
}

/**
 * `rbd:pool/image:id=user:conf=path[:keyring=path]`, with QEMU's backslash escaping. Only file
 * paths: a key can never reach qemu-img's argv.
 */
export function rbdTargetUri(t: RbdTarget): string {
  for (const v of [t.pool, t.image, t.user, t.confPath, t.keyringPath ?? 'x']) {
    if (!v || /[\0\n\r]/.test(v)) throw new Error('invalid RBD target component');
  }
  if (t.snapshot !== undefined && (!t.snapshot || /[\0\n\r]/.test(t.snapshot))) throw new Error('invalid RBD snapshot name');
  let s = `rbd:${esc(t.pool)}/${esc(t.image)}${t.snapshot ? `@${esc(t.snapshot)}` : ''}:id=${escValue(t.user)}:conf=${escValue(t.confPath)}`;
  if (t.keyringPath) s += `:keyring=${escValue(t.keyringPath)}`;
  return s;
}

/** The `json:` spelling of an HTTP(S) source for QEMU's curl driver (format from `-f`). */
export function httpSource(url: string, options: { readaheadBytes?: number; timeoutSeconds?: number } = {}): string {
  const file: Record<string, unknown> = { driver: url.startsWith('https:') ? 'https' : 'http', url };
  if (options.readaheadBytes !== undefined) file['readahead'] = options.readaheadBytes;
  if (options.timeoutSeconds !== undefined) file['timeout'] = options.timeoutSeconds;
  return `json:${JSON.stringify({ file })}`;
}

/** A failed qemu-img run, with its stderr (which never holds a key: only paths are passed). */
export class QemuConvertError extends Error {
  constructor(
    message: string,
    readonly stderr: string,
    readonly exitCode: number | null,
    readonly signal: NodeJS.Signals | null,
  ) {
    super(message);
    this.name = 'QemuConvertError';
  }
}

/** Options of {@link runConvert}. */
export interface RunConvertOptions {
  binary?: string;
  /** Kill after this long (ms). */
  timeoutMs: number;
  signal?: AbortSignal;
  onProgress?: (percent: number) => void;
  /**
   * Called when the signal fires, before any kill: make qemu-img fail on its own (e.g. fail the
   * loopback server's requests) so it closes its librbd handles cleanly; SIGTERM follows after
   * `graceMs`, SIGKILL after twice that.
   */
  onAbort?: () => void;
  graceMs?: number;
  /** Called when qemu-img is sent a signal (its librbd watch then lingers until it times out). */
  onKill?: () => void;
}

/**
 * Runs `qemu-img convert -p <args>` (argv only, never a shell, `LC_ALL=C`, minimal env) and
 * resolves when it exits 0. Progress is parsed from `-p` output.
 */
export function runConvert(args: readonly string[], options: RunConvertOptions): Promise<void> {
  const grace = options.graceMs ?? 5_000;
  return new Promise((resolve, reject) => {
    if (options.signal?.aborted) {
      reject(options.signal.reason ?? new Error('aborted'));
      return;
    }
    // Dies with this process (setpriv --pdeathsig): a SIGKILLed driver must not leave qemu-img
    // writing into an image that its crash recovery removes.
    const [cmd, ...argv] = withParentDeathSignal([options.binary ?? 'qemu-img', 'convert', '-p', ...args]);
    const child = spawn(cmd!, argv, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', LC_ALL: 'C', LANG: 'C' },
    });
    const parser = new ProgressParser();
    let stderr = '';
    const timers: NodeJS.Timeout[] = [];
    let why: 'timeout' | 'aborted' | undefined;
    const stop = (reason: 'timeout' | 'aborted'): void => {
      if (why) return;
      why = reason;
      if (reason === 'aborted') options.onAbort?.();
      const kill = (sig: NodeJS.Signals): void => {
        if (child.exitCode !== null || child.signalCode !== null) return;
        options.onKill?.();
        child.kill(sig);
      };
      timers.push(setTimeout(() => kill('SIGTERM'), reason === 'aborted' ? grace : 0));
      timers.push(setTimeout(() => kill('SIGKILL'), (reason === 'aborted' ? grace : 0) + grace));
    };
    const onAbort = (): void => stop('aborted');
    options.signal?.addEventListener('abort', onAbort, { once: true });
    const timer = setTimeout(() => stop('timeout'), options.timeoutMs);
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (t: string) => {
      for (const p of parser.feed(t)) options.onProgress?.(p);
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (t: string) => {
      if (stderr.length < 64 * 1024) stderr += t;
    });
    child.on('error', (err) => {
      clearTimeout(timer);
      for (const t of timers) clearTimeout(t);
      options.signal?.removeEventListener('abort', onAbort);
      reject(new QemuConvertError(`cannot run qemu-img: ${err.message}`, '', null, null));
    });
    child.on('close', (code, sig) => {
      clearTimeout(timer);
      for (const t of timers) clearTimeout(t);
      options.signal?.removeEventListener('abort', onAbort);
      if (code === 0 && !why) {
        for (const p of parser.finish()) options.onProgress?.(p);
        resolve();
        return;
      }
      if (why === 'aborted') {
        reject(options.signal?.reason ?? new Error('aborted'));
        return;
      }
      const what = why === 'timeout' ? `timed out after ${options.timeoutMs} ms` : sig ? `killed by ${sig}` : `exited with ${code}`;
      reject(new QemuConvertError(`qemu-img convert ${what}: ${stderr.trim().slice(-2000)}`, stderr, code, sig));
    });
  });
}
