#!/usr/bin/env node
// Benchmark of @ephemera/ceph-rbd-napi against python3-rbd (the binding Nova uses) and the rbd CLI,
// on the dev stack (tools/stack up). Not a test: it prints a table and writes
// bench/results/ceph-rbd-napi.json.
//
//   node bench/ceph-rbd-napi/bench.mjs [--clones 200] [--cli-clones 200] [--rounds 5]
//
// Needs the package built (npx nx run @ephemera/ceph-rbd-napi:build, or npm ci + build).
// - clone latency: N sequential clones of images/<base>@snap into vms, per-clone p50/p99.
//   For the CLI each clone is one `rbd clone` process (what a driver shelling out pays).
// - 64 MiB write throughput: aio writes of 1 MiB with 16 in flight into a fresh image, then flush;
//   the CLI uses `rbd bench --io-type write --io-size 1M --io-threads 16 --io-total 64M`
//   (wall time of the process, and the rate it reports, which excludes start-up and the final
//   flush). Median and best over --rounds; the three run in a rotating order each round.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '..', '..');
const { connect, workerThreads } = await import(join(repo, 'packages', 'ceph-rbd-napi', 'dist', 'index.js'));

const { values: args } = parseArgs({
  options: {
    clones: { type: 'string', default: '200' },
    'cli-clones': { type: 'string', default: '200' },
    rounds: { type: 'string', default: '5' },
  },
});
const N = Number(args.clones);
const CLI_N = Number(args['cli-clones']);
const ROUNDS = Number(args.rounds);
const MiB = 1 << 20;
const TOTAL = 64 * MiB;
const CHUNK = MiB;
const WINDOW = 16;

const stackDir = resolve(process.env.EPHEMERA_STACK_DIR || join(repo, '.stack'));
const stack = JSON.parse(readFileSync(join(stackDir, 'stack.json'), 'utf8'));
const admin = stack.ceph.users.admin;
const PY = '/usr/bin/python3'; // Debian's python3 (python3-rbd); a pyenv python3 on PATH lacks it

function run(cmd, argv, timeoutMs = 600_000) {
  return new Promise((resolvePromise, reject) => {
    const t0 = performance.now();
    execFile(cmd, argv, { timeout: timeoutMs, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      if (err)
        reject(
          new Error(
            `${cmd} ${argv.join(' ')}: ${err.killed ? 'timed out' : `exit ${err.code}`}: ${String(stderr).trim()}`,
          ),
        );
      else resolvePromise({ stdout: String(stdout), stderr: String(stderr), ms: performance.now() - t0 });
    });
  });
}
const rbdCli = (...a) => run('rbd', ['--conf', admin.confPath, '--id', admin.id, ...a]);

function pct(values, p) {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
}
const median = (v) => pct(v, 50);
const tag = randomBytes(3).toString('hex');

const cluster = await connect({
  confPath: admin.confPath,
  clientId: admin.id,
  keyringPath: admin.keyringPath,
  timeoutMs: 30_000,
});
const images = await cluster.openIoCtx(stack.ceph.pools.images);
const vms = await cluster.openIoCtx(stack.ceph.pools.vms);
const base = `bench-base-${tag}`;
await images.create(base, 1024 * MiB);
{
  const img = await images.open(base);
  await img.write(0, randomBytes(4 * MiB));
  await img.createSnapshot('snap');
  await img.protectSnapshot('snap');
  await img.close();
}
const created = [];
async function removeAll(names) {
  for (let i = 0; i < names.length; i += 16) await Promise.all(names.slice(i, i + 16).map((n) => vms.remove(n)));
}

