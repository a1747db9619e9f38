// Shared helpers of the Ephemera benchmarks (bench/main.mjs): processes, statistics, /proc
// accounting, machine facts, tables.
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus, totalmem, release } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const MiB = 1024 ** 2;
export const GiB = 1024 ** 3;
/** Debian's python3 (has python3-rbd); a pyenv python3 earlier on PATH does not. */
export const PY = '/usr/bin/python3';

/** The dev stack's stack.json (tools/stack up writes it). */
export function loadStack() {
  const dir = resolve(process.env.EPHEMERA_STACK_DIR || join(repo, '.stack'));
  const file = join(dir, 'stack.json');
  try {
    return JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new Error(`the dev stack is not up (${file}: ${err.message}); run \`bash tools/stack up\``);
  }
}

/**
 * Runs a program (argv, never a shell) and resolves with stdout, stderr, its wall time and pid.
 * Rejects with stderr in the message.
 */
export function run(cmd, argv, { timeoutMs = 3_600_000, env } = {}) {
  return new Promise((resolvePromise, reject) => {
    const t0 = performance.now();
    const child = execFile(
      cmd,
      argv,
      { timeout: timeoutMs, maxBuffer: 64 << 20, ...(env ? { env } : {}) },
      (err, stdout, stderr) => {
        const ms = performance.now() - t0;
        if (err) {
          reject(
            new Error(
              `${cmd} ${argv.join(' ')}: ${err.killed ? `timed out after ${timeoutMs} ms` : `exit ${err.code ?? err.signal}`}: ${String(stderr).trim()}`,
            ),
          );
        } else resolvePromise({ stdout: String(stdout), stderr: String(stderr), ms, pid: child.pid });
      },
    );
  });
}

/** Wall time of `fn` in ms, with its value. */
export async function timed(fn) {
  const t0 = performance.now();
  const value = await fn();
  return { ms: performance.now() - t0, value };
}

// ---------------------------------------------------------------- statistics

/** Nearest-rank percentile. */
export function pct(values, p) {
  if (!values.length) return null;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}
export const median = (v) => pct(v, 50);
export function summary(values) {
  if (!values.length) return null;
  return {
    n: values.length,
    median: median(values),
    p99: pct(values, 99),
    min: Math.min(...values),
    max: Math.max(...values),
    runs: values.map((v) => round(v, 2)),
  };
}
export const round = (x, d = 2) => (x === null || x === undefined ? x : Math.round(x * 10 ** d) / 10 ** d);

// ---------------------------------------------------------------- /proc accounting

/**
 * I/O accounting of a process (`/proc/<pid>/io`). For `self` it includes the children this
 * process has reaped (the kernel adds a reaped child's counters to its parent's), so the delta
 * around an operation covers the whole process tree that did it.
 */
export function procIo(pid = 'self') {
  const out = {};
  for (const line of readFileSync(`/proc/${pid}/io`, 'utf8').trim().split('\n')) {
    const [k, v] = line.split(':');
    out[k.trim()] = Number(v);
  }
  return out;
}
export function ioDelta(before, after) {
  const d = {};
  for (const k of Object.keys(after)) d[k] = after[k] - (before[k] ?? 0);
  return d;
}

/** Sectors written to the block device that holds `path` (whole device, every process). */
export function deviceOf(path = repo) {
  // /proc/self/mountinfo: field 3 is major:minor of the mounted device.
  const lines = readFileSync('/proc/self/mountinfo', 'utf8').trim().split('\n');
  let best = null;
  for (const l of lines) {
    const f = l.split(' ');
    const mnt = f[4];
    if (
      (path === mnt || path.startsWith(mnt.endsWith('/') ? mnt : mnt + '/')) &&
      (!best || mnt.length > best.mnt.length)
    )
      best = { mnt, majmin: f[2] };
  }
  if (!best) return null;
  const [maj, min] = best.majmin.split(':').map(Number);
  for (const l of readFileSync('/proc/diskstats', 'utf8').trim().split('\n')) {
    const f = l.trim().split(/\s+/);
    if (Number(f[0]) === maj && Number(f[1]) === min) return f[2];
  }
  return null;
}
/** Bytes written so far to block device `name` (from /proc/diskstats). */
export function deviceWrittenBytes(name) {
  if (!name) return null;
  for (const l of readFileSync('/proc/diskstats', 'utf8').trim().split('\n')) {
    const f = l.trim().split(/\s+/);
    if (f[2] === name) return Number(f[9]) * 512;
  }
  return null;
}
/**
 * Peak and current RSS of a process in bytes (`VmHWM`, `VmRSS`), and the current RSS split into
 * anonymous memory (`RssAnon`: the process's own) and file-backed pages (`RssFile`: clean pages
 * of the node binary and the shared libraries, shared with every process that maps them).
 */
