// Case 1c: clone latency against its targets (issue 22, items 1 and 2), measured in one run:
// - Ephemera's createFromImage on a cloneable location, p50, against python3-rbd's bare
//   RBD().clone() on an open connection (a long-lived python process, clones alternated with
//   ours so load drift hits both alike): target <= 1.0x, and <= 20 ms absolute;
// - the first clone after a backend starts (created just before, its warm-up running in the
//   background) against the steady state: target <= 2x.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { glanceSource } from '../lib/fixtures.mjs';
import { MiB, PY, fmtMs, fmtRatio, log, repo, round, summary, table, timed } from '../lib/util.mjs';

/** Targets of issue 22 (items 1 and 2). */
export const CLONE_TARGETS = { overPython: 1.0, absoluteMs: 20, firstOverSteady: 2.0 };

/** A long-lived python3-rbd process cloning on one open connection (see pyrbd_clone_loop.py). */
function pythonCloner(eph, imagesPool, image, vmsPool) {
  const child = spawn(
    PY,
    [join(repo, 'bench', 'lib', 'pyrbd_clone_loop.py'), eph.confPath, eph.id, imagesPool, image, 'snap', vmsPool],
    { stdio: ['pipe', 'pipe', 'pipe'] },
  );
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const next = async () => {
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    try {
      const r = await lines.next();
      if (r.done) throw new Error(`pyrbd_clone_loop.py ended: ${stderr.trim()}`);
      return JSON.parse(r.value);
    } finally {
      clearTimeout(timer);
    }
  };
  return {
    ready: () => next(),
    async clone(name) {
      child.stdin.write(`${name}\n`);
      return (await next()).cloneMs;
    },
    async close() {
      child.stdin.end();
      await new Promise((r) => (child.exitCode !== null ? r() : child.once('exit', r)));
    },
  };
}

const verdict = (ok) => (ok ? 'PASS' : 'FAIL');

/** @param ctx see casePrepare; needs ctx.newBackend() (a fresh RbdBackend). */
export async function caseClone(ctx) {
  const { stack, opts } = ctx;
  if (!ctx.newBackend) return { error: ctx.backendMissing ?? 'no backend' };
  const eph = stack.ceph.users.ephemera;
  const reps = opts.quick ? 15 : 31;
  const firsts = opts.quick ? 3 : 5;
  const fx = await ctx.fixtures.get(256 * MiB, 'random');
  const src = () => glanceSource(ctx.glance, fx.image);
  const disk = () => ({ instance: globalThis.crypto.randomUUID(), name: 'disk' });
  const cloneOnce = async (backend) => {
    const d = disk();
    const { ms, value } = await timed(() => backend.createFromImage(d, src()));
    await backend.remove(d);
    if (value.method !== 'cloned') throw new Error(`expected a clone, got ${value.method} (${value.reason})`);
    return ms;
  };

  // First clone after start: a new backend each time, the clone issued as soon as create() resolves.
  const first = [];
  for (let i = 0; i < firsts; i++) {
    const { value: backend, ms: createMs } = await timed(() => ctx.newBackend());
    try {
      const ms = await cloneOnce(backend);
      first.push(ms);
      log(`case 1c: first clone ${i + 1}/${firsts}: ${fmtMs(ms)} (create ${fmtMs(createMs)})`);
    } finally {
      await backend.close();
    }
  }

  // Steady state, alternating with python3-rbd's bare clone on its open connection.
  const backend = await ctx.newBackend();
  const py = pythonCloner(eph, stack.ceph.pools.images, fx.id, stack.ceph.pools.vms);
  const ours = [];
  const theirs = [];
  try {
    await py.ready();
    await cloneOnce(backend); // each side's first clone is not steady state
    await py.clone(`bench-${ctx.tag}-py1c-warm`);
    for (let r = 0; r < reps; r++) {
      log(`case 1c: steady ${r + 1}/${reps}`);
      const pair = [
        async () => ours.push(await cloneOnce(backend)),
        async () => theirs.push(await py.clone(`bench-${ctx.tag}-py1c-${r}`)),
      ];
      if (r % 2) pair.reverse();
      for (const f of pair) await f();
    }
  } finally {
    await py.close();
    await backend.close();
  }
  const s = { ours: summary(ours), python: summary(theirs), first: summary(first) };
  const overPython = s.ours.median / s.python.median;
  const firstOverSteady = s.first.median / s.ours.median;
  const checks = {
    overPython: {
      value: round(overPython),
      target: CLONE_TARGETS.overPython,
      pass: overPython <= CLONE_TARGETS.overPython,
    },
    absoluteMs: {
      value: round(s.ours.median),
      target: CLONE_TARGETS.absoluteMs,
      pass: s.ours.median <= CLONE_TARGETS.absoluteMs,
    },
    firstOverSteady: {
      value: round(firstOverSteady),
      target: CLONE_TARGETS.firstOverSteady,
      pass: firstOverSteady <= CLONE_TARGETS.firstOverSteady,
    },
  };
  table('Case 1c: clone latency against its targets (256 MiB image; p50 = median)', [
    ['clone', 'p50', 'p99', 'min', 'max', 'n'],
    ...[
      ['python3-rbd RBD().clone(), open connection', s.python],
      ['Ephemera createFromImage, steady state', s.ours],
      ['Ephemera first clone after create()', s.first],
    ].map(([l, x]) => [l, fmtMs(x.median), fmtMs(x.p99), fmtMs(x.min), fmtMs(x.max), x.n]),
  ]);
  table('Targets (issue 22)', [
    ['target', 'measured', 'limit', 'result'],
    [
      'Ephemera p50 / python3-rbd p50',
      fmtRatio(overPython),
      `<= ${fmtRatio(CLONE_TARGETS.overPython)}`,
      verdict(checks.overPython.pass),
    ],
    [
      'Ephemera p50 (absolute)',
      fmtMs(s.ours.median),
      `<= ${CLONE_TARGETS.absoluteMs} ms`,
      verdict(checks.absoluteMs.pass),
    ],
    [
      'first clone p50 / steady p50',
      fmtRatio(firstOverSteady),
      `<= ${fmtRatio(CLONE_TARGETS.firstOverSteady)}`,
      verdict(checks.firstOverSteady.pass),
    ],
  ]);
  return { image: fx.id, clone: s, targets: checks };
}
