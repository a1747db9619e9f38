#!/usr/bin/env node
// The Ephemera dev stack (run through `tools/stack`, which holds the lock for commands that
// change it). Plain Node ESM with no npm dependencies: it runs before `npm ci`.
//
// One state directory ($EPHEMERA_STACK_DIR, default <repo>/.stack) holds everything:
//   state.json   internal state (ports, fsid, pids, ...)      stack.json  the public contract
//   ceph/        ceph.conf (admin), per-user keyrings + confs, mon/mgr/osd data, run/ (asok)
//   glance/      glance-api.conf, paste ini, policy, sqlite db, staging
//   libvirt/     etc/ run/ lib/ cache/ log/ (bind-mounted over the compiled-in paths inside
//                libvirtd's own mount namespace) and sock/ (the client socket)
//   log/         every daemon's log (<svc>.out is its stdout/stderr)
// Processes are tracked by pid (no systemd) and identified by their command line, which always
// contains the state directory.
import { spawn, execFile } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import {
  closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, readlinkSync, renameSync,
  rmSync, statSync, unlinkSync, writeFileSync,
} from 'node:fs';
import { get as httpGet } from 'node:http';
import { createServer } from 'node:net';
import { release } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const LIB = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(LIB, '../..');
const DIR = resolve(process.env.EPHEMERA_STACK_DIR || join(REPO, '.stack'));
const CACHE = join(REPO, '.cache', 'stack');
const SERVICES = ['mon', 'mgr', 'osd', 'glance', 'libvirtd'];
const HOST = '127.0.0.1';
const GiB = 1024 ** 3;
const PATH_ENV = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

const P = {
  state: join(DIR, 'state.json'),
  stackJson: join(DIR, 'stack.json'),
  log: join(DIR, 'log'),
  ceph: join(DIR, 'ceph'),
  conf: join(DIR, 'ceph', 'ceph.conf'),
  monKeyring: join(DIR, 'ceph', 'mon.keyring'),
  monmap: join(DIR, 'ceph', 'monmap'),
  glance: join(DIR, 'glance'),
  glanceConf: join(DIR, 'glance', 'glance-api.conf'),
  libvirt: join(DIR, 'libvirt'),
};
const userKeyring = (id) => join(P.ceph, `${id}.keyring`);
const userConf = (id) => (id === 'admin' ? P.conf : join(P.ceph, `${id}.conf`));

// ---------------------------------------------------------------------------------------------
// small utilities

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const now = () => performance.now();
const secs = (ms) => `${(ms / 1000).toFixed(1)}s`;

class StackError extends Error {}

/** Runs a program (argv, never a shell) and resolves with stdout; rejects with stderr in the message. */
function run(cmd, args, { timeout = 60_000, env } = {}) {
  return new Promise((resolvePromise, reject) => {
    execFile(cmd, args, { timeout, maxBuffer: 64 << 20, env: { ...process.env, PATH: PATH_ENV, ...env } },
      (err, stdout, stderr) => {
        if (err) {
          const why = err.killed ? `timed out after ${timeout} ms` : `exit ${err.code ?? err.signal}`;
          reject(new StackError(`${cmd} ${args.join(' ')}: ${why}: ${String(stderr).trim() || err.message}`));
        } else resolvePromise(String(stdout));
      });
  });
}

const ceph = (args, timeout = 30_000) => run('ceph', ['--conf', P.conf, '--connect-timeout', '10', ...args], { timeout });
const rbd = (args, timeout = 60_000) => run('rbd', ['--conf', P.conf, ...args], { timeout });

function writeAtomic(file, text, mode = 0o644) {
  const tmp = `${file}.tmp${process.pid}`;
  writeFileSync(tmp, text, { mode });
  renameSync(tmp, file);
}

function tail(file, lines = 25) {
  try {
    const text = readFileSync(file, 'utf8').trimEnd().split('\n');
    return text.slice(-lines).join('\n');
  } catch { return ''; }
}

function readJson(file) {
  try { return JSON.parse(readFileSync(file, 'utf8')); } catch { return undefined; }
}

/** A fresh cephx secret in the keyring format: u16 type (1 = AES), u32 sec, u32 nsec, u16 len, 16 bytes. */
function cephKey() {
  const b = Buffer.alloc(28);
  const t = Date.now();
  b.writeUInt16LE(1, 0);
  b.writeUInt32LE(Math.floor(t / 1000), 2);
  b.writeUInt32LE((t % 1000) * 1e6, 6);
  b.writeUInt16LE(16, 10);
  randomBytes(16).copy(b, 12);
  return b.toString('base64');
}

function keyringEntry(name, key, caps = {}) {
  return `[${name}]\n\tkey = ${key}\n${Object.entries(caps).map(([k, v]) => `\tcaps ${k} = "${v}"\n`).join('')}`;
}

function keyFromKeyring(file) {
  const m = /^\s*key\s*=\s*(\S+)\s*$/m.exec(readFileSync(file, 'utf8'));
  if (!m) throw new StackError(`no key in ${file}`);
  return m[1];
}

/** Is `port` free on loopback right now? */
function portFree(port) {
  return new Promise((r) => {
    const s = createServer();
    s.once('error', () => r(false));
    s.listen({ port, host: HOST, exclusive: true }, () => s.close(() => r(true)));
  });
}

/**
 * Picks a block of 32 free loopback ports below the kernel's ephemeral range (so no outgoing
 * connection can squat them later), at a random offset so two stacks rarely even try the same block.
 */
async function pickPorts() {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 20000 + 32 * Math.floor(Math.random() * ((32000 - 20000) / 32));
    const all = Array.from({ length: 32 }, (_, i) => base + i);
    const free = await Promise.all(all.map(portFree));
    if (free.every(Boolean)) {
      return { monV2: base, monV1: base + 1, glance: base + 2, msMin: base + 8, msMax: base + 31 };
    }
  }
  throw new StackError('could not find 32 free loopback ports between 20000 and 32000');
}

// ---------------------------------------------------------------------------------------------
// processes

