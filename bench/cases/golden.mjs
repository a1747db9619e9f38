// Case 8: golden images (issue 21, item 6), measured in one run on the same stack:
// (a) N instances (20; 5 with --quick) of a 1 GiB qcow2 image (real pseudo-random data, bootable):
//     - the Nova way, per instance, one after another as one nova-compute's spawns of one image
//       are (its image fetch is serialised by a lock per image): download from Glance's API to a
//       local file (hash verified, as Nova's glance download does), `qemu-img info`, `qemu-img
//       convert -t none -O raw -f qcow2` to a second local file, `rbd import --image-format=2`
//       into the instances' pool (Nova's imagebackend.Rbd with a non-raw image: fetch_to_raw,
//       then RBDDriver.import_image); each instance as if it landed on another host (no _base
//       cache shared between them); a derived row gives one host's warm _base cache;
//     - Ephemera: RbdBackend.createFromImage with golden images on, the same N disks one after
//       another (the first converts once into the golden image, the others clone it).
//     Bytes read from Glance's store (its rbd pool, `images`): the pool's read_bytes (`rados df`)
//     around each way, so that one meter counts both paths (glance-api reading the pool to serve a
//     download; Ephemera's golden build reading the snapshot through librbd). Beside it, the bytes
//     of Glance API downloads, counted on the client side (the bytes of every download stream).
//     Ephemera's backend runs as the stack's client.ephemera (read-only on the images pool, as
//     Nova's user): the build serves Glance's snapshot to qemu-img from the backend, which hashes
//     the same reads (one read of the snapshot). One Ephemera clone is then booted by the driver
//     (golden images on, the same client) to the guest's serial marker as a spot check.
// (b) snapshot time of a 1 GiB and an 8 GiB sparse instance disk: see golden-snapshot.mjs.
import { execFile } from 'node:child_process';
import { constants, createWriteStream } from 'node:fs';
import { mkdir, open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { glanceSource } from '../lib/fixtures.mjs';
import { GiB, fmtBytes, fmtMs, fmtRatio, log, round, run, summary, table, timed } from '../lib/util.mjs';
import { caseGoldenSnapshot, markerMs, removeRbdImage } from './golden-snapshot.mjs';

const exec = promisify(execFile);

/** Targets of issue 21, item 6: faster in total, and the image read once instead of once per instance. */
export function goldenTargets(n) {
  return { timeRatio: 1, bytesRatio: round(0.9 * n, 1) };
}

/** Whether `dir` takes O_DIRECT (Nova converts with `-t none` where it does, else `-t writeback`). */
async function supportsDirectIo(dir) {
  const probe = join(dir, `.direct-io-probe-${process.pid}`);
  try {
    const fh = await open(probe, constants.O_CREAT | constants.O_WRONLY | constants.O_DIRECT, 0o600);
    await fh.close();
    return true;
  } catch {
    return false;
  } finally {
    await rm(probe, { force: true });
  }
}

/** A SourceImage over the Glance image whose byte streams are counted in `counter`. */
function countingSource(glance, image, counter) {
  const base = glanceSource(glance, image, { onOpen: () => counter.opens++ });
  return {
    ...base,
    async open(opts) {
      const stream = await base.open(opts);
      return (async function* () {
        for await (const chunk of stream) {
          counter.bytes += chunk.byteLength;
          yield chunk;
        }
      })();
    },
  };
}

/** Removes RADOS objects by name from `pool` (the golden build's lock object), as the admin client. */
async function radosRemove(stack, pool, names) {
  const admin = stack.ceph.users.admin;
  for (const n of names)
    await exec('rados', ['--conf', admin.confPath, '--id', admin.id, '-p', pool, 'rm', n], { timeout: 60_000 }).catch(
      () => undefined,
    );
}

/**
 * Bytes read from `pool` so far (`rados df`, from the OSDs' PG statistics, which reach the mgr
 * every few seconds): read until two readings 4 s apart agree (at most 40 s).
 */
async function poolReadBytes(stack, pool) {
  const admin = stack.ceph.users.admin;
  const read = async () => {
    const { stdout } = await exec('rados', ['--conf', admin.confPath, '--id', admin.id, 'df', '--format', 'json'], {
      timeout: 60_000,
    });
    const p = JSON.parse(stdout).pools.find((x) => x.name === pool);
    if (!p) throw new Error(`rados df: no pool ${pool}`);
    return p.read_bytes;
  };
  let last = await read();
  for (let i = 0; i < 10; i++) {
    await new Promise((r) => setTimeout(r, 4_000));
    const now = await read();
    if (now === last && i > 0) return now;
    last = now;
  }
  return last;
}

/** The golden image of `imageId` in `pool` (and any half-built one), and its build lock's object. */
async function removeGolden(ctx, pool, imageId) {
  const io = await ctx.cluster.openIoCtx(pool);
  const names = (await io.list().finally(() => io.close().catch(() => undefined))).filter((n) =>
    n.startsWith(`ephemera-golden-${imageId}`),
  );
  for (const name of names)
    await removeRbdImage(ctx.cluster, pool, name).catch((e) => log(`case 8: cleanup of ${pool}/${name}: ${e.message}`));
  await radosRemove(ctx.stack, pool, [`ephemera-golden-${imageId}.lock`]);
}

/** Part (a): N root disks the Nova way against Ephemera with golden images. */
export async function caseGoldenSpawn(ctx) {
  const { stack } = ctx;
  const n = ctx.opts.quick ? 5 : 20;
  const vmsPool = stack.ceph.pools.vms;
  const eph = stack.ceph.users.ephemera;
  const dir = join(ctx.tmpDir, 'golden');
  await mkdir(dir, { recursive: true });
  const cacheMode = (await supportsDirectIo(dir)) ? 'none' : 'writeback';
  const fx = await ctx.fixtures.get(GiB, 'random', { format: 'qcow2' });
  const { RbdBackend } = await import('@ephemera/backend-rbd');
  const backend = await RbdBackend.create({
    pool: vmsPool,
    confPath: eph.confPath,
    clientId: eph.id,
    keyringPath: eph.keyringPath,
    secretUuid: stack.libvirt.cephSecretUuid,
    goldenImages: {},
  });
  const disks = [];
  const nova = { ms: [], downloadMs: [], infoMs: [], convertMs: [], importMs: [], bytes: 0, opens: 0 };
  const ours = { ms: [], bytes: 0, opens: 0, methods: [], reasons: [] };
  let spot = null;
  const imagesPool = stack.ceph.pools.images;
  try {
    let before = await poolReadBytes(stack, imagesPool);
    for (let i = 0; i < n; i++) {
      const file = join(dir, `nova-${i}.part`);
      const converted = join(dir, `nova-${i}.converted`);
      const name = `bench-${ctx.tag}-nova-${i}`;
      try {
        const t0 = performance.now();
        const dl = await timed(async () => {
          const d = await ctx.glance.download(fx.id, { image: fx.image });
          nova.opens++;
          const count = new Transform({
            transform(chunk, _enc, cb) {
              nova.bytes += chunk.byteLength;
              cb(null, chunk);
            },
          });
          await pipeline(d.stream, count, createWriteStream(file, { flags: 'wx', mode: 0o600 }));
          await d.result;
        });
        const info = await timed(() => run('qemu-img', ['info', '--output=json', '-f', 'qcow2', file]));
        const conv = await timed(() =>
          run('qemu-img', ['convert', '-t', cacheMode, '-O', 'raw', '-f', 'qcow2', file, converted]),
        );
        const imp = await timed(() =>
          run('rbd', [
            ...['import', '--pool', vmsPool, converted, name, '--image-format=2'],
            ...['--id', eph.id, '--conf', eph.confPath],
          ]),
        );
        nova.ms.push(performance.now() - t0);
        nova.downloadMs.push(dl.ms);
        nova.infoMs.push(info.ms);
        nova.convertMs.push(conv.ms);
        nova.importMs.push(imp.ms);
        log(`case 8: nova way ${i + 1}/${n}: ${fmtMs(nova.ms.at(-1))}`);
      } finally {
        await rm(file, { force: true });
        await rm(converted, { force: true });
        // Not timed: removed at once so that N GiB of copies never sit in the cluster together.
        await removeRbdImage(ctx.cluster, vmsPool, name).catch((e) => log(`case 8: remove ${name}: ${e.message}`));
      }
    }

    let after = await poolReadBytes(stack, imagesPool);
    nova.storeBytes = after - before;
    before = after;
    const counter = { bytes: 0, opens: 0 };
    const src = countingSource(ctx.glance, fx.image, counter);
    for (let i = 0; i < n; i++) {
      const disk = { instance: globalThis.crypto.randomUUID(), name: 'disk' };
      disks.push(disk);
      const r = await timed(() => backend.createFromImage(disk, src));
      ours.ms.push(r.ms);
      ours.methods.push(r.value.method);
      if (i < 2) ours.reasons.push(r.value.reason);
      log(`case 8: ephemera ${i + 1}/${n}: ${r.value.method} in ${fmtMs(r.ms)}`);
    }
    after = await poolReadBytes(stack, imagesPool);
    ours.storeBytes = after - before;
    ours.bytes = counter.bytes;
    ours.opens = counter.opens;
    spot = await spotCheck(ctx, fx);
  } finally {
    for (const d of disks) await backend.remove(d).catch((e) => log(`case 8: remove ${d.instance}: ${e.message}`));
    await backend.close();
    await removeGolden(ctx, vmsPool, fx.id);
    await ctx.fixtures.remove(fx.key);
    await rm(dir, { recursive: true, force: true });
  }

  const sum = (v) => v.reduce((a, b) => a + b, 0);
  const novaTotal = sum(nova.ms);
  const oursTotal = sum(ours.ms);
  // One nova-compute that keeps the converted base in its _base cache: the first instance's
  // download + convert, then an `rbd import` per instance (derived from the steps measured above).
  const novaWarm = nova.downloadMs[0] + nova.infoMs[0] + nova.convertMs[0] + sum(nova.importMs);
  const targets = goldenTargets(n);
  const timeRatio = novaTotal / oursTotal;
  const bytesRatio = ours.storeBytes > 0 ? nova.storeBytes / ours.storeBytes : null;
  const out = {
    image: { id: fx.id, format: 'qcow2', virtualSize: GiB, bytes: fx.bytes },
    instances: n,
    order: 'sequential (one after another, both ways)',
    novaConvertCache: cacheMode,
    nova: {
      totalMs: round(novaTotal, 1),
      perInstance: summary(nova.ms),
      downloadMs: summary(nova.downloadMs),
      infoMs: summary(nova.infoMs),
      convertMs: summary(nova.convertMs),
      importMs: summary(nova.importMs),
      storeReadBytes: nova.storeBytes,
      glanceApiBytes: nova.bytes,
      glanceDownloads: nova.opens,
      warmBaseCacheTotalMs: round(novaWarm, 1),
    },
    ephemera: {
      totalMs: round(oursTotal, 1),
      firstMs: round(ours.ms[0], 1),
      clones: summary(ours.ms.slice(1)),
      methods: ours.methods,
      reasons: ours.reasons,
      storeReadBytes: ours.storeBytes,
      glanceApiBytes: ours.bytes,
      glanceDownloads: ours.opens,
    },
    spotCheck: spot,
    ratios: { time: round(timeRatio), bytes: round(bytesRatio), timeWarmBaseCache: round(novaWarm / oursTotal) },
    targets: {
      timeRatio: { value: round(timeRatio), target: `> ${targets.timeRatio}`, pass: timeRatio > targets.timeRatio },
      bytesRatio: {
        value: round(bytesRatio),
        target: `>= ${targets.bytesRatio} (~${n}x)`,
        pass: bytesRatio !== null && bytesRatio >= targets.bytesRatio,
      },
    },
  };
  const clones = out.ephemera.clones;
  const verdict = (t) => `${t.target} ${t.pass ? 'pass' : 'FAIL'}`;
  out.table = table(
    `Case 8a: ${n} instances of a 1 GiB qcow2 image, root disks one after another${ctx.opts.quick ? ' (--quick: 5, not 20)' : ''}`,
    [
      ['way', 'total', 'per instance', 'read from images pool', 'via Glance API', 'API downloads'],
      [
        'Nova: download + convert + rbd import, per instance',
        fmtMs(novaTotal),
        `median ${fmtMs(out.nova.perInstance.median)}`,
        fmtBytes(nova.storeBytes),
        fmtBytes(nova.bytes),
        nova.opens,
      ],
      ['  Nova, one host with a warm _base cache (derived)', fmtMs(novaWarm), '', '', fmtBytes(nova.bytes / n), 1],
      [
        'Ephemera: golden image (1 conversion) + clones',
        fmtMs(oursTotal),
        `first ${fmtMs(ours.ms[0])}, clone ${fmtMs(clones?.median)}`,
        fmtBytes(ours.storeBytes),
        fmtBytes(ours.bytes),
        ours.opens,
      ],
      ['ratio Nova / Ephemera', fmtRatio(timeRatio), '', fmtRatio(bytesRatio), '', ''],
      ['  warm _base / Ephemera', fmtRatio(novaWarm / oursTotal), '', '', '', ''],
      ['target', verdict(out.targets.timeRatio), '', verdict(out.targets.bytesRatio), '', ''],
    ],
  );
  const steps = ['downloadMs', 'infoMs', 'convertMs', 'importMs'].map(
    (k) => `${k.slice(0, -2)} ${fmtMs(out.nova[k].median)}`,
  );
  console.log(`Nova steps (median): ${steps.join(', ')}; qemu-img convert -t ${cacheMode}`);
  console.log(
    spot
      ? `spot check: driver.spawn (golden images on) to the guest's marker in ${fmtMs(spot.markerMs)}: ${spot.method} (${spot.reason})`
      : 'spot check: not run',
  );
  return out;
}

/** Boots one instance of the image through the driver with golden images on (it reuses the golden image). */
async function spotCheck(ctx, fx) {
  const drv = await import('@ephemera/driver');
  const config = drv.loadConfig({
    stack: ctx.stack,
    env: {},
    overrides: {
      stateDir: join(ctx.tmpDir, 'golden-spot'),
      log: { level: 'warn' },
      images: { rbd: { goldenImages: true } },
    },
  }).config;
  const driver = await drv.createDriver({ config, reconcile: false });
  const uuid = globalThis.crypto.randomUUID();
  try {
    const t0 = performance.now();
    const r = await driver.spawn({
      instance: { uuid, name: 'bench-golden-spot' },
      image: fx.id,
      flavor: { name: 'bench.tiny', vcpus: 1, memoryMiB: 64, rootGiB: 0 },
    });
    const ms = await markerMs(driver.consolePath(uuid), t0);
    log(`case 8: spot check booted to the marker in ${fmtMs(ms)} (${r.rootDisk.method}: ${r.rootDisk.reason})`);
    return { markerMs: round(ms, 1), method: r.rootDisk.method, reason: r.rootDisk.reason };
  } finally {
    await driver.destroy(uuid).catch((e) => log(`case 8: destroy ${uuid}: ${e.message}`));
    await driver.close();
  }
}

/** Case 8: (a) then (b); a failure of one still runs the other, and fails the case. */
export async function caseGolden(ctx) {
  const out = { targets: {} };
  const errors = [];
  for (const [part, fn] of [
    ['spawn', caseGoldenSpawn],
    ['snapshot', caseGoldenSnapshot],
  ]) {
    try {
      out[part] = await fn(ctx);
      for (const [k, t] of Object.entries(out[part].targets ?? {})) out.targets[k] = t;
    } catch (err) {
      log(`case 8 (${part}) failed: ${err.stack ?? err}`);
      errors.push(`${part}: ${err.message}`);
    }
  }
  if (errors.length) throw new Error(errors.join('; '));
  return out;
}
