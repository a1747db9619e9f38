// Case 3: 50 spawns of one image at once (disk + XML + define; and with boot). Case 3b: 20
// concurrent first-time imports of one image by the qcow2 backend (one fetch). Case 5: the driver's peak RSS
// during the spawns (the driver runs in a worker process of its own).
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { glanceSource } from '../lib/fixtures.mjs';
import { GiB, fmtBytes, fmtMs, fmtRatio, log, round, summary, table, timed } from '../lib/util.mjs';
import { DEFAULT_PROCESS, RECOMMENDED_PROCESS, runDriverWorker } from './driver-run.mjs';

/** Issue 22.4: the driver process at most 100 MiB RSS idle, 130 MiB at the peak of 50 spawns. */
export const MEMORY_TARGETS = { idleMiB: 100, peakMiB: 130 };
/**
 * Proposed in place of issue 22.4's (not the issue's): the anonymous memory only, which the driver
 * owns. The file-backed pages (the node binary's and librbd's, librados', libvirt's: 84 MiB here,
 * shared and clean) are a floor no process that maps them goes below; see bench/README.md.
 */
export const ANON_TARGETS = { idleMiB: 45, peakMiB: 90 };

export async function caseConcurrency(ctx) {
  const fx = await ctx.fixtures.get(GiB, 'random');
  const out = { glanceImage: fx.id, imageBytes: fx.bytes };

  // ---- A. spawns (driver)
  const job = {
    mode: 'concurrency',
    imageId: fx.id,
    stateDir: join(ctx.tmpDir, 'driver-conc'),
    spawns: ctx.opts.spawns,
    serial: ctx.opts.quick ? 5 : 10,
  };
  // The driver's idle footprint with Node's and glibc's defaults, for comparison with the
  // recommended settings the spawns below run with (a start and one spawn: about 15 s).
  let idleDefaults = null;
  try {
    idleDefaults = (
      await runDriverWorker(
        { mode: 'idle', imageId: fx.id, stateDir: join(ctx.tmpDir, 'driver-idle') },
        { proc: DEFAULT_PROCESS },
      )
    ).memory;
  } catch (err) {
    log(`case 5: idle with the defaults failed: ${err.message}`);
  }
  let r;
  try {
    r = await runDriverWorker(job, { proc: RECOMMENDED_PROCESS });
  } catch (err) {
    r = { error: err.message };
  }
  if (r.missing || r.error) {
    const msg = r.missing ? `not available: driver missing (${r.missing})` : `failed: ${r.error}`;
    log(`case 3/5 spawns: ${msg}`);
    console.log(`\nCase 3: ${job.spawns} concurrent spawns\n  ${msg}`);
    out.spawns = { available: false, reason: r.missing ?? r.error };
    out.memory = { available: false, reason: r.missing ?? r.error };
    console.log(`\nCase 5: peak RSS of the driver during case 3\n  ${msg}`);
  } else {
    const d = r.defineOnly;
    const b = r.boot;
    const rows = [
      [`${job.spawns} spawns of one 1 GiB image`, 'instances/s', 'p50 latency', 'p99 latency', 'wall', 'failed'],
      [
        `disk+XML+define, one at a time (baseline, ${job.serial})`,
        d.serial.perSecond.toFixed(2),
        fmtMs(d.serial.latencyMs.median),
        fmtMs(d.serial.latencyMs.p99),
        '',
        '',
      ],
      [
        `disk+XML+define, ${job.spawns} at once`,
        d.concurrent.perSecond.toFixed(2),
        fmtMs(d.concurrent.latencyMs?.median),
        fmtMs(d.concurrent.latencyMs?.p99),
        fmtMs(d.concurrent.wallMs),
        d.concurrent.failed.length,
      ],
      [
        '  ratio (instances/s, at once / one at a time)',
        fmtRatio(d.concurrent.perSecond / d.serial.perSecond),
        '',
        '',
        '',
        '',
      ],
      [
        `spawn + boot to marker, one at a time (baseline, ${job.serial})`,
        b.serial.perSecond.toFixed(2),
        fmtMs(b.serial.markerMs.median),
        fmtMs(b.serial.markerMs.p99),
        '',
        '',
      ],
      [
        `spawn + boot to marker, ${job.spawns} at once`,
        b.concurrent.perSecond.toFixed(2),
        fmtMs(b.concurrent.markerMs?.median),
        fmtMs(b.concurrent.markerMs?.p99),
        fmtMs(b.concurrent.wallMs),
        b.concurrent.failed.length,
      ],
      [
        '  (spawn() resolved: domain running)',
        '',
        fmtMs(b.concurrent.spawnMs?.median),
        fmtMs(b.concurrent.spawnMs?.p99),
        '',
        '',
      ],
      [
        '  ratio (instances/s, at once / one at a time)',
        fmtRatio(b.concurrent.perSecond / b.serial.perSecond),
        '',
        '',
        '',
        '',
      ],
    ];
    out.spawns = {
      available: true,
      ...r,
      ratios: {
        defineOnlyThroughput: round(d.concurrent.perSecond / d.serial.perSecond),
        bootThroughput: round(b.concurrent.perSecond / b.serial.perSecond),
      },
    };
    delete out.spawns.memory;
    out.spawns.table = table(
      `Case 3: ${job.spawns} concurrent spawns (${ctx.stack.libvirt.accel}); baseline = the same spawns one at a time`,
      rows,
    );
    for (const f of [...d.concurrent.failed, ...b.concurrent.failed]) console.log(`  failure: ${f}`);

    const m = r.memory;
    // Peaks are reset (clear_refs) after the warm-up, so they cover the spawns only; the
    // lifetime peak seen from outside (module loading, start-up) is kept alongside.
    const peak = m.peakBytes;
    out.memory = {
      available: true,
      rssIdleBytes: m.rssIdleBytes,
      rssIdleAnonBytes: m.rssIdleAnonBytes,
      rssIdleFileBytes: m.rssIdleFileBytes,
      peakDefineOnlyBytes: m.peakDefineOnlyBytes,
      peakBootBytes: m.peakBootBytes,
      peakBytes: peak,
      perInstanceBytes: (peak - m.rssIdleBytes) / job.spawns,
      ratioPeakOverIdle: round(peak / m.rssIdleBytes),
      lifetimePeakBytes: r.observedPeakRssBytes,
      peakAnonBytes: r.observedPeakAnonBytes,
      process: RECOMMENDED_PROCESS,
      idleWithDefaults: idleDefaults,
    };
    // Issue 22.4: the driver process's own footprint, idle and at the peak of the spawns.
    const MiBs = (b) => round(b / 1024 ** 2, 1);
    out.memory.targets = {
      'idle RSS MiB': {
        value: MiBs(m.rssIdleBytes),
        target: MEMORY_TARGETS.idleMiB,
        pass: m.rssIdleBytes <= MEMORY_TARGETS.idleMiB * 1024 ** 2,
      },
      [`peak RSS MiB during ${job.spawns} concurrent spawns`]: {
        value: MiBs(peak),
        target: MEMORY_TARGETS.peakMiB,
        pass: peak <= MEMORY_TARGETS.peakMiB * 1024 ** 2,
      },
      'idle anonymous RSS MiB (proposed target)': {
        value: MiBs(m.rssIdleAnonBytes),
        target: ANON_TARGETS.idleMiB,
        pass: m.rssIdleAnonBytes <= ANON_TARGETS.idleMiB * 1024 ** 2,
      },
      [`peak anonymous RSS MiB during ${job.spawns} concurrent spawns (proposed target)`]: {
        value: MiBs(r.observedPeakAnonBytes),
        target: ANON_TARGETS.peakMiB,
        pass: r.observedPeakAnonBytes > 0 && r.observedPeakAnonBytes <= ANON_TARGETS.peakMiB * 1024 ** 2,
      },
    };
    const settings = [
      ...RECOMMENDED_PROCESS.execArgv,
      ...Object.entries(RECOMMENDED_PROCESS.env).map(([k, v]) => `${k}=${v}`),
    ];
    out.memory.table = table(
      `Case 5: driver process RSS (VmRSS / VmHWM of the worker that runs the driver; ${settings.join(' ')})`,
      [
        ['driver RSS', 'bytes'],
        ...(idleDefaults
          ? [
              [
                "idle with Node's and glibc's defaults (anonymous / file-backed)",
                `${fmtBytes(idleDefaults.rssIdleBytes)} (${fmtBytes(idleDefaults.rssIdleAnonBytes)} / ${fmtBytes(idleDefaults.rssIdleFileBytes)})`,
              ],
            ]
          : []),
        ['idle, after start and one warm-up spawn (baseline)', fmtBytes(m.rssIdleBytes)],
        // Why the idle target is out of reach: the file-backed part is the node binary's and the
        // libraries' (librbd, librados, libvirt) pages, shared and clean; the driver owns the rest.
        [
          '  of which anonymous (its own) / file-backed (binary and libraries)',
          `${fmtBytes(m.rssIdleAnonBytes)} / ${fmtBytes(m.rssIdleFileBytes)}`,
        ],
        [`peak during ${job.spawns} concurrent disk+XML+define`, fmtBytes(m.peakDefineOnlyBytes)],
        [`peak during ${job.spawns} concurrent spawns with boot`, fmtBytes(m.peakBootBytes)],
        ['ratio peak / idle', fmtRatio(peak / m.rssIdleBytes)],
        ['added per concurrent instance', fmtBytes(Math.round((peak - m.rssIdleBytes) / job.spawns))],
        ['(lifetime peak incl. start-up, sampled from outside)', fmtBytes(r.observedPeakRssBytes)],
        ['peak anonymous RSS (sampled from outside every 200 ms)', fmtBytes(r.observedPeakAnonBytes)],
      ],
    );
  }

  return out;
}