function procCmdline(pid) {
  try { return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean); } catch { return undefined; }
}

/** The process exists, is not a zombie, and its command line mentions `marker` (our state dir). */
function pidAlive(pid, marker = DIR) {
  if (!pid) return false;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    if (/\) Z /.test(stat)) return false;
  } catch { return false; }
  const cmd = procCmdline(pid);
  return !!cmd && cmd.some((a) => a.includes(marker));
}

function rssBytes(pid) {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch { return 0; }
}

function mountNs(pid) {
  try { return readlinkSync(`/proc/${pid}/ns/mnt`); } catch { return undefined; }
}

function allPids() {
  return readdirSync('/proc').filter((d) => /^\d+$/.test(d)).map(Number);
}

/** SIGTERM, wait up to `timeoutMs`, then SIGKILL; resolves when all are gone. */
async function terminate(pids, timeoutMs = 10_000) {
  const alive = (p) => { try { process.kill(p, 0); return !/\) Z /.test(readFileSync(`/proc/${p}/stat`, 'utf8')); } catch { return false; } };
  pids = pids.filter(Boolean);
  for (const p of pids) { try { process.kill(p, 'SIGTERM'); } catch { /* gone */ } }
  const deadline = now() + timeoutMs;
  while (pids.some(alive) && now() < deadline) await sleep(50);
  for (const p of pids.filter(alive)) { try { process.kill(p, 'SIGKILL'); } catch { /* gone */ } }
  const hard = now() + 5000;
  while (pids.some(alive) && now() < hard) await sleep(50);
}

/**
 * Starts a daemon in its own session (it outlives this script), stdout/stderr appended to
 * log/<name>.out. Returns a handle whose `exited` is set if it dies while we still watch it.
 */
function startDaemon(name, cmd, args, logDir = P.log) {
  mkdirSync(logDir, { recursive: true });
  const out = openSync(join(logDir, `${name}.out`), 'a');
  const child = spawn(cmd, args, {
    detached: true, stdio: ['ignore', out, out], cwd: '/', env: { ...process.env, PATH: PATH_ENV },
  });
  closeSync(out);
  const handle = { name, pid: child.pid, exited: undefined };
  child.on('exit', (code, signal) => { handle.exited = `exited (${code ?? signal})`; });
  child.on('error', (e) => { handle.exited = `failed to start: ${e.message}`; });
  child.unref();
  return handle;
}

// ---------------------------------------------------------------------------------------------
// state

function loadState() { return readJson(P.state); }
function saveState(st) { writeAtomic(P.state, `${JSON.stringify(st, null, 2)}\n`); }

/** Log files shown (tail) when a service fails. */
function serviceLogs(svc) {
  const ceph = { mon: 'mon.a', mgr: 'mgr.x', osd: 'osd.0' }[svc];
  if (ceph) return [join(P.log, `${ceph}.log`), join(P.log, `${svc}.out`)];
  if (svc === 'glance') return [join(P.log, 'glance.out'), join(P.log, 'glance-api.log')];
  if (svc === 'libvirtd') return [join(P.log, 'libvirtd.log'), join(P.log, 'libvirtd.out')];
  return [join(P.log, `${svc}.out`)];
}

function serviceError(svc, why) {
  const parts = [`${svc}: ${why}`];
  for (const f of serviceLogs(svc)) {
    const t = tail(f);
    if (t) parts.push(`--- last lines of ${f} ---\n${t}`);
  }
  return new StackError(parts.join('\n'));
}

/** Polls `check` until it resolves truthy; fails early if the daemon handle reports an exit. */
async function waitFor(svc, handle, check, timeoutMs, what) {
  const deadline = now() + timeoutMs;
  let last;
  for (let delay = 50; ; delay = Math.min(delay * 1.5, 500)) {
    if (handle?.exited) throw serviceError(svc, `${handle.exited} before it was ready (${what})`);
    try {
      if (await check()) return;
    } catch (e) { last = e; }
    if (now() > deadline) {
      throw serviceError(svc, `not ready after ${secs(timeoutMs)} (${what})${last ? `: ${last.message}` : ''}`);
    }
    await sleep(delay);
  }
}

// ---------------------------------------------------------------------------------------------
// Ceph

function cephConfText(st) {
  const { ports } = st;
  const osd = st.objectStore === 'memstore'
    ? [`osd_objectstore = memstore`, `memstore_device_bytes = ${14 * GiB}`]
    : [
      `osd_objectstore = bluestore`,
      `bluestore_block_path = ${join(P.ceph, 'osd', 'block')}`,
      `bluestore_block_create = true`,
      `bluestore_block_size = ${64 * GiB}`,
      `bluestore_block_db_create = false`,
      `bluestore_block_wal_create = false`,
      `bluestore_fsck_on_mkfs = false`,
      `bluestore_fsck_on_mount = false`,
    ];
  return `# Generated by tools/stack: the admin view of the stack's Ceph cluster.
[global]
fsid = ${st.fsid}
mon_host = ${st.monHost}
public_addr = ${HOST}
cluster_addr = ${HOST}
public_network = 127.0.0.0/8
ms_bind_port_min = ${ports.msMin}
ms_bind_port_max = ${ports.msMax}
auth_cluster_required = cephx
auth_service_required = cephx
auth_client_required = cephx
auth_allow_insecure_global_id_reclaim = false
mon_warn_on_insecure_global_id_reclaim_allowed = false
run_dir = ${join(P.ceph, 'run')}
admin_socket = ${join(P.ceph, 'run', '$name.asok')}
log_file = ${join(P.log, '$name.log')}
pid_file = ${join(P.ceph, 'run', '$name.pid')}
crash_dir = ${join(P.ceph, 'crash')}
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
osd_crush_chooseleaf_type = 0
mon_allow_pool_size_one = true
mon_allow_pool_delete = true
mon_warn_on_pool_no_redundancy = false
mon_max_pg_per_osd = 1000
paxos_propose_interval = 0.01
paxos_min_wait = 0.001
rbd_default_features = 61

[mon]
mon_data = ${join(P.ceph, 'mon', '$cluster-$id')}
mon_initial_members = a
# only at mkfs: leave out the mgr modules enabled by default (restful, nfs) that we do not use
mgr_initial_modules = iostat
# The mon refuses to start (exit 28, ENOSPC) once the filesystem holding its data has <= 5% free.
# This throwaway stack shares the host disk with builds, caches and the OSD's sparse file, so only
# a nearly full disk should stop it.
mon_data_avail_crit = 1
mon_data_avail_warn = 2

[mgr]
mgr_data = ${join(P.ceph, 'mgr', '$cluster-$id')}
keyring = ${join(P.ceph, 'mgr.keyring')}

[osd]
osd_data = ${join(P.ceph, 'osd', '$cluster-$id')}
keyring = ${join(P.ceph, 'osd.keyring')}
osd_memory_target = ${1 * GiB}
${osd.join('\n')}

[client]
keyring = ${userKeyring('admin')}
admin_socket =
log_file =
`;
}

