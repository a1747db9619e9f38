// Daemons by pid (no systemd): start one in its own session, find, wait for and stop processes.
// A stack's processes are identified by their command line, which always contains its directory.
import { spawn } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { PATH_ENV, StackError, now, secs, sleep, tail } from './util.mjs';

export function procCmdline(pid) {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
  } catch {
    return undefined;
  }
}

/** The process exists, is not a zombie, and its command line mentions `marker` (a state dir). */
export function pidAlive(pid, marker) {
  if (!pid) return false;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    if (/\) Z /.test(stat)) return false;
  } catch {
    return false;
  }
  const cmd = procCmdline(pid);
  return !!cmd && cmd.some((a) => a.includes(marker));
}

export function rssBytes(pid) {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

export function mountNs(pid) {
  try {
    return readlinkSync(`/proc/${pid}/ns/mnt`);
  } catch {
    return undefined;
  }
}

export function allPids() {
  return readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .map(Number);
}

/** SIGTERM, wait up to `timeoutMs`, then SIGKILL; resolves when all are gone. */
export async function terminate(pids, timeoutMs = 10_000) {
  const alive = (p) => {
    try {
      process.kill(p, 0);
      return !/\) Z /.test(readFileSync(`/proc/${p}/stat`, 'utf8'));
    } catch {
      return false;
    }
  };
  pids = pids.filter(Boolean);
  for (const p of pids) {
    try {
      process.kill(p, 'SIGTERM');
    } catch {
      /* gone */
    }
  }
  const deadline = now() + timeoutMs;
  while (pids.some(alive) && now() < deadline) await sleep(50);
  for (const p of pids.filter(alive)) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  const hard = now() + 5000;
  while (pids.some(alive) && now() < hard) await sleep(50);
}

/**
 * Starts a daemon in its own session (it outlives this script), stdout/stderr appended to
 * `logDir`/<name>.out. Returns a handle whose `exited` is set if it dies while we still watch it.
 */
export function startDaemon(name, cmd, args, logDir) {
  mkdirSync(logDir, { recursive: true });
  const out = openSync(join(logDir, `${name}.out`), 'a');
  const child = spawn(cmd, args, {
    detached: true,
    stdio: ['ignore', out, out],
    cwd: '/',
    env: { ...process.env, PATH: PATH_ENV },
  });
  closeSync(out);
  const handle = { name, pid: child.pid, exited: undefined };
  child.on('exit', (code, signal) => {
    handle.exited = `exited (${code ?? signal})`;
  });
  child.on('error', (e) => {
    handle.exited = `failed to start: ${e.message}`;
  });
  child.unref();
  return handle;
}

/** `svc: why`, then the tail of each of the service's log files that has something in it. */
export function serviceError(svc, why, logFiles = []) {
  const parts = [`${svc}: ${why}`];
  for (const f of logFiles) {
    const t = tail(f);
    if (t) parts.push(`--- last lines of ${f} ---\n${t}`);
  }
  return new StackError(parts.join('\n'));
}

/** Polls `check` until it resolves truthy; fails early if the daemon handle reports an exit. */
export async function waitFor(svc, handle, check, timeoutMs, what, logFiles = []) {
  const deadline = now() + timeoutMs;
  let last;
  for (let delay = 50; ; delay = Math.min(delay * 1.5, 500)) {
    if (handle?.exited) throw serviceError(svc, `${handle.exited} before it was ready (${what})`, logFiles);
    try {
      if (await check()) return;
    } catch (e) {
      last = e;
    }
    if (now() > deadline) {
      throw serviceError(
        svc,
        `not ready after ${secs(timeoutMs)} (${what})${last ? `: ${last.message}` : ''}`,
        logFiles,
      );
    }
    await sleep(delay);
  }
}
