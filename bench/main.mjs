#!/usr/bin/env node
// Ephemera benchmarks: `npm run bench` (bench/run brings the stack up, builds, then runs this).
//
//   node bench/main.mjs [--quick] [--cases 1,1c,2,3,3b,4,5,6,7,8,8s,9] [--huge] [--no-write] [--spawns 50] [--check]
//
// Every comparison is measured side by side in one run on the same stack; each case prints the
// baseline's figure, Ephemera's and the ratio, and the run is written to
// bench/results/<YYYY-MM-DD>[-HHMMSS].json with the machine's details.
//   1  root-disk preparation time against image size (clone stays flat)
//   1c clone latency against its targets: vs python3-rbd's bare clone, absolute, first vs steady
//   2  spawn to the guest's serial marker, clone path against import path (1 GiB)
//   3  concurrency: 50 spawns of one image at once (disk+XML+define, and with boot)
//   3b 20 concurrent first-time imports of one image by the qcow2 backend do one fetch
//   4  import throughput and bytes written to local disk
//   5  peak RSS of the driver during case 3
//   6  live migration between the stack's two hosts against a cold move (64, 256, 1024 MiB guests)
//   7  encrypted against plain disks per backend: spawn to marker, qemu-img bench write/read
//   8  golden images: 20 instances of a 1 GiB qcow2 image the Nova way against one conversion +
//      clones (time, bytes read from Glance); snapshot time of 1 and 8 GiB disks, before/after
//   8s case 8's snapshot part alone
//   9  clone cost against the parent's existing children (0/100/500, clone v2 and v1), 20 clones from 2 hosts
// Every case that has targets reports each as { value, target, pass }; the run ends with the list.
// --check: exit 1 when a target fails (a regression guard before a release; not part of npm test).
// --quick: 256 MiB and 1 GiB only, fewer repetitions (a few minutes).
// --huge: also copy the 64 GiB sparse image with the copying methods of case 1 (slow).
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Fixtures } from './lib/fixtures.mjs';
import { log, machineInfo, repo, loadStack } from './lib/util.mjs';

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    huge: { type: 'boolean', default: false },
    cases: { type: 'string', default: '1,1c,2,3,3b,4,5,6,7,8,9' },
    check: { type: 'boolean', default: false },
    'no-write': { type: 'boolean', default: false },
    spawns: { type: 'string' },
  },
});
const cases = new Set(
  args.cases
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean),
);
for (const c of cases)
  if (!['1', '1c', '2', '3', '3b', '4', '5', '6', '7', '8', '8s', '9'].includes(c))
    throw new Error(`--cases: unknown case ${c} (1, 1c, 2, 3, 3b, 4, 5, 6, 7, 8, 8s, 9)`);
const opts = { quick: args.quick, huge: args.huge, spawns: args.spawns ? Number(args.spawns) : 50 };

const stack = loadStack();
const { GlanceClient } = await import('@ephemera/glance');
const { connect } = await import('@ephemera/ceph-rbd-napi');
const tag = Math.random().toString(36).slice(2, 8);
const glance = new GlanceClient({ url: stack.glance.url, timeoutMs: 120_000, idleTimeoutMs: 300_000 });
const admin = stack.ceph.users.admin;
const cluster = await connect({
  confPath: admin.confPath,
  clientId: admin.id,
  keyringPath: admin.keyringPath,
  timeoutMs: 60_000,
});
const tmpDir = await mkdtemp(join(tmpdir(), `ephemera-bench-${tag}-`));
const fixtures = new Fixtures({ glance, cluster, stack, tag });

/** The RBD backend, or why it is not available (it is being written in parallel). */
async function loadRbdBackend() {
  let mod;
  try {
    mod = await import('@ephemera/backend-rbd');
  } catch (err) {
    return { missing: `@ephemera/backend-rbd cannot be loaded (${err.message.split('\n')[0]})` };
  }
  if (typeof mod.RbdBackend?.create !== 'function')
    return { missing: '@ephemera/backend-rbd does not export RbdBackend yet' };
  const u = stack.ceph.users.ephemera;
  // `extra`: backend options of one case (case 9 picks the clone format).
  const newBackend = (extra = {}) =>
    mod.RbdBackend.create({
      pool: stack.ceph.pools.vms,
      confPath: u.confPath,
      clientId: u.id,
      keyringPath: u.keyringPath,
      secretUuid: stack.libvirt.cephSecretUuid,
      ...extra,
    });
  return { backend: await newBackend(), newBackend };
}

const results = {
  date: new Date().toISOString(),
  command: `node bench/main.mjs ${process.argv.slice(2).join(' ')}`.trim(),
  options: { quick: opts.quick, huge: opts.huge, cases: [...cases] },
  machine: await machineInfo(stack),
  // The machine is shared (other engineers' tests may run): the load average says how quiet it was.
  loadAverage: { start: loadavg().map((x) => Math.round(x * 100) / 100) },
  cases: {},
};
log(
  `machine: ${results.machine.cpuModel}, ${results.machine.cores} cores, ${results.machine.memoryGiB} GiB, ${results.machine.accel}, ${results.machine.objectStore}`,
);