export function procRss(pid = 'self') {
  const s = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k) => Number((new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(s) ?? [])[1] ?? NaN) * 1024;
  return { hwm: kb('VmHWM'), rss: kb('VmRSS'), anon: kb('RssAnon'), file: kb('RssFile') };
}

/**
 * Everything local-disk related around one operation: the bench process tree's own write
 * accounting, the OSD's (bluestore writes to its file on the same disk), and the device's total.
 */
export function diskProbe(osdPid) {
  const dev = deviceOf(repo);
  const snap = () => ({
    self: procIo('self'),
    osd: osdPid ? safe(() => procIo(osdPid)) : null,
    dev: deviceWrittenBytes(dev),
  });
  const before = snap();
  return {
    device: dev,
    stop() {
      const after = snap();
      const self = ioDelta(before.self, after.self);
      const osd = before.osd && after.osd ? ioDelta(before.osd, after.osd) : null;
      return {
        processTreeWriteBytes: self.write_bytes,
        processTreeCancelledWriteBytes: self.cancelled_write_bytes,
        processTreeWchar: self.wchar,
        osdWriteBytes: osd ? osd.write_bytes : null,
        deviceWriteBytes: before.dev !== null && after.dev !== null ? after.dev - before.dev : null,
      };
    },
  };
}
function safe(fn) {
  try {
    return fn();
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------- machine

async function version(cmd, argv, re = /(\d+\.\d+(?:\.\d+)?)/) {
  try {
    const { stdout, stderr } = await run(cmd, argv, { timeoutMs: 20_000 });
    const m = re.exec(stdout + stderr);
    return m ? m[1] : (stdout || stderr).trim().split('\n')[0];
  } catch (err) {
    return `unknown (${err.message.split('\n')[0].slice(0, 80)})`;
  }
}

/** Facts about the machine and the stack a result depends on. */
export async function machineInfo(stack) {
  const c = cpus();
  const memTotal = totalmem();
  let osRelease = null;
  try {
    osRelease = /PRETTY_NAME="([^"]+)"/.exec(readFileSync('/etc/os-release', 'utf8'))?.[1] ?? null;
  } catch {}
  const ceph = await version('ceph', ['--version'], /ceph version (\S+)/);
  const qemu = await version('qemu-system-x86_64', ['--version'], /version (\S+)/);
  const qemuImg = await version('qemu-img', ['--version'], /version (\S+)/);
  const libvirt = await version(
    'virsh',
    ['--connect', stack.libvirt.uri, 'version', '--daemon'],
    /Running against daemon:\s*(\S+)/,
  );
  const pyrbd = await version(PY, ['-c', 'import rbd, sys; print(".".join(map(str, rbd.RBD().version())))']);
  return {
    cpuModel: c[0]?.model ?? 'unknown',
    cores: c.length,
    memoryBytes: memTotal,
    memoryGiB: round(memTotal / GiB, 1),
    kernel: release(),
    os: osRelease,
    node: process.version,
    ceph,
    librbd: pyrbd,
    qemu,
    qemuImg,
    libvirt,
    accel: stack.libvirt.accel,
    domainType: stack.libvirt.domainType,
    objectStore: stack.ceph.objectStore,
    localDevice: deviceOf(repo),
  };
}

// ---------------------------------------------------------------- output

export const fmtMs = (ms) =>
  ms === null || ms === undefined || Number.isNaN(ms)
    ? '-'
    : ms >= 10_000
      ? `${(ms / 1000).toFixed(1)} s`
      : ms >= 1000
        ? `${(ms / 1000).toFixed(2)} s`
        : `${ms.toFixed(ms < 10 ? 2 : 1)} ms`;
export const fmtBytes = (b) =>
  b === null || b === undefined
    ? '-'
    : b >= GiB
      ? `${(b / GiB).toFixed(2)} GiB`
      : b >= MiB
        ? `${(b / MiB).toFixed(1)} MiB`
        : b >= 1024
          ? `${(b / 1024).toFixed(1)} KiB`
          : `${b} B`;
export const fmtRatio = (r) =>
  r === null || r === undefined || !Number.isFinite(r)
    ? '-'
    : r >= 100
      ? `${r.toFixed(0)}x`
      : r >= 10
        ? `${r.toFixed(1)}x`
        : `${r.toFixed(2)}x`;

/** Prints a table: `rows` are arrays of cells; the first row is the header. */
export function table(title, rows) {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => String(r[i] ?? '').length)));
  const line = (r) =>
    r.map((c, i) => (i === 0 ? String(c ?? '').padEnd(widths[i]) : String(c ?? '').padStart(widths[i]))).join('  ');
  const out = [`\n${title}`, line(rows[0]), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.slice(1).map(line)];
  console.log(out.join('\n'));
  return out.join('\n');
}

/** Progress to stderr. */
export function log(msg) {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}
