// Case 9: how a clone's cost grows with the work already done (issue 22, item 6).
// - One parent (64 MiB, a protected snapshot written straight into the images pool), cloned with
//   0, 100 and 500 existing children (--quick: 0 and 100), per clone format (2 and 1): Ephemera's
//   createFromImage on its rbd location alternated with python3-rbd's bare RBD().clone() on one
//   open connection. Target: p50 at the most children / p50 at 0 <= 1.2x, per format.
//   Beside it, what grows per clone in librbd/the OSD (see pyrbd_scale.py stats): the v1
//   `rbd_children` set, the v2 snapshot's child set in the parent header, the pool directory.
// - 20 clones at once from the two hosts' drivers (a worker process each, 10 clones each),
//   against the same 20 one at a time: p50/p99 and the ratio.
// Everything created (children, clones, the parent) is removed at the end, also on failure.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { MiB, PY, fmtMs, fmtRatio, log, repo, round, summary, table } from '../lib/util.mjs';

/** Target of issue 22 item 6: clone p50 with the most children over p50 with none, per format. */
export const SCALE_TARGETS = { growth: 1.2 };

/** A child process that answers one JSON line per JSON line (pyrbd_scale.py, scale-worker.mjs). */
function lineProcess(cmd, argv, label) {
  const child = spawn(cmd, argv, { stdio: ['pipe', 'pipe', 'pipe'], cwd: repo });
  let stderr = '';
  child.stderr.on('data', (d) => {
    stderr = (stderr + d).slice(-8000);
  });
  child.on('error', (e) => {
    stderr += `\n${e.message}`;
  });
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const next = async (timeoutMs) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    try {
      for (;;) {
        const r = await lines.next();
        if (r.done) throw new Error(`${label} ended (${child.exitCode ?? child.signalCode}): ${stderr.trim()}`);
        if (!r.value.startsWith('{')) continue; // not ours (a library's stray stdout line)
        const o = JSON.parse(r.value);
        if (o.error) throw new Error(`${label}: ${o.error}`);
        return o;
      }
    } finally {
      clearTimeout(timer);
    }
  };
  return {
    ready: () => next(120_000),
    async cmd(o, timeoutMs = 120_000) {
      child.stdin.write(`${JSON.stringify(o)}\n`);
      return next(timeoutMs);
    },
    async close() {
      child.stdin.end();
      if (child.exitCode !== null || child.signalCode !== null) return;
      const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
      await new Promise((r) => child.once('exit', r));
      clearTimeout(timer);
    },
  };
}

const verdict = (ok) => (ok ? 'PASS' : 'FAIL');