/** The small ceph.conf a restricted user gets: how to reach the mons, and its own keyring. */
function userConfText(st, id) {
  return `# Generated by tools/stack: client.${id} of the stack's Ceph cluster.
[global]
fsid = ${st.fsid}
mon_host = ${st.monHost}
auth_cluster_required = cephx
auth_service_required = cephx
auth_client_required = cephx
rbd_default_features = 61

[client]
keyring = ${userKeyring(id)}
admin_socket =
log_file =
`;
}

const CEPH_USERS = {
  admin: { mon: 'allow *', osd: 'allow *', mgr: 'allow *', mds: 'allow *' },
  glance: { mon: 'profile rbd', osd: 'profile rbd pool=images', mgr: 'profile rbd pool=images' },
  ephemera: { mon: 'profile rbd', osd: 'profile rbd pool=vms, profile rbd-read-only pool=images', mgr: 'profile rbd pool=vms' },
};

/** Writes keys, keyrings and confs; every cephx entity goes into the mon keyring so mkfs imports it. */
function writeCephConfig(st) {
  for (const d of ['mon', 'mgr/ceph-x', 'osd/ceph-0', 'run', 'crash']) mkdirSync(join(P.ceph, d), { recursive: true });
  const entries = [keyringEntry('mon.', cephKey(), { mon: 'allow *' })];
  const mgrKey = cephKey();
  const osdKey = cephKey();
  entries.push(keyringEntry('mgr.x', mgrKey, { mon: 'allow profile mgr', osd: 'allow *', mds: 'allow *' }));
  entries.push(keyringEntry('osd.0', osdKey, { mon: 'allow profile osd', mgr: 'allow profile osd', osd: 'allow *' }));
  writeFileSync(join(P.ceph, 'mgr.keyring'), keyringEntry('mgr.x', mgrKey), { mode: 0o600 });
  writeFileSync(join(P.ceph, 'osd.keyring'), keyringEntry('osd.0', osdKey), { mode: 0o600 });
  for (const [id, caps] of Object.entries(CEPH_USERS)) {
    const key = cephKey();
    entries.push(keyringEntry(`client.${id}`, key, caps));
    writeFileSync(userKeyring(id), keyringEntry(`client.${id}`, key), { mode: 0o600 });
  }
  writeFileSync(P.monKeyring, entries.join(''), { mode: 0o600 });
  writeCephConfs(st);
}

/** ceph.conf and the users' confs: a pure function of the state, rewritten before every Ceph daemon start. */
function writeCephConfs(st) {
  writeAtomic(P.conf, cephConfText(st));
  for (const id of Object.keys(CEPH_USERS)) if (id !== 'admin') writeAtomic(userConf(id), userConfText(st, id));
}

async function cephMkfs(st) {
  await run('monmaptool', ['--create', '--fsid', st.fsid, '--addv', 'a', st.monHost, P.monmap]);
  await run('ceph-mon', ['--mkfs', '-c', P.conf, '-i', 'a', '--monmap', P.monmap, '--keyring', P.monKeyring]);
}

async function osdMkfs(st) {
  await run('ceph-osd', ['-c', P.conf, '-i', '0', '--mkfs', '--osd-uuid', st.osdUuid], { timeout: 120_000 });
}

/** Status code of a GET (node:http, not fetch: its timers must keep this process alive). */
function httpStatus(url, timeoutMs) {
  return new Promise((resolvePromise, reject) => {
    const req = httpGet(url, { timeout: timeoutMs, agent: false }, (res) => { res.resume(); resolvePromise(res.statusCode); });
    req.on('timeout', () => req.destroy(new Error(`GET ${url}: no answer in ${timeoutMs} ms`)));
    req.on('error', reject);
  });
}

const cephJson = async (args, timeout) => JSON.parse(await ceph([...args, '-f', 'json'], timeout));

function findKey(obj, key) {
  if (obj && typeof obj === 'object') {
    if (key in obj) return obj[key];
    for (const v of Object.values(obj)) {
      const r = findKey(v, key);
      if (r !== undefined) return r;
    }
  }
  return undefined;
}

const READY = {
  mon: async () => (await cephJson(['quorum_status'], 8000)).quorum_names?.includes('a'),
  mgr: async () => (await cephJson(['mgr', 'stat'], 8000)).available === true,
  osd: async () => findKey(await cephJson(['osd', 'stat'], 8000), 'num_up_osds') >= 1,
  glance: (st) => httpStatus(`http://${HOST}:${st.ports.glance}/healthcheck`, 3000).then((code) => code === 200),
  libvirtd: async (st) => { await run('virsh', ['-c', st.libvirtUri, 'version'], { timeout: 8000 }); return true; },
};
const READY_TIMEOUT = { mon: 60_000, mgr: 90_000, osd: 120_000, glance: 90_000, libvirtd: 60_000 };

// ---------------------------------------------------------------------------------------------
// Glance