const results = {
  date: new Date().toISOString(),
  host: { cores: (await import('node:os')).cpus().length },
  nativeThreads: workerThreads(),
  clone: {},
  write: {},
};
try {
  // ---- clone latency ----
  // In blocks of BLOCK clones per tool, rotating the order, so load drift on a shared machine
  // hits all three alike.
  const BLOCK = 20;
  process.stderr.write(`clone latency: ${N} sequential clones each (CLI: ${CLI_N}), blocks of ${BLOCK}\n`);
  const lat = { napi: [], python: [], cli: [] };
  const cloneRunners = {
    async napi(block, n) {
      const names = [];
      for (let i = 0; i < n; i++) {
        const name = `bench-napi-${tag}-${block}-${i}`;
        const t = performance.now();
        await vms.clone({ parent: { ioctx: images, image: base, snap: 'snap' }, dest: { name } });
        lat.napi.push(performance.now() - t);
        names.push(name);
        created.push(name);
      }
      return names;
    },
    async python(block, n) {
      const prefix = `bench-py-${tag}-${block}-`;
      const names = Array.from({ length: n }, (_, i) => `${prefix}${i}`);
      created.push(...names);
      const { stdout } = await run(PY, [
        join(here, 'pyrbd_bench.py'),
        'clone',
        admin.confPath,
        admin.keyringPath,
        String(n),
        'images',
        base,
        'snap',
        'vms',
        prefix,
      ]);
      lat.python.push(...JSON.parse(stdout).ms);
      return names;
    },
    async cli(block, n) {
      const names = [];
      for (let i = 0; i < n; i++) {
        const name = `bench-cli-${tag}-${block}-${i}`;
        created.push(name);
        const r = await rbdCli('clone', `images/${base}@snap`, `vms/${name}`);
        lat.cli.push(r.ms);
        names.push(name);
      }
      return names;
    },
  };
  const want = { napi: N, python: N, cli: CLI_N };
  const tools = ['napi', 'python', 'cli'];
  for (let block = 0; tools.some((k) => lat[k].length < want[k]); block++) {
    const made = [];
    for (let k = 0; k < tools.length; k++) {
      const tool = tools[(block + k) % tools.length];
      const n = Math.min(BLOCK, want[tool] - lat[tool].length);
      if (n > 0) made.push(...(await cloneRunners[tool](block, n)));
    }
    await removeAll(made);
    created.splice(0);
  }
  for (const k of tools) {
    const ms = lat[k];
    results.clone[k] = {
      n: ms.length,
      p50: median(ms),
      p99: pct(ms, 99),
      mean: ms.reduce((a, b) => a + b, 0) / ms.length,
    };
  }

  // ---- 64 MiB aio write throughput ----
  process.stderr.write(`write throughput: 64 MiB, 1 MiB ops, ${WINDOW} in flight, ${ROUNDS} rounds\n`);
  const data = randomBytes(TOTAL);
  const w = { napi: [], python: [], cli: [], cliReported: [] };
  const runners = {
    async napi(round) {
      const name = `bench-w-napi-${tag}-${round}`;
      await vms.create(name, TOTAL);
      const img = await vms.open(name);
      let next = 0;
      const t = performance.now();
      await Promise.all(
        Array.from({ length: WINDOW }, async () => {
          while (next < TOTAL) {
            const off = next;
            next += CHUNK;
            await img.write(off, data.subarray(off, off + CHUNK));
          }
        }),
      );
      await img.flush();
      w.napi.push(performance.now() - t);
      await img.close();
      await vms.remove(name);
    },
    async python(round) {
      const name = `bench-w-py-${tag}-${round}`;
      await vms.create(name, TOTAL);
      const { stdout } = await run(PY, [
        join(here, 'pyrbd_bench.py'),
        'write',
        admin.confPath,
        admin.keyringPath,
        'vms',
        name,
        String(TOTAL),
        String(CHUNK),
        String(WINDOW),
      ]);
      w.python.push(JSON.parse(stdout).ms);
      await vms.remove(name);
    },
    async cli(round) {
      const name = `bench-w-cli-${tag}-${round}`;
      await vms.create(name, TOTAL);
      const r = await rbdCli(
        'bench',
        '--io-type',
        'write',
        '--io-size',
        '1M',
        '--io-threads',
        String(WINDOW),
        '--io-total',
        '64M',
        '--io-pattern',
        'seq',
        `vms/${name}`,
      );
      w.cli.push(r.ms);
      const m = /bytes\/sec:\s*([\d.]+)\s*([KMG]i)?B\/s/.exec(r.stdout);
      if (m) w.cliReported.push(Number(m[1]) * ({ Ki: 1 / 1024, Mi: 1, Gi: 1024 }[m[2]] ?? 1 / MiB));
      await vms.remove(name);
    },
  };
  const order = ['napi', 'python', 'cli'];
  for (let round = 0; round < ROUNDS; round++) {
    for (let k = 0; k < order.length; k++) await runners[order[(round + k) % order.length]](round);
  }
  const mibps = (ms) => TOTAL / MiB / (ms / 1000);
  results.write = {
    totalMiB: TOTAL / MiB,
    chunkMiB: CHUNK / MiB,
    inFlight: WINDOW,
    napi: {
      medianMs: median(w.napi),
      MiBps: mibps(median(w.napi)),
      bestMiBps: mibps(Math.min(...w.napi)),
      runsMs: w.napi,
    },
    python: {
      medianMs: median(w.python),
      MiBps: mibps(median(w.python)),
      bestMiBps: mibps(Math.min(...w.python)),
      runsMs: w.python,
    },
    cli: {
      medianMs: median(w.cli),
      MiBps: mibps(median(w.cli)),
      bestMiBps: mibps(Math.min(...w.cli)),
      runsMs: w.cli,
      reportedMiBps: w.cliReported.length ? median(w.cliReported) : null,
    },
  };
} finally {
  await removeAll(created);
  const img = await images.open(base);
  await img.unprotectSnapshot('snap');
  await img.removeSnapshot('snap');
  await img.close();
  await images.remove(base);
  await cluster.close();
}

