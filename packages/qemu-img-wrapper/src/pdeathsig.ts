import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';

let cached: { path: string | undefined; envPath: string | undefined } | undefined;

/**
 * The util-linux `setpriv` binary on `PATH` (absolute path), or undefined when there is none.
 * Looked up once per PATH value.
 */
export function findSetpriv(envPath: string | undefined = process.env['PATH']): string | undefined {
  if (cached && cached.envPath === envPath) return cached.path;
  let found: string | undefined;
  for (const dir of (envPath ?? '/usr/bin:/bin').split(delimiter)) {
    if (!dir) continue;
    const p = join(dir, 'setpriv');
    try {
      accessSync(p, constants.X_OK);
      found = p;
      break;
    } catch {
      // not here
    }
  }
  cached = { path: found, envPath };
  return found;
}

/**
 * `argv` prefixed so that the command is SIGKILLed when the calling process dies:
 * `setpriv --pdeathsig KILL -- <argv>` (util-linux sets `PR_SET_PDEATHSIG`, then execs the command,
 * which keeps it across exec: same pid, same exit status). A process killed with SIGKILL runs no
 * handler, so nothing else stops the long-running children it started (qemu-img convert goes on
 * writing files and RBD images that crash recovery has already removed). `setpriv` is the binary
 * (default: `findSetpriv()`); `false` (or none installed): `argv` unchanged.
 *
 * Linux delivers the signal when the *thread* that spawned the child exits; Node spawns from the
 * main (event loop) thread, which lives as long as the process.
 */
export function withParentDeathSignal(
  argv: readonly string[],
  setpriv: string | false = findSetpriv() ?? false,
): string[] {
  return setpriv ? [setpriv, '--pdeathsig', 'KILL', '--', ...argv] : [...argv];
}