function writeGlanceConfig(st) {
  const g = P.glance;
  for (const d of ['staging', 'lock']) mkdirSync(join(g, d), { recursive: true });
  writeFileSync(P.glanceConf, `# Generated by tools/stack: keystone-less glance-api, rbd store as client.glance.
[DEFAULT]
bind_host = ${HOST}
bind_port = ${st.ports.glance}
workers = 0
show_image_direct_url = True
show_multiple_locations = True
node_staging_uri = file://${join(g, 'staging')}
log_file = ${join(P.log, 'glance-api.log')}
use_stderr = False

[database]
connection = sqlite:///${join(g, 'glance.sqlite')}

[glance_store]
stores = rbd,http
default_store = rbd
rbd_store_pool = images
rbd_store_user = glance
rbd_store_ceph_conf = ${userConf('glance')}
rbd_store_chunk_size = 8
rados_connect_timeout = 10

[import_filtering_opts]
# Loopback http locations (tests serve images from 127.0.0.1 on random ports).
# (oslo "bounds" lists: the brackets are required; an empty port list allows every port)
allowed_hosts = [127.0.0.1,localhost]
allowed_ports = []

[oslo_concurrency]
lock_path = ${join(g, 'lock')}

[paste_deploy]
config_file = ${join(g, 'glance-api-paste.ini')}

[oslo_policy]
policy_file = ${join(g, 'policy.yaml')}
`);
  writeFileSync(join(g, 'glance-api-paste.ini'), `[pipeline:glance-api]
pipeline = healthcheck versionnegotiation unauthenticated-context rootapp

[composite:rootapp]
paste.composite_factory = glance.api:root_app_factory
/: apiversions
/v2: apiv2app

[app:apiversions]
paste.app_factory = glance.api.versions:create_resource

[app:apiv2app]
paste.app_factory = glance.api.v2.router:API.factory

[filter:healthcheck]
paste.filter_factory = oslo_middleware:Healthcheck.factory
backends = disable_by_file
disable_by_file_path = ${join(g, 'healthcheck_disable')}

[filter:versionnegotiation]
paste.filter_factory = glance.api.middleware.version_negotiation:VersionNegotiationFilter.factory

[filter:unauthenticated-context]
paste.filter_factory = glance.api.middleware.context:UnauthenticatedContextMiddleware.factory
`);
  writeFileSync(join(g, 'policy.yaml'), '"publicize_image": ""\n');
}

/** `glance-manage db_sync`, or a copy of a db it produced before (the schema only depends on the package version). */
async function glanceDbSync() {
  const db = join(P.glance, 'glance.sqlite');
  let version = 'unknown';
  try { version = (await run('dpkg-query', ['-W', '-f=${Version}', 'python3-glance'])).trim(); } catch { /* no cache */ }
  const cached = join(CACHE, `glance-${version.replace(/[^\w.+-]/g, '_')}.sqlite`);
  if (version !== 'unknown' && existsSync(cached)) {
    writeFileSync(db, readFileSync(cached));
    return 'cached';
  }
  await run('glance-manage', ['--config-file', P.glanceConf, 'db_sync'], { timeout: 180_000 });
  if (version !== 'unknown') {
    mkdirSync(CACHE, { recursive: true });
    writeAtomic(cached, readFileSync(db));
  }
  return 'db_sync';
}

// ---------------------------------------------------------------------------------------------
// libvirtd (QEMU driver, privileged, inside its own mount namespace)

const libvirtUri = (root) => `qemu+unix:///system?socket=${join(root, 'sock', 'libvirt-sock')}`;

async function ensureLibvirtQemuUser() {
  try { await run('getent', ['passwd', 'libvirt-qemu']); return; } catch { /* create it */ }
  try { await run('getent', ['group', 'libvirt-qemu']); } catch { await run('groupadd', ['-r', 'libvirt-qemu']); }
  await run('useradd', ['-r', '-g', 'libvirt-qemu', '-d', '/var/lib/libvirt', '-s', '/usr/sbin/nologin', 'libvirt-qemu']);
}

/** Config for one libvirtd instance rooted at `root` (the stack's, or a test's private one). */
function writeLibvirtConfig(root, logFile = join(root, 'libvirtd.log')) {
  for (const d of ['etc', 'run', 'lib', 'cache', 'log', 'sock']) mkdirSync(join(root, d), { recursive: true });
  const sock = join(root, 'sock', 'libvirt-sock');
  if (Buffer.byteLength(sock) > 107) throw new StackError(`libvirt socket path too long for a unix socket (${sock}): use a shorter EPHEMERA_STACK_DIR`);
  writeFileSync(join(root, 'etc', 'libvirtd.conf'), `# Generated by tools/stack.
unix_sock_dir = "${join(root, 'sock')}"
unix_sock_group = "root"
unix_sock_ro_perms = "0770"
unix_sock_rw_perms = "0770"
unix_sock_admin_perms = "0700"
auth_unix_ro = "none"
auth_unix_rw = "none"
log_outputs = "3:file:${logFile}"
`);
  writeFileSync(join(root, 'etc', 'qemu.conf'), `# Generated by tools/stack: QEMU as root, no cgroups, no per-domain namespaces, no virtlogd.
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
swtpm_user = "root"
swtpm_group = "root"
stdio_handler = "file"
`);
}

// libvirtd probes QEMU's capabilities at start (~8 s here, KVM start-up is slow); it keeps the
// result in /var/cache/libvirt/qemu/capabilities and re-probes by itself when QEMU, libvirt or the
// kernel change. Every instance has its own cache dir, so seed it from a shared copy.
const CAPS_CACHE = join(CACHE, 'libvirt-qemu-capabilities');
const capsDir = (root) => join(root, 'cache', 'qemu', 'capabilities');

function seedLibvirtCaps(root) {
  if (!existsSync(CAPS_CACHE) || existsSync(capsDir(root))) return;
  mkdirSync(capsDir(root), { recursive: true });
  for (const f of readdirSync(CAPS_CACHE)) writeFileSync(join(capsDir(root), f), readFileSync(join(CAPS_CACHE, f)));
}