/** @param ctx see casePrepare; needs ctx.newBackend(options) and the admin connection ctx.cluster. */
export async function caseScale(ctx) {
  const { stack, opts, cluster, tag } = ctx;
  if (!ctx.newBackend) return { error: ctx.backendMissing ?? 'no backend' };
  const eph = stack.ceph.users.ephemera;
  const pools = stack.ceph.pools;
  const counts = opts.quick ? [0, 100] : [0, 100, 500];
  const reps = opts.quick ? 11 : 21;
  const size = 64 * MiB;
  const parent = `bench-${tag}-scale-parent`;
  /** Every name this case may have made in the vms pool (removed at the end if still there). */
  const made = new Set();
  const images = await cluster.openIoCtx(pools.images);
  const vms = await cluster.openIoCtx(pools.vms);
  const source = {
    id: parent,
    name: parent,
    size,
    virtualSize: size,
    diskFormat: 'raw',
    containerFormat: 'bare',
    locations: [{ url: `rbd://${stack.ceph.fsid}/${pools.images}/${parent}/snap`, metadata: {} }],
    async open() {
      throw new Error('case 9 clones only: the source has no bytes');
    },
  };
  // The backend's progress events split one createFromImage: before its 'clone' event (monitor
  // ping, clone format, plan) and from there to 'done' (rbd_clone3 through the binding, then ours).
  const steps = { pre: [], clone: [] };
  const cloneOnce = async (backend, record = true) => {
    const d = { instance: globalThis.crypto.randomUUID(), name: 'disk' };
    made.add(`${d.instance}_disk`);
    const t0 = performance.now();
    let at;
    const onProgress = (e) => {
      if (e.phase === 'clone' && at === undefined) at = performance.now();
    };
    const value = await backend.createFromImage(d, source, { onProgress });
    const ms = performance.now() - t0;
    await backend.remove(d);
    if (value.method !== 'cloned') throw new Error(`expected a clone, got ${value.method} (${value.reason})`);
    if (record && at !== undefined) {
      steps.pre.push(at - t0);
      steps.clone.push(t0 + ms - at);
    }
    return ms;
  };

  /** Clone p50 against the number of children, for one clone format. */
  async function perFormat(format) {
    const py = lineProcess(
      PY,
      [
        join(repo, 'bench', 'lib', 'pyrbd_scale.py'),
        eph.confPath,
        eph.id,
        pools.images,
        parent,
        'snap',
        pools.vms,
        String(format),
      ],
      'pyrbd_scale.py',
    );
    const backend = await ctx.newBackend({ cloneFormat: format });
    const children = [];
    const rows = [];
    const pyName = (s) => {
      const n = `bench-${tag}-scale-py${format}-${s}`;
      made.add(n);
      return n;
    };
    try {
      await py.ready();
      await cloneOnce(backend, false); // each side's first clone is not steady state
      await py.cmd({ op: 'clone', name: pyName('warm') });
      for (const n of counts) {
        const add = [];
        for (let i = children.length; i < n; i++) add.push(`bench-${tag}-scale-v${format}-${i}`);
        if (add.length) {
          for (const a of add) made.add(a);
          const r = await py.cmd({ op: 'children', names: add }, 900_000);
          children.push(...add);
          log(`case 9: v${format}: ${children.length} children (${add.length} made in ${fmtMs(r.ms)})`);
        }
        const stats = await py.cmd({ op: 'stats' });
        if (stats.children !== n) throw new Error(`v${format}: expected ${n} children, librbd lists ${stats.children}`);
        const ours = [];
        const theirs = [];
        steps.pre.length = 0;
        steps.clone.length = 0;
        for (let r = 0; r < reps; r++) {
          const pair = [
            async () => ours.push(await cloneOnce(backend)),
            async () => theirs.push((await py.cmd({ op: 'clone', name: pyName(`${n}-${r}`) })).cloneMs),
          ];
          if (r % 2) pair.reverse();
          for (const f of pair) await f();
        }
        // The driver's spawn asks every backend for disks of the new instance before the clone
        // (list({ instance })): what that costs with the pool's directory this full.
        const listMs = [];
        for (let r = 0; r < 5; r++) {
          const t = performance.now();
          await backend.list({ instance: globalThis.crypto.randomUUID() });
          listMs.push(performance.now() - t);
        }
        const row = {
          children: n,
          listInstance: summary(listMs),
          ours: summary(ours),
          python: summary(theirs),
          oursBeforeClone: summary(steps.pre),
          oursCloneStep: summary(steps.clone),
          stats,
        };
        row.overheadMs = round(row.ours.median - row.python.median);
        rows.push(row);
        log(
          `case 9: v${format}, ${n} children: ours p50 ${fmtMs(row.ours.median)}, python ${fmtMs(row.python.median)}`,
        );
      }
    } finally {
      if (children.length)
        await py
          .cmd({ op: 'remove', names: children }, 900_000)
          .then((r) => log(`case 9: v${format}: ${r.removed} children removed in ${fmtMs(r.ms)}`))
          .catch((e) => log(`case 9: removing the v${format} children: ${e.message}`));
      await py.close();
      await backend.close();
    }
    const first = rows[0];
    const last = rows[rows.length - 1];
    return {
      rows,
      growth: last.ours.median / first.ours.median,
      pythonGrowth: last.python.median / first.python.median,
    };
  }

  /** 20 clones at once from the two hosts' drivers against the same 20 one at a time. */
  async function fromTwoHosts() {
    if ((stack.hosts ?? []).length < 2) return { available: false, reason: 'the stack has one host (--hosts 2)' };
    const n = 20;
    const workers = [1, 2].map((host) =>
      lineProcess(
        process.execPath,
        [
          join(repo, 'bench', 'cases', 'scale-worker.mjs'),
          JSON.stringify({
            host,
            hostId: `bench-${tag}-${host}`,
            stateDir: join(ctx.tmpDir, `scale-host-${host}`),
            source: { ...source, open: undefined },
          }),
        ],
        `scale-worker host ${host}`,
      ),
    );
    const names = (k) =>
      Array.from({ length: k }, () => {
        const u = globalThis.crypto.randomUUID();
        made.add(`${u}_disk`);
        return u;
      });
    const clones = async (w, list) => {
      try {
        return await w.cmd({ op: 'clones', names: list }, 300_000);
      } finally {
        await w.cmd({ op: 'remove', names: list }, 300_000);
      }
    };
    try {
      await Promise.all(workers.map((w) => w.ready()));
      for (const w of workers) await clones(w, names(1)); // warm-up: each driver's first clone
      const sequential = [];
      for (let i = 0; i < n; i++) sequential.push((await clones(workers[i % 2], names(1))).ms[0]);
      const t0 = performance.now();
      const res = await Promise.all(
        workers.map(async (w) => {
          const list = names(n / 2);
          const r = await w.cmd({ op: 'clones', names: list }, 300_000);
          const wall = performance.now() - t0; // before the untimed removal
          await w.cmd({ op: 'remove', names: list }, 300_000);
          return { ...r, wall };
        }),
      );
      const wallMs = Math.max(...res.map((r) => r.wall));
      const seq = summary(sequential);
      const conc = summary(res.flatMap((r) => r.ms));
      return {
        clones: n,
        sequential: seq,
        concurrent: conc,
        wallMs: round(wallMs),
        startSkewMs: round(Math.abs(res[0].startedAt - res[1].startedAt)),
        p50Ratio: round(conc.median / seq.median),
        throughputRatio: round(n / wallMs / (1 / seq.median)),
      };
    } finally {
      for (const w of workers) await w.close().catch((e) => log(`case 9: ${e.message}`));
    }
  }

  const out = { parent: `${pools.images}/${parent}@snap`, sizeBytes: size, counts, reps, formats: {} };
  let parentMade = false;
  try {
    await images.create(parent, size);
    parentMade = true;
    const img = await images.open(parent);
    try {
      await img.write(0, randomBytes(MiB)); // some data: a clone of an empty image could be special-cased
      await img.flush();
      await img.createSnapshot('snap');
      await img.protectSnapshot('snap'); // clone format 1 needs it
    } finally {
      await img.close();
    }
    for (const format of [2, 1]) out.formats[`v${format}`] = await perFormat(format);
    out.twoHosts = await fromTwoHosts();
  } finally {
    try {
      const left = (await vms.list()).filter((n) => made.has(n));
      if (left.length) log(`case 9: cleanup: removing ${left.length} images left in ${pools.vms}`);
      for (const n of left) await vms.remove(n).catch((e) => log(`case 9: cleanup: ${pools.vms}/${n}: ${e.message}`));
      if (parentMade) {
        const img = await images.open(parent);
        try {
          for (const s of await img.listSnapshots()) {
            if (s.namespace && s.namespace !== 'user') continue;
            if (await img.isSnapshotProtected(s.name).catch(() => false)) await img.unprotectSnapshot(s.name);
            await img.removeSnapshot(s.name);
          }
        } finally {
          await img.close();
        }
        await images.remove(parent);
      }
    } catch (err) {
      log(`case 9: cleanup: ${err.message}`);
    }
  }
  report(out);
  return out;
}

