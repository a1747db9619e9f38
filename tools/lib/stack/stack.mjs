// The stack as a whole: its state directory, state.json and stack.json, and the commands
// (up, down, status, env, start/stop/restart <svc>, private-libvirtd) over the service modules.
//
// One state directory ($EPHEMERA_STACK_DIR, default <repo>/.stack) holds everything:
//   state.json   internal state (ports, fsid, pids, ...)      stack.json  the public contract
//   ceph/        ceph.conf (admin), per-user keyrings + confs, mon/mgr/osd data, run/ (asok)
//   glance/      glance-api.conf, paste ini, policy, sqlite db, staging
//   libvirt/     etc/ run/ lib/ cache/ log/ (bind-mounted over the compiled-in paths inside
//                libvirtd's own mount namespace) and sock/ (the client socket)
//   log/         every daemon's log (<svc>.out is its stdout/stderr)
//   host<N>/     compute host N > 1 (hosts.mjs): libvirt/ as above, its logs in log/host<N>/
// Processes are tracked by pid (no systemd) and identified by their command line, which always
// contains the state directory.
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import {
  CEPH_DAEMONS,
  cephLogs,
  cephPaths,
  cephReady,
  cephStatusChecks,
  createPools,
  monMkfs,
  osdMkfs,
  osdNew,
  startCephDaemon,
  writeCephConfig,
  writeCephConfs,
} from './ceph.mjs';
import {
  glanceDbSync,
  glanceLogs,
  glancePaths,
  glanceReady,
  glanceUrl,
  startGlance,
  writeGlanceConfig,
} from './glance.mjs';
import {
  defineCephSecret,
  destroyDomains,
  ensureLibvirtQemuUser,
  libvirtdLogs,
  libvirtdPaths,
  libvirtdReady,
  pidsInNamespaces,
  probeAccel,
  saveLibvirtCaps,
  startLibvirtd,
  writeLibvirtConfig,
} from './libvirtd.mjs';
import { ensureHosts, hostOfService, hostPaths, hostService, hostStateDir, newHost, requestedHosts } from './hosts.mjs';
import { allPids, mountNs, pidAlive, procCmdline, rssBytes, serviceError, terminate, waitFor } from './process.mjs';
import { HOST, REPO, StackError, now, pickPorts, readJson, secs, sleep, tail, writeAtomic } from './util.mjs';

const DIR = resolve(process.env.EPHEMERA_STACK_DIR || join(REPO, '.stack'));
const BASE_SERVICES = ['mon', 'mgr', 'osd', 'glance'];
/** Every service of the stack: Ceph's, Glance, then one libvirtd per host (`libvirtd`, `libvirtd@2`, ...). */
const services = (st) => [...BASE_SERVICES, ...ensureHosts(st).map((h) => hostService(h.id))];

/** The layout of a stack's state directory; each service module owns its own subdirectory. */
function stackPaths(dir) {
  const log = join(dir, 'log');
  return {
    state: join(dir, 'state.json'),
    stackJson: join(dir, 'stack.json'),
    log,
    ceph: cephPaths(join(dir, 'ceph'), log),
    glance: glancePaths(join(dir, 'glance'), log),
    libvirtd: libvirtdPaths(join(dir, 'libvirt'), log),
  };
}
const P = stackPaths(DIR);
/** Host `id`'s libvirtd instance (host 1: P.libvirtd). */
const HP = (id) => (id === 1 ? P.libvirtd : hostPaths(DIR, P.log, id));
const hostOf = (st, svc) => ensureHosts(st).find((h) => h.id === hostOfService(svc));

/** One of this stack's processes (its command line names the state directory). */
const alive = (pid) => pidAlive(pid, DIR);
const isCeph = (svc) => Object.hasOwn(CEPH_DAEMONS, svc);

// ---------------------------------------------------------------------------------------------
// state and services

function loadState() {
  return readJson(P.state);
}
function saveState(st) {
  writeAtomic(P.state, `${JSON.stringify(st, null, 2)}\n`);
}

/** Log files shown (tail) when a service fails. */
function serviceLogs(svc) {
  if (isCeph(svc)) return cephLogs(P.ceph, svc);
  if (svc === 'glance') return glanceLogs(P.glance);
  if (hostOfService(svc)) return libvirtdLogs(HP(hostOfService(svc)));
  return [join(P.log, `${svc}.out`)];
}