function saveLibvirtCaps(root) {
  try {
    const files = readdirSync(capsDir(root)).filter((f) => f.endsWith('.xml'));
    if (!files.length) return;
    mkdirSync(CAPS_CACHE, { recursive: true });
    for (const f of files) writeAtomic(join(CAPS_CACHE, f), readFileSync(join(capsDir(root), f)));
  } catch { /* nothing to save */ }
}

function startLibvirtdIn(root, name, logDir = P.log) {
  seedLibvirtCaps(root);
  return startDaemon(name, 'unshare', ['--mount', '--propagation', 'private', '--', join(LIB, 'stack-libvirtd-ns.sh'), root], logDir);
}

/** Defines the persistent, private ceph secret for client.ephemera; the key never touches argv. */
async function defineCephSecret(uri, uuid, tmpDir = P.libvirt) {
  const xml = join(tmpDir, `secret-${process.pid}.xml`);
  const value = join(tmpDir, `secret-${process.pid}.value`);
  writeFileSync(xml, `<secret ephemeral='no' private='yes'><uuid>${uuid}</uuid><usage type='ceph'><name>client.ephemera secret</name></usage></secret>\n`);
  try {
    await run('virsh', ['-c', uri, 'secret-define', xml]);
    // The value is the base64 key text exactly as `ceph auth get-key` prints it (virsh decodes it).
    writeFileSync(value, keyFromKeyring(userKeyring('ephemera')), { mode: 0o600 });
    await run('virsh', ['-c', uri, 'secret-set-value', '--secret', uuid, '--file', value]);
  } finally {
    rmSync(xml, { force: true });
    rmSync(value, { force: true });
  }
}

/**
 * Pids of every process living in one of `namespaces` (libvirtd and the QEMUs it started) that
 * really belong to the libvirtd rooted at `root`. The kernel reuses a freed namespace's inode number
 * at once, so a recorded namespace of a libvirtd that has since exited can be another stack's now:
 * a process counts only if its /run/libvirt is `root`/run (same device and inode, seen through
 * /proc/<pid>/root, i.e. inside its own mount namespace).
 */
function pidsInNamespaces(namespaces, root) {
  if (!namespaces?.length) return [];
  const set = new Set(namespaces);
  let want;
  try { const s = statSync(join(root, 'run')); want = `${s.dev}:${s.ino}`; } catch { return []; }
  const verdict = new Map();
  const ours = (ns, pid) => {
    if (!verdict.has(ns)) {
      let ok = false;
      try { const s = statSync(`/proc/${pid}/root/run/libvirt`); ok = `${s.dev}:${s.ino}` === want; } catch { /* gone */ }
      // A process that exited between the two reads says nothing about its namespace.
      if (ok || mountNs(pid) === ns) verdict.set(ns, ok);
      return ok;
    }
    return verdict.get(ns);
  };
  return allPids().filter((p) => {
    if (p === process.pid) return false;
    const ns = mountNs(p);
    return !!ns && set.has(ns) && ours(ns, p);
  });
}

async function destroyDomains(uri) {
  let names = [];
  try { names = (await run('virsh', ['-c', uri, 'list', '--name'], { timeout: 10_000 })).split('\n').map((s) => s.trim()).filter(Boolean); } catch { return; }
  await Promise.all(names.map((n) => run('virsh', ['-c', uri, 'destroy', n], { timeout: 20_000 }).catch(() => {})));
}

// ---------------------------------------------------------------------------------------------
// KVM or TCG: KVM only if /dev/kvm really runs a guest (cached per kernel + qemu binary)

async function probeAccel() {
  const forced = process.env.EPHEMERA_STACK_ACCEL;
  if (forced === 'kvm' || forced === 'tcg') return { accel: forced, how: 'EPHEMERA_STACK_ACCEL' };
  const qemu = '/usr/bin/qemu-system-x86_64';
  const key = `${release()}|${statSync(qemu).mtimeMs}|${existsSync('/dev/kvm')}`;
  const cacheFile = join(CACHE, 'accel.json');
  const cached = readJson(cacheFile);
  if (cached?.key === key) return { accel: cached.accel, how: 'cached probe' };
  let accel = 'tcg';
  if (existsSync('/dev/kvm')) {
    // Boot sector: mov al,1; out 0xf4,al (isa-debug-exit: qemu exits with (1<<1)|1 = 3); hlt.
    const img = join(DIR, `kvm-probe-${process.pid}.img`);
    const bs = Buffer.alloc(512);
    Buffer.from([0xb0, 0x01, 0xe6, 0xf4, 0xf4, 0xeb, 0xfd]).copy(bs);
    bs[510] = 0x55; bs[511] = 0xaa;
    writeFileSync(img, bs);
    try {
      await run(qemu, ['-accel', 'kvm', '-machine', 'pc', '-m', '16', '-nodefaults', '-display', 'none', '-no-reboot',
        '-drive', `file=${img},format=raw,if=ide`, '-device', 'isa-debug-exit,iobase=0xf4,iosize=0x04'], { timeout: 30_000 });
    } catch (e) {
      if (/exit 3:/.test(e.message)) accel = 'kvm';
    } finally { rmSync(img, { force: true }); }
  }
  mkdirSync(CACHE, { recursive: true });
  writeAtomic(cacheFile, `${JSON.stringify({ key, accel, probedAt: new Date().toISOString() })}\n`);
  return { accel, how: 'probe' };
}

// ---------------------------------------------------------------------------------------------
// services: start one (on an already bootstrapped state dir) and wait until it answers

async function startService(st, svc) {
  // Configs are regenerated from the state, so a fixed generator reaches a running stack on restart.
  if (['mon', 'mgr', 'osd'].includes(svc)) writeCephConfs(st);
  if (svc === 'glance') writeGlanceConfig(st);
  if (svc === 'libvirtd') writeLibvirtConfig(P.libvirt, join(P.log, 'libvirtd.log'));
  let handle;
  switch (svc) {
    case 'mon': handle = startDaemon('mon', 'ceph-mon', ['-f', '-c', P.conf, '-i', 'a']); break;
    case 'mgr': handle = startDaemon('mgr', 'ceph-mgr', ['-f', '-c', P.conf, '-i', 'x']); break;
    case 'osd': handle = startDaemon('osd', 'ceph-osd', ['-f', '-c', P.conf, '-i', '0']); break;
    case 'glance': handle = startDaemon('glance', 'glance-api', ['--config-file', P.glanceConf]); break;
    case 'libvirtd': handle = startLibvirtdIn(P.libvirt, 'libvirtd'); break;
    default: throw new StackError(`unknown service ${svc} (one of ${SERVICES.join(', ')})`);
  }
  if (!handle.pid) {
    await sleep(10);
    throw serviceError(svc, handle.exited ?? 'failed to start');
  }
  st.pids[svc] = handle.pid;
  saveState(st);
  return handle;
}