/** Case 3b: 20 concurrent first-time imports of one image by the qcow2 backend. */
export async function caseQcow2OneFetch(ctx) {
  const fx = await ctx.fixtures.get(GiB, 'random');
  const N = 20;
  let mod;
  try {
    mod = await import('@ephemera/backend-qcow2');
  } catch (err) {
    console.log(`\nCase 3b: not available (@ephemera/backend-qcow2: ${err.message})`);
    return { available: false, reason: err.message };
  }
  const make = async (dir) => {
    const opts = { instancesDir: join(dir, 'instances'), baseDir: join(dir, 'base') };
    return typeof mod.Qcow2Backend.create === 'function' ? mod.Qcow2Backend.create(opts) : new mod.Qcow2Backend(opts);
  };
  const trial = async (n, label) => {
    const dir = join(ctx.tmpDir, `qcow2-${label}`);
    const backend = await make(dir);
    let fetches = 0;
    const disks = Array.from({ length: n }, () => ({ instance: globalThis.crypto.randomUUID(), name: 'disk' }));
    try {
      log(`case 3b: ${n} first-time qcow2 create(s) of one image`);
      const lat = [];
      const { ms } = await timed(() =>
        Promise.all(
          disks.map(async (disk) => {
            const t = performance.now();
            const res = await backend.createFromImage(
              disk,
              glanceSource(ctx.glance, fx.image, { onOpen: () => fetches++ }),
            );
            lat.push(performance.now() - t);
            return res;
          }),
        ),
      );
      return { n, wallMs: ms, latencyMs: summary(lat), fetches };
    } finally {
      for (const d of disks) await backend.remove(d).catch(() => undefined);
      await backend.close?.();
      await rm(dir, { recursive: true, force: true });
    }
  };
  // One create before and one after the 20 (the shared machine's load drifts): baseline = their mean.
  const before = await trial(1, 'single-before');
  const many = await trial(N, 'many');
  const after = await trial(1, 'single-after');
  const single = {
    n: 1,
    fetches: before.fetches,
    wallMs: (before.wallMs + after.wallMs) / 2,
    latencyMs: summary([before.wallMs, after.wallMs]),
    runs: [before, after],
  };
  const res = {
    available: true,
    imageBytes: fx.bytes,
    single,
    concurrent: many,
    ratioWall: round(many.wallMs / single.wallMs),
    bytesFetched: many.fetches * fx.bytes,
  };
  res.table = table(
    `Case 3b: ${N} concurrent first-time creates of one 1 GiB image, qcow2 backend (shared _base cache)`,
    [
      ['', 'Glance fetches', 'bytes fetched', 'wall', 'p50', 'p99'],
      [
        'one create (baseline)',
        single.fetches,
        fmtBytes(single.fetches * fx.bytes),
        fmtMs(single.wallMs),
        fmtMs(single.latencyMs.median),
        fmtMs(single.latencyMs.p99),
      ],
      [
        `${N} creates at once`,
        many.fetches,
        fmtBytes(many.fetches * fx.bytes),
        fmtMs(many.wallMs),
        fmtMs(many.latencyMs.median),
        fmtMs(many.latencyMs.p99),
      ],
      [
        `ratio (${N} at once / one)`,
        fmtRatio(many.fetches / single.fetches),
        '',
        fmtRatio(many.wallMs / single.wallMs),
        '',
        '',
      ],
    ],
  );
  if (many.fetches !== 1) console.log(`  WARNING: expected one fetch, saw ${many.fetches}`);
  return res;
}