const READY = {
  mon: () => cephReady.mon(P.ceph),
  mgr: () => cephReady.mgr(P.ceph),
  osd: () => cephReady.osd(P.ceph),
  glance: (st) => glanceReady(st.ports.glance),
};
const ready = (st, svc) => (hostOfService(svc) ? libvirtdReady(HP(hostOfService(svc)).uri) : READY[svc](st));
const READY_TIMEOUT = { mon: 60_000, mgr: 90_000, osd: 120_000, glance: 90_000, libvirtd: 60_000 };
const readyTimeout = (svc) => READY_TIMEOUT[hostOfService(svc) ? 'libvirtd' : svc];

/** The same ceph secret (UUID and key) on every host, so an RBD disk's domain can move between them. */
const defineStackSecret = (st, svc) => {
  const l = HP(hostOfService(svc));
  return defineCephSecret(l.uri, st.secretUuid, P.ceph.keyring('ephemera'), l.root);
};

/** Starts one service (on an already bootstrapped state dir); `waitService` waits until it answers. */
async function startService(st, svc) {
  // Configs are regenerated from the state, so a fixed generator reaches a running stack on restart.
  if (isCeph(svc)) writeCephConfs(st, P.ceph);
  if (svc === 'glance') writeGlanceConfig(st, P.glance, P.ceph.userConf('glance'));
  const host = hostOf(st, svc);
  if (host) writeLibvirtConfig(HP(host.id), host);
  let handle;
  if (isCeph(svc)) handle = startCephDaemon(P.ceph, svc);
  else if (svc === 'glance') handle = startGlance(P.glance);
  else if (host) handle = startLibvirtd(HP(host.id));
  else throw new StackError(`unknown service ${svc} (one of ${services(st).join(', ')})`);
  if (!handle.pid) {
    await sleep(10);
    throw serviceError(svc, handle.exited ?? 'failed to start', serviceLogs(svc));
  }
  st.pids[svc] = handle.pid;
  saveState(st);
  return handle;
}

async function waitService(st, svc, handle) {
  const t0 = now();
  await waitFor(svc, handle, () => ready(st, svc), readyTimeout(svc), 'health check', serviceLogs(svc));
  const host = hostOf(st, svc);
  if (host) {
    const ns = mountNs(st.pids[svc]);
    if (ns && !host.libvirtNs.includes(ns)) {
      host.libvirtNs.push(ns);
      saveState(st);
    }
    saveLibvirtCaps(HP(host.id));
  }
  return now() - t0;
}

async function stopService(st, svc) {
  const pid = st.pids[svc];
  if (hostOfService(svc)) {
    // A real libvirtd restart leaves domains running; so does this (qemu stays in the old namespace).
    await terminate([alive(pid) ? pid : 0], 15_000);
  } else {
    await terminate([alive(pid) ? pid : 0], svc === 'osd' ? 30_000 : 10_000);
  }
  delete st.pids[svc];
  saveState(st);
}

/** Health of every service: pid alive, and the service answers. */
async function health(st) {
  const res = {};
  const checks = {
    ...(await cephStatusChecks(P.ceph, alive(st.pids?.mon))),
    glance: () => READY.glance(st),
  };
  for (const h of ensureHosts(st)) checks[hostService(h.id)] = () => libvirtdReady(HP(h.id).uri);
  await Promise.all(
    services(st).map(async (svc) => {
      const pid = st.pids?.[svc];
      const isAlive = alive(pid);
      let answers = false;
      let error;
      if (isAlive) {
        try {
          answers = !!(await checks[svc]());
        } catch (e) {
          error = e.message.split('\n')[0];
        }
      }
      res[svc] = {
        pid: pid ?? null,
        alive: isAlive,
        answers,
        rss: isAlive ? rssBytes(pid) : 0,
        ...(error ? { error } : {}),
      };
    }),
  );
  return res;
}

// ---------------------------------------------------------------------------------------------
// stack.json: the contract (tools/testkit/src/stack-info.ts)