async function waitService(st, svc, handle) {
  const t0 = now();
  await waitFor(svc, handle, () => READY[svc](st), READY_TIMEOUT[svc], 'health check');
  if (svc === 'libvirtd') {
    const ns = mountNs(st.pids.libvirtd);
    if (ns && !st.libvirtNs.includes(ns)) { st.libvirtNs.push(ns); saveState(st); }
    saveLibvirtCaps(P.libvirt);
  }
  return now() - t0;
}

async function stopService(st, svc) {
  const pid = st.pids[svc];
  if (svc === 'libvirtd') {
    // A real libvirtd restart leaves domains running; so does this (qemu stays in the old namespace).
    await terminate([pidAlive(pid) ? pid : 0], 15_000);
  } else {
    await terminate([pidAlive(pid) ? pid : 0], svc === 'osd' ? 30_000 : 10_000);
  }
  delete st.pids[svc];
  saveState(st);
}

/** Health of every service: pid alive, and the service answers. */
async function health(st) {
  const res = {};
  const cephSt = pidAlive(st.pids?.mon)
    ? await cephJson(['status'], 10_000).catch((e) => ({ error: e.message }))
    : { error: 'mon is not running' };
  const checks = {
    mon: () => (cephSt.error ? Promise.reject(new Error(cephSt.error)) : cephSt.quorum_names?.includes('a')),
    mgr: () => (cephSt.error ? Promise.reject(new Error(cephSt.error)) : findKey(cephSt.mgrmap, 'available') === true),
    osd: () => (cephSt.error ? Promise.reject(new Error(cephSt.error)) : findKey(cephSt.osdmap, 'num_up_osds') >= 1),
    glance: () => READY.glance(st),
    libvirtd: () => READY.libvirtd(st),
  };
  await Promise.all(SERVICES.map(async (svc) => {
    const pid = st.pids?.[svc];
    const alive = pidAlive(pid);
    let answers = false;
    let error;
    if (alive) {
      try { answers = !!(await checks[svc]()); } catch (e) { error = e.message.split('\n')[0]; }
    }
    res[svc] = { pid: pid ?? null, alive, answers, rss: alive ? rssBytes(pid) : 0, ...(error ? { error } : {}) };
  }));
  return res;
}

// ---------------------------------------------------------------------------------------------
// stack.json

function writeStackJson(st) {
  const user = (id) => ({ id, keyringPath: userKeyring(id), confPath: userConf(id) });
  const info = {
    dir: DIR,
    createdAt: st.createdAt,
    ceph: {
      fsid: st.fsid,
      confPath: P.conf,
      monHost: st.monHost,
      monitors: [{ host: HOST, port: st.ports.monV1 }],
      users: { admin: user('admin'), glance: user('glance'), ephemera: user('ephemera') },
      pools: { images: 'images', vms: 'vms', rbd: 'rbd' },
      objectStore: st.objectStore,
    },
    glance: { url: `http://${HOST}:${st.ports.glance}`, port: st.ports.glance, pool: 'images' },
    libvirt: { uri: st.libvirtUri, accel: st.accel, domainType: st.accel === 'kvm' ? 'kvm' : 'qemu', cephSecretUuid: st.secretUuid },
    pids: { ...st.pids },
  };
  writeAtomic(P.stackJson, `${JSON.stringify(info, null, 2)}\n`);
  return info;
}

// ---------------------------------------------------------------------------------------------
// commands

/** Kills whatever a previous (failed or foreign-booted) stack in DIR left running. */
async function killLeftovers(st) {
  const ours = allPids().filter((p) => p !== process.pid && p !== process.ppid && pidAlive(p) && isStackDaemon(p));
  const inNs = pidsInNamespaces(st?.libvirtNs, P.libvirt);
  await terminate([...new Set([...Object.values(st?.pids ?? {}).filter((p) => pidAlive(p)), ...ours, ...inNs])]);
}

/** One of the daemons a stack starts (clients such as `rbd --conf <dir>/...` are left alone). */
function isStackDaemon(pid) {
  const cmd = (procCmdline(pid) ?? []).slice(0, 3).join(' ');
  return /ceph-(mon|mgr|osd)|glance-api|libvirtd|unshare|qemu-system/.test(cmd);
}

