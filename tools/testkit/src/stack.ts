/**
 * Reach the dev stack that `tools/stack up` runs (Ceph, Glance, libvirtd on loopback).
 *
 * - {@link loadStack}: the stack's `stack.json` ({@link StackInfo}).
 * - {@link cephCli}: run `rbd` / `ceph` / `rados` as one of the stack's cephx users.
 * - {@link stackCommand}: run a `tools/stack` subcommand (e.g. `['stop', 'osd']` for fault injection).
 * - {@link startPrivateLibvirtd}: an extra libvirtd of your own (restart it without disturbing others).
 */
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { StackInfo } from './stack-info.js';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const stackScript = join(repo, 'tools', 'stack');

/** The stack's state directory: `$EPHEMERA_STACK_DIR`, else `<repo>/.stack`. */
export function stackDir(): string {
  return resolve(process.env.EPHEMERA_STACK_DIR || join(repo, '.stack'));
}

/**
 * Reads `<dir>/stack.json` (default: the shared stack, {@link stackDir}()). Throws a clear error when the stack is not up (the integration
 * and e2e projects' global setup runs `tools/stack up` first, so inside vitest it is there).
 */
export function loadStack(dir: string = stackDir()): StackInfo {
  const file = join(resolve(dir), 'stack.json');
  if (!existsSync(file)) {
    throw new Error(
      `The dev stack is not up: ${file} does not exist. Run \`bash tools/stack up\` (vitest's integration/e2e global setup does it).`,
    );
  }
  return JSON.parse(readFileSync(file, 'utf8')) as StackInfo;
}

/** The stack's cephx users, by id. */
export type StackCephUser = keyof StackInfo['ceph']['users'];

/** Options of {@link cephCli} and {@link stackCommand}. */
export interface StackExecOptions {
  /** Kill the command after this many ms (default 60 s for Ceph tools, 10 min for `tools/stack`). */
  timeoutMs?: number;
  /** Use this stack instead of {@link loadStack}(). */
  stack?: StackInfo;
}

function exec(cmd: string, args: string[], timeoutMs: number, env?: NodeJS.ProcessEnv): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 64 << 20, env: env ?? process.env }, (err, stdout, stderr) => {
      if (err) {
        const why = err.killed ? `timed out after ${timeoutMs} ms` : `exit ${err.code ?? err.signal}`;
        const e = new Error(`${cmd} ${args.join(' ')}: ${why}: ${String(stderr).trim() || err.message}`) as Error & {
          stderr: string;
          stdout: string;
          exitCode: number | string | null | undefined;
        };
        e.stderr = String(stderr);
        e.stdout = String(stdout);
        e.exitCode = err.code;
        reject(e);
      } else resolvePromise(String(stdout));
    });
  });
}

/**
 * Runs a Ceph CLI tool as one of the stack's users, e.g.
 * `await cephCli('ephemera', ['rbd', 'info', 'vms/disk0'])` or `cephCli('admin', ['ceph', 'df'])`.
 * The first element is the program (`rbd`, `ceph` or `rados`); `--conf <user conf> --id <id>` is
 * added (the conf names the user's keyring, so no key is ever in argv). Resolves with stdout;
 * rejects with an Error carrying `stderr`, `stdout` and `exitCode`.
 */
export function cephCli(
  user: StackCephUser,
  args: [tool: 'rbd' | 'ceph' | 'rados', ...rest: string[]],
  options: StackExecOptions = {},
): Promise<string> {
  const [tool, ...rest] = args;
  if (!['rbd', 'ceph', 'rados'].includes(tool)) throw new Error(`cephCli: unsupported tool ${tool}`);
  const u = (options.stack ?? loadStack()).ceph.users[user];
  return exec(tool, ['--conf', u.confPath, '--id', u.id, ...rest], options.timeoutMs ?? 60_000);
}

/** Options of {@link stackCommand}. */
export interface StackCommandOptions {
  /** Kill the command after this many ms (default 10 min). */
  timeoutMs?: number;
  /** State directory of the stack to act on (default {@link stackDir}(), the shared stack). */
  dir?: string;
}