function writeStackJson(st) {
  const user = (id) => ({ id, keyringPath: P.ceph.keyring(id), confPath: P.ceph.userConf(id) });
  const info = {
    dir: DIR,
    createdAt: st.createdAt,
    ceph: {
      fsid: st.fsid,
      confPath: P.ceph.conf,
      monHost: st.monHost,
      monitors: [{ host: HOST, port: st.ports.monV1 }],
      users: { admin: user('admin'), glance: user('glance'), ephemera: user('ephemera') },
      pools: { images: 'images', vms: 'vms', rbd: 'rbd' },
      objectStore: st.objectStore,
    },
    glance: { url: glanceUrl(st.ports.glance), port: st.ports.glance, pool: 'images' },
    libvirt: {
      uri: st.libvirtUri,
      accel: st.accel,
      domainType: st.accel === 'kvm' ? 'kvm' : 'qemu',
      cephSecretUuid: st.secretUuid,
    },
    // Host 1 is what `libvirt` describes; every host shares Ceph, Glance and the ceph secret.
    hosts: ensureHosts(st).map((h) => ({
      id: h.id,
      service: hostService(h.id),
      libvirtUri: HP(h.id).uri,
      hostUuid: h.hostUuid,
      stateDir: hostStateDir(DIR, h.id),
      migrationAddress: h.migrationAddress,
      migrationPorts: { min: h.migrationPorts[0], max: h.migrationPorts[1] },
      pid: st.pids[hostService(h.id)] ?? null,
    })),
    pids: { ...st.pids },
  };
  writeAtomic(P.stackJson, `${JSON.stringify(info, null, 2)}\n`);
  return info;
}

// ---------------------------------------------------------------------------------------------
// up: bootstrap from nothing, or start what is not running

/** Kills whatever a previous (failed or foreign-booted) stack in DIR left running. */
async function killLeftovers(st) {
  const ours = allPids().filter((p) => p !== process.pid && p !== process.ppid && alive(p) && isStackDaemon(p));
  const inNs = st ? ensureHosts(st).flatMap((h) => pidsInNamespaces(h.libvirtNs, HP(h.id).root)) : [];
  await terminate([...new Set([...Object.values(st?.pids ?? {}).filter((p) => alive(p)), ...ours, ...inNs])]);
}

/** One of the daemons a stack starts (clients such as `rbd --conf <dir>/...` are left alone). */
function isStackDaemon(pid) {
  const cmd = (procCmdline(pid) ?? []).slice(0, 3).join(' ');
  return /ceph-(mon|mgr|osd)|glance-api|libvirtd|unshare|qemu-system/.test(cmd);
}