async function bootstrap(timings) {
  const t0 = now();
  const st = loadState();
  if (st) await killLeftovers(st);
  for (const f of readdirSync(DIR)) if (f !== 'lock') rmSync(join(DIR, f), { recursive: true, force: true });
  mkdirSync(P.log, { recursive: true });

  const ports = await pickPorts();
  const s = {
    version: 1,
    createdAt: new Date().toISOString(),
    bootstrapped: false,
    fsid: randomUUID(),
    osdUuid: randomUUID(),
    secretUuid: randomUUID(),
    objectStore: process.env.EPHEMERA_STACK_OBJECTSTORE || 'bluestore',
    ports,
    monHost: `[v2:${HOST}:${ports.monV2},v1:${HOST}:${ports.monV1}]`,
    libvirtUri: libvirtUri(P.libvirt),
    accel: 'tcg',
    pids: {},
    libvirtNs: [],
  };
  writeCephConfig(s);
  writeGlanceConfig(s);
  writeLibvirtConfig(P.libvirt, join(P.log, 'libvirtd.log'));
  saveState(s);
  timings.config = now() - t0;

  const started = [];
  const step = async (name, fn) => { const t = now(); const r = await fn(); timings[name] = now() - t; return r; };
  try {
    const cephChain = (async () => {
      const osdFs = step('osd mkfs', () => osdMkfs(s)).then(() => undefined, (e) => e);
      await step('mon mkfs', () => cephMkfs(s));
      const mon = await startService(s, 'mon'); started.push('mon');
      await step('mon', () => waitService(s, 'mon', mon));
      const mgr = await startService(s, 'mgr'); started.push('mgr');
      await run('ceph', ['--conf', P.conf, 'osd', 'new', s.osdUuid, '0']);
      const mkfsError = await osdFs;
      if (mkfsError) throw serviceError('osd', `mkfs failed: ${mkfsError.message}`);
      const osd = await startService(s, 'osd'); started.push('osd');
      await step('osd', () => waitService(s, 'osd', osd));
      await step('pools', async () => {
        await Promise.all(['images', 'vms', 'rbd'].map((p) => ceph(['osd', 'pool', 'create', p, '8', '8'])));
        await Promise.all(['images', 'vms', 'rbd'].map((p) => rbd(['pool', 'init', p])));
      });
      await step('mgr', () => waitService(s, 'mgr', mgr));
    })();
    const glanceChain = (async () => {
      const how = await step('glance db', glanceDbSync);
      timings[`glance db (${how})`] = timings['glance db']; delete timings['glance db'];
      const g = await startService(s, 'glance'); started.push('glance');
      await step('glance', () => waitService(s, 'glance', g));
    })();
    const libvirtChain = (async () => {
      await ensureLibvirtQemuUser();
      const l = await startService(s, 'libvirtd'); started.push('libvirtd');
      await step('libvirtd', () => waitService(s, 'libvirtd', l));
      await step('ceph secret', () => defineCephSecret(s.libvirtUri, s.secretUuid));
    })();
    const accelChain = step('accel probe', async () => {
      const a = await probeAccel();
      s.accel = a.accel; s.accelHow = a.how;
    });
    const results = await Promise.allSettled([cephChain, glanceChain, libvirtChain, accelChain]);
    const failed = results.filter((r) => r.status === 'rejected');
    if (failed.length) throw failed[0].reason;
  } catch (e) {
    process.stderr.write('tools/stack up: failed, stopping what it started\n');
    await killLeftovers(s);
    s.pids = {};
    saveState(s);
    throw e;
  }
  s.bootstrapped = true;
  saveState(s);
  return s;
}

