#!/usr/bin/env node
// The driver side of cases 2, 3 and 5, in a process of its own so that its memory is the
// driver's alone: `node bench/cases/driver-worker.mjs '<json>'`. Progress goes to stderr; the
// last stdout line is the JSON result ({ missing } when the driver cannot run yet).
//   { mode: 'boot', imageId, stateDir, cloneReps, importReps }
//   { mode: 'concurrency', imageId, stateDir, spawns, serial }
//   { mode: 'idle', imageId, stateDir }: RSS after start and the warm-up spawn only
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { loadStack, log, procRss, summary } from '../lib/util.mjs';

const job = JSON.parse(process.argv[2]);
const stack = loadStack();
const flavor = { vcpus: 1, memoryMiB: 64, rootGiB: 0 };
/** The driver's spawn steps on the clone path, in order (its step events; older drivers lack some). */
const SPAWN_STEPS = ['preflight', 'resolve', 'root-disk', 'secret', 'xml', 'define', 'start'];
const say = (m) => log(`[driver ${job.mode}] ${m}`);
const done = (obj) => {
  process.stdout.write(JSON.stringify(obj) + '\n');
  process.exit(0);
};

let drv;
try {
  drv = await import('@ephemera/driver');
} catch (err) {
  done({ missing: `@ephemera/driver cannot be loaded (${err.message.split('\n')[0]})` });
}
if (typeof drv.createDriverContainer !== 'function')
  done({ missing: '@ephemera/driver does not export createDriverContainer yet' });
const { domainXml } = await import('@ephemera/libvirt-xml');
// timeouts.startMs: 50 KVM guests starting at once on 2 cores take longer than the default 60 s
// to be reported running here (a measured finding: 5 of 50 timed out once); the benchmark
// measures throughput, so it waits up to 5 minutes (job.startTimeoutMs).
const config = drv.loadConfig({
  stack,
  env: {},
  overrides: { stateDir: job.stateDir, log: { level: 'warn' }, timeouts: { startMs: job.startTimeoutMs ?? 300_000 } },
}).config;
let driver;
try {
  ({ driver } = await drv.createDriverContainer({ config }));
} catch (err) {
  done({ missing: `the driver cannot start here (${err.message.split('\n')[0]})` });
}

