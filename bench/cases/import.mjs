// Case 4: import throughput of Ephemera's streamed import against `rbd import` of a local file
// and `qemu-img convert` to RBD, for the same image, the bytes each writes to local disk and the
// CPU time each spends (a figure the shared machine's load does not move much). Per size
// (256 MiB, 1 GiB, 4 GiB; --quick: 256 MiB and 1 GiB): medians of 3 rounds each (2 for the
// local-file importers and 1 from Glance with --quick). Targets (issue 22.3), per size: ours /
// `rbd import` of the local file >= 1.0x, and from Glance ours / the 2013 way >= 1.0x.
import { readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { fileSource, glanceSource, sizeLabel } from '../lib/fixtures.mjs';
import {
  GiB,
  MiB,
  diskProbe,
  fmtBytes,
  fmtMs,
  fmtRatio,
  log,
  round,
  run,
  summary,
  table,
  timed,
} from '../lib/util.mjs';

/** Targets of issue 22.3: throughput ratios, ours over the baseline. */
export const IMPORT_TARGETS = { oursOverRbdImportLocal: 1.0, oursOverTheTwentyThirteenWay: 1.0 };

const verdict = (ok) => (ok ? 'PASS' : 'FAIL');

/** CPU seconds of this process and of the children it reaped (utime, stime, cutime, cstime). */
function cpuSeconds() {
  // Fields after the command name (which may hold spaces): utime is the 12th of them.
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) / 100;
}

const LABELS = {
  localRbdImport: 'rbd import <local file>',
  localQemuImg: 'qemu-img convert <local file> rbd:',
  localOurs: 'Ephemera streamed import <local file>',
  glanceRbdImport: 'Glance -> local file -> rbd import (2013 way)',
  glanceQemuImg: 'Glance -> local file -> qemu-img convert',
  glanceOurs: 'Ephemera streamed import from Glance',
};
const VS = {
  localRbdImport: 'localOurs',
  localQemuImg: 'localOurs',
  glanceRbdImport: 'glanceOurs',
  glanceQemuImg: 'glanceOurs',
};

export async function caseImport(ctx) {
  const sizes = ctx.opts.quick ? [256 * MiB, GiB] : [256 * MiB, GiB, 4 * GiB];
  const out = { sizes: {}, targets: {}, notes: [] };
  if (!ctx.backend) out.notes.push(`Ephemera rows not available: ${ctx.backendMissing}`);
  for (const bytes of sizes) {
    const label = sizeLabel(bytes);
    out.sizes[label] = await importOneSize(ctx, bytes);
    const ratios = out.sizes[label].ratios;
    for (const [name, value, target] of [
      [
        `ours / rbd import (local file), ${label}`,
        ratios.oursOverRbdImportLocal,
        IMPORT_TARGETS.oursOverRbdImportLocal,
      ],
      [
        `ours / 2013 way (from Glance), ${label}`,
        ratios.oursOverRbdImportFromGlance,
        IMPORT_TARGETS.oursOverTheTwentyThirteenWay,
      ],
    ])
      out.targets[name] = { value, target, pass: value !== null && value !== undefined && value >= target };
  }
  table('Targets (issue 22.3; ratio of MiB/s, ours over the baseline, same run)', [
    ['target', 'measured', 'limit', 'result'],
    ...Object.entries(out.targets).map(([n, t]) => [n, fmtRatio(t.value), `>= ${fmtRatio(t.target)}`, verdict(t.pass)]),
  ]);
  console.log(
    'note: "OSD wrote" is the Ceph OSD process (bluestore on a file of this same disk); "device wrote" is the whole block device, every process on the machine included; "CPU" is the importing process tree (ours: the bench process; others: the reaped rbd/qemu-img child).',
  );
  for (const n of out.notes) console.log(`note: ${n}`);
  return out;
}