async function cmdUp() {
  const t0 = now();
  const timings = {};
  let st = loadState();
  let fresh = false;
  if (!st?.bootstrapped) {
    st = await bootstrap(timings);
    fresh = true;
  } else {
    // Reuse: start whatever is not running, in dependency order; wait for what is.
    const h = await health(st);
    const bad = SERVICES.filter((s) => !(h[s].alive && h[s].answers));
    if (bad.length) {
      const handles = {};
      for (const svc of bad) {
        if (!h[svc].alive) handles[svc] = await startService(st, svc);
        if (svc === 'mon') timings.mon = await waitService(st, 'mon', handles.mon);
      }
      await Promise.all(bad.filter((s) => s !== 'mon').map(async (svc) => { timings[svc] = await waitService(st, svc, handles[svc]); }));
      if (bad.includes('libvirtd')) await defineCephSecret(st.libvirtUri, st.secretUuid);
    }
  }
  writeStackJson(st);
  const total = now() - t0;
  const detail = Object.entries(timings).map(([k, v]) => `${k} ${secs(v)}`).join(', ');
  process.stdout.write(`stack ${fresh ? 'up' : 'already up'} in ${secs(total)}${detail ? ` (${detail})` : ''}: ${P.stackJson}\n`);
  if (fresh) process.stdout.write(`object store ${st.objectStore}, accel ${st.accel} (${st.accelHow}), glance ${`http://${HOST}:${st.ports.glance}`}, libvirt ${st.libvirtUri}\n`);
}

async function cmdDown() {
  const t0 = now();
  const st = loadState();
  rmSync(P.stackJson, { force: true });
  if (st) {
    const alive = (svc) => (pidAlive(st.pids?.[svc]) ? st.pids[svc] : 0);
    if (alive('libvirtd')) await destroyDomains(st.libvirtUri);
    // The OSD says goodbye to the mon on SIGTERM (and waits 5 s for a mon that is gone): mon last.
    await Promise.all([terminate([alive('osd')], 15_000), terminate(['glance', 'libvirtd', 'mgr'].map(alive), 15_000)]);
    await terminate([alive('mon')], 15_000);
  }
  await killLeftovers(st);
  rmSync(DIR, { recursive: true, force: true });
  process.stdout.write(`stack down in ${secs(now() - t0)}: removed ${DIR}\n`);
}

async function cmdStatus(args) {
  const quiet = args.includes('--quiet');
  const json = args.includes('--json');
  const st = loadState();
  if (!st?.bootstrapped || !existsSync(P.stackJson)) {
    if (!quiet) process.stdout.write(`no stack at ${DIR}${st ? ' (incomplete: run tools/stack up)' : ''}\n`);
    return 1;
  }
  const h = await health(st);
  const ok = SERVICES.every((s) => h[s].alive && h[s].answers);
  if (json) process.stdout.write(`${JSON.stringify({ dir: DIR, healthy: ok, services: h }, null, 2)}\n`);
  else if (!quiet) {
    let rss = 0;
    for (const s of SERVICES) {
      const x = h[s];
      rss += x.rss;
      const state = !x.alive ? 'not running' : x.answers ? 'ok' : `not answering${x.error ? `: ${x.error}` : ''}`;
      process.stdout.write(`${s.padEnd(9)} pid ${String(x.pid ?? '-').padEnd(8)} ${(x.rss / 2 ** 20).toFixed(0).padStart(5)} MiB  ${state}\n`);
    }
    process.stdout.write(`${ok ? 'healthy' : 'NOT healthy'}: ${DIR} (RSS total ${(rss / 2 ** 20).toFixed(0)} MiB)\n`);
  }
  return ok ? 0 : 1;
}

async function cmdEnv() {
  const info = readJson(P.stackJson);
  if (!info) throw new StackError(`no stack.json in ${DIR}: run tools/stack up`);
  const q = (v) => `'${String(v).replace(/'/g, `'\\''`)}'`;
  process.stdout.write([
    `export EPHEMERA_STACK_DIR=${q(info.dir)}`,
    `export CEPH_CONF=${q(info.ceph.confPath)}`,
    `export LIBVIRT_DEFAULT_URI=${q(info.libvirt.uri)}`,
    `export EPHEMERA_GLANCE_URL=${q(info.glance.url)}`,
    `export OS_IMAGE_URL=${q(info.glance.url)}`,
    '',
  ].join('\n'));
}

async function cmdService(cmd, svc) {
  if (!SERVICES.includes(svc)) throw new StackError(`usage: tools/stack ${cmd} <${SERVICES.join('|')}>`);
  const st = loadState();
  if (!st?.bootstrapped) throw new StackError(`no stack at ${DIR}: run tools/stack up`);
  const t0 = now();
  if (cmd === 'stop' || cmd === 'restart') await stopService(st, svc);
  if (cmd === 'start' || cmd === 'restart') {
    if (!pidAlive(st.pids[svc])) {
      const handle = await startService(st, svc);
      await waitService(st, svc, handle);
      if (svc === 'libvirtd') await defineCephSecret(st.libvirtUri, st.secretUuid);
    } else {
      await waitService(st, svc, undefined);
    }
  }
  writeStackJson(st);
  process.stdout.write(`${svc} ${cmd === 'stop' ? 'stopped' : `running (pid ${st.pids[svc]})`} in ${secs(now() - t0)}\n`);
}

/** An extra libvirtd (same recipe, own namespace and socket) rooted at `root`, for tests. */
async function cmdPrivateLibvirtd(action, root) {
  if (!root) throw new StackError('usage: tools/stack private-libvirtd start|stop <dir>');
  root = resolve(root);
  const pidFile = join(root, 'libvirtd.pid');
  const nsFile = join(root, 'namespaces');
  const uri = libvirtUri(root);
  const oldPid = Number(readJson(pidFile)?.pid ?? 0);
  if (['start', 'stop', 'restart'].includes(action)) {
    if (pidAlive(oldPid, root)) {
      if (action === 'start') { process.stdout.write(`${JSON.stringify({ uri, pid: oldPid })}\n`); return; }
      // stop: domains go too; restart: like a real libvirtd restart, domains keep running.
      if (action === 'stop') await destroyDomains(uri);
      await terminate([oldPid], 15_000);
    }
    if (action === 'stop') {
      const namespaces = existsSync(nsFile) ? readFileSync(nsFile, 'utf8').split('\n').filter(Boolean) : [];
      await terminate(pidsInNamespaces(namespaces, root));
      rmSync(pidFile, { force: true });
      process.stdout.write(`${JSON.stringify({ uri, stopped: true })}\n`);
      return;
    }
  } else throw new StackError('usage: tools/stack private-libvirtd start|stop|restart <dir>');
  await ensureLibvirtQemuUser();
  writeLibvirtConfig(root);
  const handle = startLibvirtdIn(root, 'libvirtd', root);
  if (!handle.pid) throw new StackError(`private libvirtd: ${handle.exited ?? 'failed to start'}`);
  writeFileSync(pidFile, JSON.stringify({ pid: handle.pid }));
  await waitFor('libvirtd (private)', handle, async () => {
    await run('virsh', ['-c', uri, 'version'], { timeout: 8000 }); return true;
  }, 60_000, `virsh -c ${uri} version`).catch((e) => { throw new StackError(`${e.message}\n${tail(join(root, 'libvirtd.log'))}`); });
  saveLibvirtCaps(root);
  const ns = mountNs(handle.pid);
  if (ns) writeFileSync(nsFile, `${ns}\n`, { flag: 'a' });
  const st = loadState();
  if (st?.bootstrapped && existsSync(userKeyring('ephemera'))) await defineCephSecret(uri, st.secretUuid, root);
  process.stdout.write(`${JSON.stringify({ uri, pid: handle.pid })}\n`);
}

const USAGE = `usage: tools/stack <command>
  up                         bring the stack up (reuses a healthy one), write stack.json
  down                       stop everything the stack started, remove its directory
  status [--quiet|--json]    each service: pid alive + answers; --quiet: exit 0 only when healthy
  env                        shell export lines (EPHEMERA_STACK_DIR, CEPH_CONF, LIBVIRT_DEFAULT_URI, ...)
  start|stop|restart <svc>   one service: ${SERVICES.join(', ')}
  private-libvirtd start|stop|restart <dir>   an extra libvirtd for tests (prints {"uri","pid"})
state dir: ${DIR}
`;

async function main(argv) {
  const [cmd, ...args] = argv;
  switch (cmd) {
    case 'up': await cmdUp(); return 0;
    case 'down': await cmdDown(); return 0;
    case 'status': return cmdStatus(args);
    case 'env': await cmdEnv(); return 0;
    case 'start': case 'stop': case 'restart': await cmdService(cmd, args[0]); return 0;
    case 'private-libvirtd': await cmdPrivateLibvirtd(args[0], args[1]); return 0;
    case undefined: case '-h': case '--help': case 'help': process.stdout.write(USAGE); return cmd ? 0 : 2;
    default: process.stderr.write(USAGE); return 2;
  }
}

// Never exit "successfully" because the event loop ran dry while a command was still waiting.
const keepAlive = setInterval(() => {}, 1 << 30);
process.on('beforeExit', () => {
  process.stderr.write(`tools/stack ${process.argv[2]}: internal error: nothing left to wait for before the command finished\n`);
  process.exit(70);
});
main(process.argv.slice(2)).then((code) => { clearInterval(keepAlive); process.exit(code); }, (e) => {
  process.stderr.write(`tools/stack ${process.argv[2]}: ${e instanceof StackError ? e.message : e.stack}\n`);
  process.exit(1);
});
