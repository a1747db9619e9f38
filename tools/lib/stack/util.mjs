// Small helpers shared by the dev stack's modules: constants, errors, running a program,
// files, loopback ports, HTTP health checks. Node built-ins only (the stack runs before `npm ci`).
import { execFile } from 'node:child_process';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { get as httpGet } from 'node:http';
import { createServer } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** tools/lib: where the stack's helper scripts (stack-libvirtd-ns.sh) live. */
export const LIB = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const REPO = resolve(LIB, '../..');
/** Caches shared by every stack on this machine (glance db, libvirt capabilities, accel probe). */
export const CACHE = join(REPO, '.cache', 'stack');
/** Every service listens on loopback only. */
export const HOST = '127.0.0.1';
export const GiB = 1024 ** 3;
export const PATH_ENV = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export const now = () => performance.now();
export const secs = (ms) => `${(ms / 1000).toFixed(1)}s`;

/** An error the CLI prints as its message alone (no stack trace). */
export class StackError extends Error {}

/** Runs a program (argv, never a shell) and resolves with stdout; rejects with stderr in the message. */
export function run(cmd, args, { timeout = 60_000, env } = {}) {
  return new Promise((resolvePromise, reject) => {
    execFile(
      cmd,
      args,
      { timeout, maxBuffer: 64 << 20, env: { ...process.env, PATH: PATH_ENV, ...env } },
      (err, stdout, stderr) => {
        if (err) {
          const why = err.killed ? `timed out after ${timeout} ms` : `exit ${err.code ?? err.signal}`;
          reject(new StackError(`${cmd} ${args.join(' ')}: ${why}: ${String(stderr).trim() || err.message}`));
        } else resolvePromise(String(stdout));
      },
    );
  });
}

export function writeAtomic(file, text, mode = 0o644) {
  const tmp = `${file}.tmp${process.pid}`;
  writeFileSync(tmp, text, { mode });
  renameSync(tmp, file);
}

export function tail(file, lines = 25) {
  try {
    const text = readFileSync(file, 'utf8').trimEnd().split('\n');
    return text.slice(-lines).join('\n');
  } catch {
    return '';
  }
}

export function readJson(file) {
  try {
    return JSON.parse(readFileSync(file, 'utf8'));
  } catch {
    return undefined;
  }
}

/** The first value of `key` anywhere in a nested object (Ceph's JSON moves fields between releases). */
export function findKey(obj, key) {
  if (obj && typeof obj === 'object') {
    if (key in obj) return obj[key];
    for (const v of Object.values(obj)) {
      const r = findKey(v, key);
      if (r !== undefined) return r;
    }
  }
  return undefined;
}

/** Status code of a GET (node:http, not fetch: its timers must keep this process alive). */
export function httpStatus(url, timeoutMs) {
  return new Promise((resolvePromise, reject) => {
    const req = httpGet(url, { timeout: timeoutMs, agent: false }, (res) => {
      res.resume();
      resolvePromise(res.statusCode);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url}: no answer in ${timeoutMs} ms`)));
    req.on('error', reject);
  });
}

/** Is `port` free on loopback right now? */
function portFree(port) {
  return new Promise((r) => {
    const s = createServer();
    s.once('error', () => r(false));
    s.listen({ port, host: HOST, exclusive: true }, () => s.close(() => r(true)));
  });
}

/** Compute hosts a stack can have: each gets MIGRATION_PORTS ports of the block's second half. */
export const MAX_HOSTS = 8;
export const MIGRATION_PORTS = 4;
const BLOCK = 64;

/**
 * Picks a block of 64 free loopback ports below the kernel's ephemeral range (so no outgoing
 * connection can squat them later), at a random offset so two stacks rarely even try the same block.
 * The first 32 are Ceph's and Glance's, the last 32 the compute hosts' migration ports.
 */
export async function pickPorts() {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 20000 + BLOCK * Math.floor(Math.random() * ((32000 - 20000) / BLOCK));
    const all = Array.from({ length: BLOCK }, (_, i) => base + i);
    const free = await Promise.all(all.map(portFree));
    if (free.every(Boolean)) {
      return {
        monV2: base,
        monV1: base + 1,
        glance: base + 2,
        msMin: base + 8,
        msMax: base + 31,
        migration: base + 32,
      };
    }
  }
  throw new StackError(`could not find ${BLOCK} free loopback ports between 20000 and 32000`);
}