async function importOneSize(ctx, bytes) {
  const { stack, opts } = ctx;
  const eph = stack.ceph.users.ephemera;
  const vmsPool = stack.ceph.pools.vms;
  const vms = await ctx.cluster.openIoCtx(vmsPool);
  const fx = await ctx.fixtures.get(bytes, 'random');
  const reps = opts.quick ? 2 : 3;
  const glanceReps = opts.quick ? 1 : 3;
  let seq = 0;
  const name = (k) => `bench-${ctx.tag}-imp-${k}-${seq++}`;
  const rbdTarget = (n) => `rbd:${vmsPool}/${n}:id=${eph.id}:conf=${eph.confPath}`;
  const out = { image: { glanceImage: fx.id, bytes: fx.bytes, label: sizeLabel(bytes) }, methods: {} };

  const measure = async (key, fn) => {
    const probe = diskProbe(stack.pids?.osd);
    const cpu0 = cpuSeconds();
    const { ms } = await timed(fn);
    const cpu = cpuSeconds() - cpu0;
    const disk = probe.stop();
    const m = (out.methods[key] ??= { runs: [], disk: [], cpu: [] });
    m.runs.push(ms);
    m.disk.push(disk);
    m.cpu.push(cpu);
  };
  const ours = async (key, source, extra = {}) => {
    const disk = { instance: globalThis.crypto.randomUUID(), name: 'disk' };
    try {
      await measure(key, async () => {
        const r = await ctx.backend.createFromImage(disk, source, { forceImport: true, ...extra });
        if (r.method !== 'imported') throw new Error(`expected an import, got ${r.method}`);
      });
    } finally {
      await ctx.backend.remove(disk).catch(() => undefined);
    }
  };
  const rbdImport = async (key, file) => {
    const n = name('rbd');
    try {
      await measure(key, () =>
        run('rbd', ['--conf', eph.confPath, '--id', eph.id, 'import', '--no-progress', file, `${vmsPool}/${n}`]),
      );
    } finally {
      await vms.remove(n).catch(() => undefined);
    }
  };
  const qemuConvert = async (key, file) => {
    const n = name('qemu');
    try {
      await measure(key, () => run('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', file, rbdTarget(n)]));
    } finally {
      await vms.remove(n).catch(() => undefined);
    }
  };
  const staged = async (key, then) => {
    const file = join(ctx.tmpDir, `staged-${seq++}.img`);
    try {
      await measure(key, async () => {
        await ctx.glance.downloadToFile(fx.id, file, { image: fx.image });
        await then(file);
      });
    } finally {
      await rm(file, { force: true });
    }
  };

  // A. The importers alone: the same bytes already in a local file (page-cached), no hash to check.
  const localRunners = [
    ['localRbdImport', () => rbdImport('localRbdImport', fx.path)],
    ['localQemuImg', () => qemuConvert('localQemuImg', fx.path)],
    ...(ctx.backend ? [['localOurs', async () => ours('localOurs', await fileSource(fx.path))]] : []),
  ];
  for (let r = 0; r < reps; r++) {
    for (let k = 0; k < localRunners.length; k++) {
      const [key, fn] = localRunners[(r + k) % localRunners.length];
      log(`case 4 (${sizeLabel(bytes)}): ${key} ${r + 1}/${reps}`);
      await fn();
    }
  }
  // B. From Glance, as a compute node gets it: ours streams (sha512 checked on the way), the
  // others must stage the image in a local file first.
  const glanceRunners = [
    [
      'glanceRbdImport',
      () =>
        staged('glanceRbdImport', (f) =>
          run('rbd', [
            '--conf',
            eph.confPath,
            '--id',
            eph.id,
            'import',
            '--no-progress',
            f,
            `${vmsPool}/${name('g-rbd')}`,
          ]).then(() => undefined),
        ),
    ],
    [
      'glanceQemuImg',
      () =>
        staged('glanceQemuImg', (f) =>
          run('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', f, rbdTarget(name('g-qemu'))]).then(() => undefined),
        ),
    ],
    ...(ctx.backend ? [['glanceOurs', () => ours('glanceOurs', glanceSource(ctx.glance, fx.image))]] : []),
  ];
  for (let r = 0; r < glanceReps; r++) {
    for (let k = 0; k < glanceRunners.length; k++) {
      const [key, fn] = glanceRunners[(r + k) % glanceRunners.length];
      log(`case 4 (${sizeLabel(bytes)}): ${key} ${r + 1}/${glanceReps}`);
      await fn();
    }
  }
  // The staged runs name their images inside the closure: remove every bench image of this case.
  for (const n of await vms.list())
    if (n.startsWith(`bench-${ctx.tag}-imp-`)) await vms.remove(n).catch(() => undefined);
  await vms.close?.();
  // Cases 1 to 3 share the 1 GiB image (main removes it at the end); the others go now.
  if (bytes !== GiB) await ctx.fixtures.remove(fx.key);

  const mibps = (ms) => (ms ? bytes / MiB / (ms / 1000) : null);
  for (const [k, m] of Object.entries(out.methods)) {
    const s = summary(m.runs);
    const max = (f) => Math.max(...m.disk.map((d) => d[f] ?? 0));
    out.methods[k] = {
      label: LABELS[k],
      ms: s,
      MiBps: round(mibps(s.median), 1),
      cpuSeconds: summary(m.cpu),
      localWriteBytes: max('processTreeWriteBytes'),
      localCancelledWriteBytes: max('processTreeCancelledWriteBytes'),
      osdWriteBytes: max('osdWriteBytes'),
      deviceWriteBytes: max('deviceWriteBytes'),
      disk: m.disk,
    };
  }
  const M = out.methods;
  const r = (a, b) => (M[a]?.MiBps && M[b]?.MiBps ? M[b].MiBps / M[a].MiBps : null);
  out.ratios = {
    oursOverRbdImportLocal: round(r('localRbdImport', 'localOurs')),
    oursOverQemuImgLocal: round(r('localQemuImg', 'localOurs')),
    oursOverRbdImportFromGlance: round(r('glanceRbdImport', 'glanceOurs')),
    oursOverQemuImgFromGlance: round(r('glanceQemuImg', 'glanceOurs')),
  };
  const rows = [
    [
      `method (${sizeLabel(bytes)} of random data)`,
      'median',
      'MiB/s',
      'CPU',
      'local disk written',
      'OSD wrote',
      'device wrote',
      'ours / this',
    ],
  ];
  for (const k of Object.keys(LABELS)) {
    const m = M[k];
    if (!m) {
      rows.push([LABELS[k], 'n/a', '', '', '', '', '', '']);
      continue;
    }
    rows.push([
      m.label,
      fmtMs(m.ms.median),
      m.MiBps?.toFixed(1),
      `${m.cpuSeconds.median.toFixed(2)} s`,
      fmtBytes(m.localWriteBytes),
      fmtBytes(m.osdWriteBytes),
      fmtBytes(m.deviceWriteBytes),
      VS[k] ? fmtRatio(r(k, VS[k])) : '',
    ]);
  }
  out.table = table(
    `Case 4 (${sizeLabel(bytes)}): import throughput, CPU and local disk writes (ratio = Ephemera MiB/s / baseline MiB/s; "local disk written" = write_bytes of the importing process tree, /proc/<pid>/io)`,
    rows,
  );
  return out;
}