async function bootstrap(timings, hostCount) {
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
    libvirtUri: P.libvirtd.uri,
    accel: 'tcg',
    pids: {},
  };
  s.hosts = Array.from({ length: hostCount }, (_, i) => newHost(s, i + 1));
  writeCephConfig(s, P.ceph);
  writeGlanceConfig(s, P.glance, P.ceph.userConf('glance'));
  for (const h of s.hosts) writeLibvirtConfig(HP(h.id), h);
  saveState(s);
  timings.config = now() - t0;

  const started = [];
  const step = async (name, fn) => {
    const t = now();
    const r = await fn();
    timings[name] = now() - t;
    return r;
  };
  try {
    const cephChain = (async () => {
      const osdFs = step('osd mkfs', () => osdMkfs(s, P.ceph)).then(
        () => undefined,
        (e) => e,
      );
      await step('mon mkfs', () => monMkfs(s, P.ceph));
      const mon = await startService(s, 'mon');
      started.push('mon');
      await step('mon', () => waitService(s, 'mon', mon));
      const mgr = await startService(s, 'mgr');
      started.push('mgr');
      await osdNew(s, P.ceph);
      const mkfsError = await osdFs;
      if (mkfsError) throw serviceError('osd', `mkfs failed: ${mkfsError.message}`, serviceLogs('osd'));
      const osd = await startService(s, 'osd');
      started.push('osd');
      await step('osd', () => waitService(s, 'osd', osd));
      await step('pools', () => createPools(P.ceph));
      await step('mgr', () => waitService(s, 'mgr', mgr));
    })();
    const glanceChain = (async () => {
      const how = await step('glance db', () => glanceDbSync(P.glance));
      timings[`glance db (${how})`] = timings['glance db'];
      delete timings['glance db'];
      const g = await startService(s, 'glance');
      started.push('glance');
      await step('glance', () => waitService(s, 'glance', g));
    })();
    const libvirtChain = (async () => {
      await ensureLibvirtQemuUser();
      // The hosts' libvirtds start side by side (the secret needs only the keyring, not the cluster).
      await Promise.all(
        s.hosts.map(async (h) => {
          const svc = hostService(h.id);
          const l = await startService(s, svc);
          started.push(svc);
          await step(svc, () => waitService(s, svc, l));
          await step(`ceph secret${h.id === 1 ? '' : `@${h.id}`}`, () => defineStackSecret(s, svc));
        }),
      );
    })();
    const accelChain = step('accel probe', async () => {
      const a = await probeAccel(DIR);
      s.accel = a.accel;
      s.accelHow = a.how;
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

async function cmdUp(args) {
  const t0 = now();
  const timings = {};
  const want = requestedHosts(args);
  let st = loadState();
  let fresh = false;
  let added = 0;
  if (!st?.bootstrapped) {
    st = await bootstrap(timings, want ?? 1);
    fresh = true;
  } else {
    // A stack never loses hosts here (a test may be using them): `--hosts N` means at least N.
    const hosts = ensureHosts(st);
    while (want && hosts.length < want) {
      hosts.push(newHost(st, hosts.length + 1));
      added++;
    }
    if (added) saveState(st);
    // Reuse: start whatever is not running, in dependency order; wait for what is.
    const h = await health(st);
    const bad = services(st).filter((s) => !(h[s].alive && h[s].answers));
    if (bad.length) {
      const handles = {};
      for (const svc of bad) {
        if (!h[svc].alive) handles[svc] = await startService(st, svc);
        if (svc === 'mon') timings.mon = await waitService(st, 'mon', handles.mon);
      }
      await Promise.all(
        bad
          .filter((s) => s !== 'mon')
          .map(async (svc) => {
            timings[svc] = await waitService(st, svc, handles[svc]);
          }),
      );
      for (const svc of bad.filter(hostOfService)) await defineStackSecret(st, svc);
    }
  }
  writeStackJson(st);
  const total = now() - t0;
  const detail = Object.entries(timings)
    .map(([k, v]) => `${k} ${secs(v)}`)
    .join(', ');
  process.stdout.write(
    `stack ${fresh ? 'up' : 'already up'} in ${secs(total)}${detail ? ` (${detail})` : ''}: ${P.stackJson}\n`,
  );
  if (fresh)
    process.stdout.write(
      `object store ${st.objectStore}, accel ${st.accel} (${st.accelHow}), glance ${glanceUrl(st.ports.glance)}, libvirt ${st.libvirtUri}\n`,
    );
  if (fresh || added) process.stdout.write(`hosts: ${st.hosts.length}${added ? ` (${added} added)` : ''}\n`);
  if (want && st.hosts.length > want)
    process.stdout.write(`hosts: ${st.hosts.length} (more than the ${want} asked for; hosts go only with down)\n`);
}

// ---------------------------------------------------------------------------------------------
// the other commands

async function cmdDown() {
  const t0 = now();
  const st = loadState();
  rmSync(P.stackJson, { force: true });
  if (st) {
    const running = (svc) => (alive(st.pids?.[svc]) ? st.pids[svc] : 0);
    const libvirtds = ensureHosts(st).map((h) => hostService(h.id));
    await Promise.all(libvirtds.filter(running).map((svc) => destroyDomains(HP(hostOfService(svc)).uri)));
    // The OSD says goodbye to the mon on SIGTERM (and waits 5 s for a mon that is gone): mon last.
    await Promise.all([
      terminate([running('osd')], 15_000),
      terminate(['glance', ...libvirtds, 'mgr'].map(running), 15_000),
    ]);
    await terminate([running('mon')], 15_000);
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
  const ok = services(st).every((s) => h[s].alive && h[s].answers);
  if (json) process.stdout.write(`${JSON.stringify({ dir: DIR, healthy: ok, services: h }, null, 2)}\n`);
  else if (!quiet) {
    let rss = 0;
    for (const s of services(st)) {
      const x = h[s];
      rss += x.rss;
      const state = !x.alive ? 'not running' : x.answers ? 'ok' : `not answering${x.error ? `: ${x.error}` : ''}`;
      process.stdout.write(
        `${s.padEnd(11)} pid ${String(x.pid ?? '-').padEnd(8)} ${(x.rss / 2 ** 20).toFixed(0).padStart(5)} MiB  ${state}\n`,
      );
    }
    process.stdout.write(`${ok ? 'healthy' : 'NOT healthy'}: ${DIR} (RSS total ${(rss / 2 ** 20).toFixed(0)} MiB)\n`);
  }
  return ok ? 0 : 1;
}

async function cmdEnv() {
  const info = readJson(P.stackJson);
  if (!info) throw new StackError(`no stack.json in ${DIR}: run tools/stack up`);
  const q = (v) => `'${String(v).replace(/'/g, `'\\''`)}'`;
  process.stdout.write(
    [
      `export EPHEMERA_STACK_DIR=${q(info.dir)}`,
      `export CEPH_CONF=${q(info.ceph.confPath)}`,
      `export LIBVIRT_DEFAULT_URI=${q(info.libvirt.uri)}`,
      `export EPHEMERA_GLANCE_URL=${q(info.glance.url)}`,
      `export OS_IMAGE_URL=${q(info.glance.url)}`,
      '',
    ].join('\n'),
  );
}

async function cmdService(cmd, svc) {
  const st = loadState();
  if (!st?.bootstrapped) throw new StackError(`no stack at ${DIR}: run tools/stack up`);
  if (hostOfService(svc)) svc = hostService(hostOfService(svc)); // libvirtd@1 is libvirtd
  if (!services(st).includes(svc)) {
    throw new StackError(
      `usage: tools/stack ${cmd} <${services(st).join('|')}>${hostOfService(svc) ? ` (this stack has ${st.hosts.length} host(s): up --hosts N adds hosts)` : ''}`,
    );
  }
  const t0 = now();
  if (cmd === 'stop' || cmd === 'restart') await stopService(st, svc);
  if (cmd === 'start' || cmd === 'restart') {
    if (!alive(st.pids[svc])) {
      const handle = await startService(st, svc);
      await waitService(st, svc, handle);
      if (hostOfService(svc)) await defineStackSecret(st, svc);
    } else {
      await waitService(st, svc, undefined);
    }
  }
  writeStackJson(st);
  process.stdout.write(
    `${svc} ${cmd === 'stop' ? 'stopped' : `running (pid ${st.pids[svc]})`} in ${secs(now() - t0)}\n`,
  );
}

/** An extra libvirtd (same recipe, own namespace and socket) rooted at `root`, for tests. */
async function cmdPrivateLibvirtd(action, root) {
  if (!root) throw new StackError('usage: tools/stack private-libvirtd start|stop <dir>');
  root = resolve(root);
  const l = libvirtdPaths(root);
  const pidFile = join(root, 'libvirtd.pid');
  const nsFile = join(root, 'namespaces');
  const { uri } = l;
  const oldPid = Number(readJson(pidFile)?.pid ?? 0);
  if (['start', 'stop', 'restart'].includes(action)) {
    if (pidAlive(oldPid, root)) {
      if (action === 'start') {
        process.stdout.write(`${JSON.stringify({ uri, pid: oldPid })}\n`);
        return;
      }
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
  writeLibvirtConfig(l);
  const handle = startLibvirtd(l);
  if (!handle.pid) throw new StackError(`private libvirtd: ${handle.exited ?? 'failed to start'}`);
  writeFileSync(pidFile, JSON.stringify({ pid: handle.pid }));
  await waitFor('libvirtd (private)', handle, () => libvirtdReady(uri), 60_000, `virsh -c ${uri} version`).catch(
    (e) => {
      throw new StackError(`${e.message}\n${tail(l.logFile)}`);
    },
  );
  saveLibvirtCaps(l);
  const ns = mountNs(handle.pid);
  if (ns) writeFileSync(nsFile, `${ns}\n`, { flag: 'a' });
  const st = loadState();
  const keyring = P.ceph.keyring('ephemera');
  if (st?.bootstrapped && existsSync(keyring)) await defineCephSecret(uri, st.secretUuid, keyring, root);
  process.stdout.write(`${JSON.stringify({ uri, pid: handle.pid })}\n`);
}

const USAGE = `usage: tools/stack <command>
  up [--hosts N]             bring the stack up (reuses a healthy one), write stack.json; N compute
                             hosts (default $EPHEMERA_STACK_HOSTS or 1; on a running stack: adds hosts)
  down                       stop everything the stack started, remove its directory
  status [--quiet|--json]    each service: pid alive + answers; --quiet: exit 0 only when healthy
  env                        shell export lines (EPHEMERA_STACK_DIR, CEPH_CONF, LIBVIRT_DEFAULT_URI, ...)
  start|stop|restart <svc>   one service: ${BASE_SERVICES.join(', ')}, libvirtd (host 1), libvirtd@N (host N)
  private-libvirtd start|stop|restart <dir>   an extra libvirtd for tests (prints {"uri","pid"})
state dir: ${DIR}
`;

/** Runs one `tools/stack` command; resolves with the process exit code. */
export async function main(argv) {
  const [cmd, ...args] = argv;
  switch (cmd) {
    case 'up':
      await cmdUp(args);
      return 0;
    case 'down':
      await cmdDown();
      return 0;
    case 'status':
      return cmdStatus(args);
    case 'env':
      await cmdEnv();
      return 0;
    case 'start':
    case 'stop':
    case 'restart':
      await cmdService(cmd, args[0]);
      return 0;
    case 'private-libvirtd':
      await cmdPrivateLibvirtd(args[0], args[1]);
      return 0;
    case undefined:
    case '-h':
    case '--help':
    case 'help':
      process.stdout.write(USAGE);
      return cmd ? 0 : 2;
    default:
      process.stderr.write(USAGE);
      return 2;
  }
}