/**
 * Runs `bash tools/stack <args>` and resolves with its stdout, e.g. `stackCommand(['stop', 'osd'])`
 * then `stackCommand(['start', 'osd'])` for fault injection. Rejects with stderr (which names the
 * failing service and the tail of its log) on a non-zero exit.
 */
export function stackCommand(args: string[], options: StackCommandOptions = {}): Promise<string> {
  return exec('bash', [stackScript, ...args], options.timeoutMs ?? 600_000, {
    ...process.env,
    EPHEMERA_STACK_DIR: resolve(options.dir ?? stackDir()),
  });
}

/** A libvirtd of your own, started by {@link startPrivateLibvirtd}. */
export interface PrivateLibvirtd {
  /** Connection URI (`qemu+unix:///system?socket=<dir>/sock/libvirt-sock`). */
  readonly uri: string;
  /** Pid of the running libvirtd (changes on restart). */
  readonly pid: number;
  /** Stops libvirtd (running domains keep running, as with a real libvirtd restart) and starts it again. */
  restart(): Promise<void>;
  /** Destroys its domains, stops libvirtd and any QEMU it started. */
  stop(): Promise<void>;
}

/**
 * Starts an extra libvirtd (same recipe as the stack's: QEMU driver as root, own mount namespace,
 * config/state/socket under `dir`), with the stack's ceph secret (same UUID) defined when a stack is up.
 * Use it for tests that must restart or break a libvirtd; always `stop()` it (e.g. in `afterAll`).
 */
export async function startPrivateLibvirtd(dir: string): Promise<PrivateLibvirtd> {
  const root = resolve(dir);
  const start = async (): Promise<{ uri: string; pid: number }> =>
    JSON.parse(
      (await stackCommand(['private-libvirtd', 'start', root], { timeoutMs: 120_000 })).trim().split('\n').pop()!,
    );
  let current = await start();
  const stop = async (): Promise<void> => {
    await stackCommand(['private-libvirtd', 'stop', root], { timeoutMs: 120_000 });
  };
  return {
    get uri() {
      return current.uri;
    },
    get pid() {
      return current.pid;
    },
    async restart() {
      current = JSON.parse(
        (await stackCommand(['private-libvirtd', 'restart', root], { timeoutMs: 120_000 })).trim().split('\n').pop()!,
      );
    },
    stop,
  };
}

/**
 * Removes the clone v2 image `clonePool/clone` the way a process killed between librbd's two
 * removal steps leaves things: the clone is gone and detached from its parent, but the parent's
 * `trash` snapshot (its removed parent snapshot) is not purged although it has no child left.
 * Done with the real `rbd rm` as a throwaway cephx user that may write `clonePool` and only read
 * and call rbd class methods in `parentPool`: librbd then detaches the child (a class method)
 * but cannot open the parent read-write to purge the snapshot, an error it ignores. The user's
 * key stays in a 0600 temporary keyring file; the user is deleted afterwards.
 */
export async function removeCloneKeepingTrashSnapshot(
  clonePool: string,
  clone: string,
  parentPool: string,
  options: { stack?: StackInfo } = {},
): Promise<void> {
  const s = options.stack ?? loadStack();
  const entity = `client.eph-keep-trash-${process.pid}-${Date.now()}`;
  const dir = await mkdtemp(join(tmpdir(), 'eph-keep-trash-'));
  const keyring = join(dir, 'keyring');
  try {
    await cephCli(
      'admin',
      [
        'ceph',
        'auth',
        'get-or-create',
        entity,
        'mon',
        'profile rbd',
        'osd',
        `profile rbd pool=${clonePool}, allow rx pool=${parentPool}`,
        '-o',
        keyring,
      ],
      { stack: s },
    );
    const conf = s.ceph.users.admin.confPath;
    await exec('rbd', ['--conf', conf, '--name', entity, '--keyring', keyring, 'rm', `${clonePool}/${clone}`], 60_000);
  } finally {
    await cephCli('admin', ['ceph', 'auth', 'del', entity], { stack: s }).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
}