/** Milliseconds until the guest's marker line shows in its serial log. */
async function waitMarker(path, t0, timeoutMs = 180_000) {
  for (;;) {
    let text = '';
    try {
      text = await readFile(path, 'latin1');
    } catch {}
    if (/EPHEMERA-MARKER [^\r\n]*\r?\n/.test(text)) return performance.now() - t0;
    if (/EPHEMERA-ERROR/.test(text)) throw new Error(`guest error in ${path}: ${text.slice(-200)}`);
    if (performance.now() - t0 > timeoutMs) throw new Error(`no marker in ${path} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Every instance this worker made (gc and clean-up never touch anything else: the stack is shared). */
const mine = new Set();

/** spawn() until the guest printed its marker. */
async function spawnToMarker(opts = {}) {
  const uuid = globalThis.crypto.randomUUID();
  mine.add(uuid);
  const t0 = performance.now();
  const r = await driver.spawn({ instance: uuid, image: job.imageId, flavor, ...opts });
  const spawnMs = performance.now() - t0;
  let markerMs;
  try {
    markerMs = await waitMarker(r.instance.consolePath, t0);
  } catch (err) {
    // A committed instance whose guest never printed: destroyed here, so the run leaves nothing.
    await driver.destroy(uuid).catch((e) => say(`destroy ${uuid}: ${e.message}`));
    throw err;
  }
  return { uuid, spawnMs, markerMs, method: r.rootDisk.method, timings: r.timings };
}

async function destroyAll(uuids, width = 6) {
  const list = [...uuids];
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (list.length) {
        const u = list.shift();
        await driver.destroy(u).catch((e) => say(`destroy ${u}: ${e.message}`));
      }
    }),
  );
}

/** Resets the peak RSS (VmHWM) of this process (Linux >= 4.0). */
async function resetPeak() {
  await writeFile('/proc/self/clear_refs', '5').catch(() => undefined);
}

try {
  // Warm-up (not timed): defines the libvirt ceph secret once, connects, probes the clone format.
  say('warm-up spawn');
  const w = await spawnToMarker();
  await driver.destroy(w.uuid);

  if (job.mode === 'idle') {
    const m = procRss();
    await driver.close();
    done({ memory: { rssIdleBytes: m.rss, rssIdleAnonBytes: m.anon, rssIdleFileBytes: m.file } });
  }

  if (job.mode === 'boot') {
    const runs = { clone: [], import: [] };
    const order = [];
    for (let i = 0; i < Math.max(job.cloneReps, job.importReps); i++) {
      if (i < job.importReps) order.push('import');
      if (i < job.cloneReps) order.push('clone');
    }
    for (const kind of order) {
      say(`${kind} spawn ${runs[kind].length + 1}`);
      const r = await spawnToMarker({ forceImport: kind === 'import' });
      await driver.destroy(r.uuid);
      const want = kind === 'import' ? 'imported' : 'cloned';
      if (r.method !== want) throw new Error(`expected ${want}, the driver ${r.method} the root disk`);
      runs[kind].push(r);
    }
    // Each spawn's own steps (the driver's step timings), the rest of spawn() (journal, instance
    // directory, annotation, record) and the guest's boot after spawn() returned.
    const stepsOf = (r) => {
      const s = Object.fromEntries(SPAWN_STEPS.map((k) => [k, r.timings[k] ?? 0]));
      s.other = Math.max(0, r.spawnMs - SPAWN_STEPS.reduce((a, k) => a + s[k], 0));
      s.boot = r.markerMs - r.spawnMs;
      return s;
    };
    const pick = (k) => ({
      toMarkerMs: summary(runs[k].map((r) => r.markerMs)),
      spawnMs: summary(runs[k].map((r) => r.spawnMs)),
      rootDiskMs: summary(runs[k].map((r) => r.timings['root-disk'] ?? 0)),
      startMs: summary(runs[k].map((r) => r.timings.start ?? 0)),
      steps: Object.fromEntries(
        [...SPAWN_STEPS, 'other', 'boot'].map((s) => [s, summary(runs[k].map((r) => stepsOf(r)[s]))]),
      ),
      shares: Object.fromEntries(
        [...SPAWN_STEPS, 'other', 'boot'].map((s) => [
          s,
          summary(runs[k].map((r) => stepsOf(r)[s] / r.markerMs)).median,
        ]),
      ),
    });
    done({ clone: pick('clone'), import: pick('import') });
  }

  // ---- concurrency (case 3) and memory (case 5)
  const backend = driver.backends.get(config.images.type);
  const image = await driver.glance.getImage(job.imageId);
  const xmlDir = job.stateDir;
  /** Root disk + XML + define, as spawn does them, without starting the domain. */
  async function defineOnly() {
    const uuid = globalThis.crypto.randomUUID();
    mine.add(uuid);
    const t0 = performance.now();
    await driver.plan(job.imageId, backend.name);
    const disk = { instance: uuid, name: 'disk' };
    const made = await backend.createFromImage(disk, drv.sourceImageFromGlance(driver.glance, image), {});
    const source = await backend.diskSource(disk);
    const xml = domainXml({
      type: config.libvirt.virtType,
      name: driver.domainName(uuid),
      uuid,
      memoryMiB: flavor.memoryMiB,
      vcpus: flavor.vcpus,
      os: { arch: 'x86_64', machine: config.libvirt.machineType, boot: ['hd'] },
      features: { acpi: true, apic: true },
      onPoweroff: 'destroy',
      disks: [
        {
          source,
          driver: {
            cache: config.disk.cacheMode,
            discard: backend.capabilities.discard ? config.disk.discard : 'ignore',
          },
          target: { dev: 'vda', bus: config.disk.bus },
        },
      ],
      serialLogPath: join(xmlDir, `${uuid}.log`),
      memballoon: false,
    });
    await driver.libvirt.defineXML(xml);
    return { uuid, ms: performance.now() - t0, method: made.method };
  }
  async function undefineAll(uuids) {
    for (const u of uuids) {
      try {
        await (await driver.libvirt.lookupByUUID(u)).undefine();
      } catch (e) {
        say(`undefine ${u}: ${e.message}`);
      }
      await backend.remove({ instance: u, name: 'disk' }).catch((e) => say(`remove ${u}: ${e.message}`));
    }
  }

  const idle = procRss();
  const rssIdle = idle.rss;
  const peaks = {};
  const result = { spawns: job.spawns, serial: job.serial };

  // A. disk + XML + define, serial then all at once
  await resetPeak();
  say(`define-only: ${job.serial} serial`);
  const serialDef = [];
  for (let i = 0; i < job.serial; i++) serialDef.push(await defineOnly());
  await undefineAll(serialDef.map((r) => r.uuid));
  say(`define-only: ${job.spawns} at once`);
  let t0 = performance.now();
  const conc = await Promise.allSettled(Array.from({ length: job.spawns }, () => defineOnly()));
  const concWall = performance.now() - t0;
  const ok = conc.filter((c) => c.status === 'fulfilled').map((c) => c.value);
  await undefineAll(ok.map((r) => r.uuid));
  peaks.defineOnly = procRss().hwm;
  result.defineOnly = {
    serial: {
      latencyMs: summary(serialDef.map((r) => r.ms)),
      perSecond: serialDef.length / (serialDef.reduce((a, r) => a + r.ms, 0) / 1000),
    },
    concurrent: {
      latencyMs: summary(ok.map((r) => r.ms)),
      wallMs: concWall,
      perSecond: ok.length / (concWall / 1000),
      failed: conc
        .filter((c) => c.status === 'rejected')
        .map((c) => String(c.reason?.message ?? c.reason))
        .slice(0, 5),
      methods: [...new Set(ok.map((r) => r.method))],
    },
  };

  // B. full spawn with boot (to the guest's serial marker), serial then all at once
  await resetPeak();
  say(`boot: ${job.serial} serial`);
  const serialBoot = [];
  for (let i = 0; i < job.serial; i++) {
    const r = await spawnToMarker();
    serialBoot.push(r);
    await driver.destroy(r.uuid);
  }
  say(`boot: ${job.spawns} at once`);
  t0 = performance.now();
  const concB = await Promise.allSettled(Array.from({ length: job.spawns }, () => spawnToMarker()));
  const concBWall = performance.now() - t0;
  const okB = concB.filter((c) => c.status === 'fulfilled').map((c) => c.value);
  peaks.boot = procRss().hwm;
  await destroyAll(okB.map((r) => r.uuid));
  // A failed spawn rolls itself back; gc only ever looks at this run's instances (the pool is shared).
  await driver.gc({ remove: true, instances: [...mine] }).catch(() => undefined);
  const sumMs = (rs, k) => rs.reduce((a, r) => a + r[k], 0);
  result.boot = {
    serial: {
      spawnMs: summary(serialBoot.map((r) => r.spawnMs)),
      markerMs: summary(serialBoot.map((r) => r.markerMs)),
      perSecond: serialBoot.length / (sumMs(serialBoot, 'markerMs') / 1000),
    },
    concurrent: {
      spawnMs: summary(okB.map((r) => r.spawnMs)),
      markerMs: summary(okB.map((r) => r.markerMs)),
      wallMs: concBWall,
      perSecond: okB.length / (concBWall / 1000),
      failed: concB
        .filter((c) => c.status === 'rejected')
        .map((c) => String(c.reason?.message ?? c.reason))
        .slice(0, 5),
      methods: [...new Set(okB.map((r) => r.method))],
    },
  };
  result.memory = {
    rssIdleBytes: rssIdle,
    rssIdleAnonBytes: idle.anon,
    rssIdleFileBytes: idle.file,
    peakDefineOnlyBytes: peaks.defineOnly,
    peakBootBytes: peaks.boot,
    peakBytes: Math.max(peaks.defineOnly, peaks.boot),
  };
  await driver.close();
  done(result);
} catch (err) {
  say(`failed: ${err.stack ?? err}`);
  await driver.gc?.({ remove: true, instances: [...mine] }).catch(() => undefined);
  await driver.close().catch(() => undefined);
  process.stdout.write(JSON.stringify({ error: String(err.message ?? err) }) + '\n');
  process.exit(1);
}