function report(out) {
  const top = out.counts[out.counts.length - 1];
  const rows = [
    [
      'clone format, children',
      'Ephemera p50',
      'python3-rbd p50',
      'ours - bare',
      'ours: before clone',
      'ours: clone step',
      'list({ instance })',
      'Ephemera p99',
      'n',
    ],
  ];
  const grow = [['what grows (per clone, librbd/OSD)', ...out.counts.map((n) => `${n} children`)]];
  out.targets = {};
  for (const [f, r] of Object.entries(out.formats)) {
    for (const x of r.rows)
      rows.push([
        `${f}, ${x.children}`,
        fmtMs(x.ours.median),
        fmtMs(x.python.median),
        fmtMs(x.overheadMs),
        fmtMs(x.oursBeforeClone?.median),
        fmtMs(x.oursCloneStep?.median),
        fmtMs(x.listInstance.median),
        fmtMs(x.ours.p99),
        x.ours.n,
      ]);
    rows.push([
      `${f}: p50(${top}) / p50(0), Ephemera`,
      fmtRatio(r.growth),
      fmtRatio(r.pythonGrowth),
      '',
      '',
      '',
      '',
      '',
    ]);
    out.targets[`${f} clone p50 with ${top} children / with 0`] = {
      value: round(r.growth),
      target: SCALE_TARGETS.growth,
      pass: r.growth <= SCALE_TARGETS.growth,
    };
    const s = (k) => r.rows.map((x) => x.stats[k]);
    const fmtB = (b) => `${b} B`;
    grow.push(
      [`${f}: v1 rbd_children set (vms pool)`, ...s('v1ChildrenBytes').map(fmtB)],
      [`${f}: v2 snap_children in parent header`, ...s('v2ChildrenBytes').map(fmtB)],
      [`${f}: rbd_directory omap keys (vms pool)`, ...s('directoryKeys')],
      [`${f}: read of that set (v${f.slice(1)})`, ...s(f === 'v1' ? 'v1ReadMs' : 'v2ReadMs').map(fmtMs)],
      [`${f}: list_children2() of the snapshot`, ...s('listChildrenMs').map(fmtMs)],
    );
  }
  table('Case 9: clone p50 against existing children of the parent (64 MiB; ratio = with most / with none)', rows);
  table('Case 9: what librbd reads and rewrites per clone, by children', grow);
  const t = out.twoHosts;
  if (t?.available === false) console.log(`Case 9: two hosts: not run (${t.reason})`);
  else if (t)
    table("Case 9: 20 clones at once from two hosts' drivers (10 each) vs one at a time", [
      ['clones', 'p50', 'p99', 'min', 'max', 'n'],
      ...[
        ['one at a time (baseline, alternating hosts)', t.sequential],
        ['20 at once, 2 drivers', t.concurrent],
      ].map(([l, x]) => [l, fmtMs(x.median), fmtMs(x.p99), fmtMs(x.min), fmtMs(x.max), x.n]),
      ['p50 at once / one at a time', fmtRatio(t.p50Ratio), '', '', '', ''],
      ['clones/s at once / one at a time', fmtRatio(t.throughputRatio), `wall ${fmtMs(t.wallMs)}`, '', '', ''],
    ]);
  table('Targets (issue 22.6)', [
    ['target', 'measured', 'limit', 'result'],
    ...Object.entries(out.targets).map(([k, v]) => [k, fmtRatio(v.value), `<= ${fmtRatio(v.target)}`, verdict(v.pass)]),
  ]);
}
