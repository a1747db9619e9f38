// Case 2: spawn to the guest's marker on the serial console, clone path against import path (1 GiB).
import { join } from 'node:path';
import { GiB, fmtMs, fmtRatio, log, round, table } from '../lib/util.mjs';
import { runDriverWorker } from './driver-run.mjs';

export async function caseBoot(ctx) {
  const fx = await ctx.fixtures.get(GiB, 'random');
  const job = {
    mode: 'boot',
    imageId: fx.id,
    stateDir: join(ctx.tmpDir, 'driver-boot'),
    cloneReps: ctx.opts.quick ? 3 : 5,
    importReps: ctx.opts.quick ? 1 : 2,
  };
  const r = await runDriverWorker(job);
  if (r.missing) {
    const msg = `not available: driver missing (${r.missing})`;
    log(`case 2: ${msg}`);
    console.log(`\nCase 2: spawn to guest marker, clone vs import (1 GiB)\n  ${msg}`);
    return { available: false, reason: r.missing };
  }
  const ratio = r.import.toMarkerMs.median / r.clone.toMarkerMs.median;
  const rows = [
    [
      'spawn -> "EPHEMERA-MARKER" on the serial console (1 GiB image)',
      'median',
      'min',
      'max',
      'n',
      'root disk step',
      'start step',
    ],
    [
      'import path (baseline: full copy of the image)',
      fmtMs(r.import.toMarkerMs.median),
      fmtMs(r.import.toMarkerMs.min),
      fmtMs(r.import.toMarkerMs.max),
      r.import.toMarkerMs.n,
      fmtMs(r.import.rootDiskMs.median),
      fmtMs(r.import.startMs.median),
    ],
    [
      'clone path (Ephemera)',
      fmtMs(r.clone.toMarkerMs.median),
      fmtMs(r.clone.toMarkerMs.min),
      fmtMs(r.clone.toMarkerMs.max),
      r.clone.toMarkerMs.n,
      fmtMs(r.clone.rootDiskMs.median),
      fmtMs(r.clone.startMs.median),
    ],
    [
      'ratio import / clone',
      fmtRatio(ratio),
      '',
      '',
      '',
      fmtRatio(r.import.rootDiskMs.median / r.clone.rootDiskMs.median),
      '',
    ],
  ];
  const out = {
    available: true,
    imageBytes: fx.bytes,
    glanceImage: fx.id,
    ...r,
    ratios: { importOverClone: round(ratio) },
  };
  out.table = table(`Case 2: spawn to guest marker (${ctx.stack.libvirt.accel}), clone vs import`, rows);
  // Where the clone path's time goes: medians per step, and each step's share of spawn-to-marker
  // (median over the spawns of step / that spawn's total).
  const names = {
    preflight: 'preflight checks (backend, secret, instance absent; Glance fetched meanwhile)',
    resolve: 'resolve image (Glance record + plan), what was left after the checks',
    'root-disk': 'root disk (clone)',
    secret: 'ceph secret',
    xml: 'domain XML',
    define: 'define (libvirt)',
    start: 'start (libvirt, until running)',
    other: 'rest of spawn() (journal, instance dir, annotation, record)',
    boot: 'guest boot to the marker (after spawn() returned)',
  };
  const st = r.clone.steps;
  if (st)
    out.stepsTable = table('Case 2: clone-path spawn to marker, by step (median; share of spawn to marker)', [
      ['step', 'median', 'share'],
      ...Object.keys(names).map((k) => [
        names[k],
        fmtMs(st[k]?.median),
        `${(100 * (r.clone.shares[k] ?? 0)).toFixed(1)} %`,
      ]),
      ['spawn to marker', fmtMs(r.clone.toMarkerMs.median), '100 %'],
    ]);
  return out;
}