const c = results.clone;
const wr = results.write;
results.ratios = {
  cloneP50NapiOverPython: c.napi.p50 / c.python.p50,
  cloneP50CliOverNapi: c.cli.p50 / c.napi.p50,
  writeNapiOverPython: wr.napi.MiBps / wr.python.MiBps,
  writeBestNapiOverPython: wr.napi.bestMiBps / wr.python.bestMiBps,
  writeNapiOverCli: wr.napi.MiBps / wr.cli.MiBps,
};
results.goals = {
  'clone p50 within 1.2x of python3-rbd': results.ratios.cloneP50NapiOverPython <= 1.2,
  'clone p50 at least 5x faster than the rbd CLI': results.ratios.cloneP50CliOverNapi >= 5,
  'write throughput >= python3-rbd (same ops in flight)': results.ratios.writeNapiOverPython >= 1,
};

const f = (x, d = 2) => x.toFixed(d).padStart(9);
console.log(
  `\n@ephemera/ceph-rbd-napi benchmark (${results.host.cores} cores, ${results.nativeThreads} native threads)\n`,
);
console.log('clone latency (ms)          p50       p99      mean     n');
for (const [k, label] of [
  ['napi', 'ceph-rbd-napi'],
  ['python', 'python3-rbd'],
  ['cli', 'rbd CLI (spawn)'],
]) {
  console.log(`${label.padEnd(20)}${f(c[k].p50)} ${f(c[k].p99)} ${f(c[k].mean)}  ${String(c[k].n).padStart(4)}`);
}
console.log(`\n64 MiB write, 1 MiB x ${WINDOW} in flight  median MiB/s  best MiB/s  median ms   (${ROUNDS} rounds)`);
for (const [k, label] of [
  ['napi', 'ceph-rbd-napi (aio)'],
  ['python', 'python3-rbd (aio)'],
  ['cli', 'rbd bench (process)'],
]) {
  console.log(`${label.padEnd(28)}${f(wr[k].MiBps, 1)}    ${f(wr[k].bestMiBps, 1)} ${f(wr[k].medianMs, 1)}`);
}
if (wr.cli.reportedMiBps) console.log(`${'rbd bench (self-reported)'.padEnd(28)}${f(wr.cli.reportedMiBps, 1)}`);
console.log('\nratios');
console.log(`  clone p50 napi / python3-rbd  ${results.ratios.cloneP50NapiOverPython.toFixed(2)}  (goal <= 1.2)`);
console.log(`  clone p50 CLI / napi          ${results.ratios.cloneP50CliOverNapi.toFixed(1)}  (goal >= 5)`);
console.log(`  write napi / python3-rbd      ${results.ratios.writeNapiOverPython.toFixed(2)}  (goal >= 1)`);
console.log(`  write napi / rbd bench        ${results.ratios.writeNapiOverCli.toFixed(2)}`);
for (const [goal, ok] of Object.entries(results.goals)) console.log(`  ${ok ? 'MET ' : 'MISS'} ${goal}`);

const outDir = join(repo, 'bench', 'results');
mkdirSync(outDir, { recursive: true });
writeFileSync(join(outDir, 'ceph-rbd-napi.json'), JSON.stringify(results, null, 2) + '\n');
console.log(`\nwrote ${join('bench', 'results', 'ceph-rbd-napi.json')}`);