const { backend, newBackend, missing: backendMissing } = await loadRbdBackend();
if (backendMissing) log(`note: ${backendMissing}; Ephemera rows of cases 1 and 4 are reported as not available`);
const ctx = { stack, glance, cluster, backend, newBackend, backendMissing, fixtures, opts, tmpDir, tag };

let failed = false;
async function runCase(id, name, load) {
  if (!cases.has(id)) return;
  log(`== case ${id}: ${name}`);
  const t0 = performance.now();
  try {
    const fn = await load();
    results.cases[id] = { name, ...(await fn(ctx)), durationS: Math.round((performance.now() - t0) / 1000) };
  } catch (err) {
    failed = true;
    console.error(`case ${id} failed: ${err.stack ?? err}`);
    results.cases[id] = { name, error: String(err.message ?? err) };
  }
}

try {
  await runCase(
    '1',
    'root-disk preparation time by image size',
    async () => (await import('./cases/prepare.mjs')).casePrepare,
  );
  await runCase(
    '1c',
    'clone latency against its targets (issue 22.1, 22.2)',
    async () => (await import('./cases/clone.mjs')).caseClone,
  );
  await runCase(
    '2',
    'spawn to guest marker, clone vs import (1 GiB)',
    async () => (await import('./cases/boot.mjs')).caseBoot,
  );
  if (cases.has('3') || cases.has('5')) {
    await runCase(
      cases.has('3') ? '3' : '5',
      'concurrent spawns (and case 5: driver memory)',
      async () => (await import('./cases/concurrency.mjs')).caseConcurrency,
    );
    const c = results.cases['3'] ?? results.cases['5'];
    if (c?.memory && cases.has('5')) results.cases['5'] = { name: 'peak RSS of the driver during case 3', ...c.memory };
    if (c?.memory && !cases.has('5')) delete c.memory;
  }
  await runCase(
    '3b',
    '20 concurrent first-time qcow2 imports of one image',
    async () => (await import('./cases/concurrency.mjs')).caseQcow2OneFetch,
  );
  await runCase(
    '4',
    'import throughput and local disk writes',
    async () => (await import('./cases/import.mjs')).caseImport,
  );
  await runCase(
    '6',
    'live migration vs cold move (issue 19.7)',
    async () => (await import('./cases/migrate.mjs')).caseMigrate,
  );
  await runCase(
    '7',
    'encrypted vs plain disks per backend (issue 23.6)',
    async () => (await import('./cases/encryption.mjs')).caseEncryption,
  );
  await runCase(
    '8',
    'golden images: Nova way vs one conversion + clones; snapshot before/after (issue 21.6)',
    async () => (await import('./cases/golden.mjs')).caseGolden,
  );
  await runCase(
    '8s',
    'snapshot time, sync against background flatten (issue 21.4/21.6; the snapshot part of case 8)',
    async () => (await import('./cases/golden-snapshot.mjs')).caseGoldenSnapshot,
  );
  await runCase(
    '9',
    "clone cost against the parent's existing children, clones from 2 hosts (issue 22.6)",
    async () => (await import('./cases/scale.mjs')).caseScale,
  );
} finally {
  log("cleanup: removing the run's images");
  await fixtures.removeAll();
  try {
    const vms = await cluster.openIoCtx(stack.ceph.pools.vms);
    for (const n of await vms.list())
      if (n.startsWith(`bench-${tag}-`)) await vms.remove(n).catch((e) => log(`cleanup: vms/${n}: ${e.message}`));
  } catch (err) {
    log(`cleanup: ${err.message}`);
  }
  await backend?.close?.().catch(() => undefined);
  await cluster.close();
  await rm(tmpDir, { recursive: true, force: true });
}

// Every target of the run, with its verdict (--check fails the run on any miss).
const verdicts = [];
for (const [id, c] of Object.entries(results.cases))
  for (const [name, t] of Object.entries(c.targets ?? {}))
    verdicts.push({ target: `${id}: ${name}`, value: t.value, limit: t.target, pass: t.pass });
if (verdicts.length) {
  console.log('\nTargets');
  for (const v of verdicts)
    console.log(`  ${v.pass ? 'pass' : 'FAIL'}  ${v.target}: ${v.value ?? '-'} (limit ${v.limit})`);
}
results.targets = verdicts;
if (args.check && verdicts.some((v) => !v.pass)) failed = true;
if (args.check && verdicts.length === 0) {
  console.error('--check: the cases run have no targets');
  failed = true;
}

results.loadAverage.end = loadavg().map((x) => Math.round(x * 100) / 100);
results.durationS = Math.round(performance.now() / 1000);
console.log(
  `\nload average (1/5/15 min): start ${results.loadAverage.start.join(' ')}, end ${results.loadAverage.end.join(' ')} on ${results.machine.cores} cores`,
);
if (!args['no-write']) {
  const dir = join(repo, 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  const d = results.date;
  let file = join(dir, `${d.slice(0, 10)}.json`);
  if (existsSync(file)) file = join(dir, `${d.slice(0, 10)}-${d.slice(11, 19).replaceAll(':', '')}.json`);
  writeFileSync(file, JSON.stringify(results, null, 2) + '\n');
  console.log(`\nwrote ${file.slice(repo.length + 1)}`);
}
process.exitCode = failed ? 1 : 0;
