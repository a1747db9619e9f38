#!/usr/bin/env node
// The Ephemera demo, on top of @ephemera/driver (run by `npm run demo` through tools/demo, which
// installs what is missing, builds the packages and brings the dev stack up first):
//  1. build the test guest image (tools/guest-image) and upload it to Glance (rbd store),
//  2. print the resolver's plan for it (clone, and every declined option),
//  3. boot N instances (default 3) in parallel through the driver: each root disk is a
//     copy-on-write RBD clone of the image's snapshot,
//  4. import the same image in full (the RBD backend's streamed import, forceImport) for comparison,
//  5. print each guest's console marker and the time its root disk took (clone) against the full
//     import, the driver's first clone (timed alone before the spawns) and the steady state
//     (median of 5 clones after them), 6. tear the instances down and delete the image (unless --keep).
//   node tools/demo.mjs [--keep] [--size 256M] [--fill random|zero] [--instances N] [--timeout-ms N]
import { randomUUID } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { createDriver, loadConfig, sourceImageFromGlance, uploadImage } from '@ephemera/driver';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const MARKER_PREFIX = 'EPHEMERA-MARKER ';

function parseArgs(argv) {
  const opts = { keep: false, size: '256M', fill: 'random', instances: 3, timeoutMs: 180_000 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--keep') opts.keep = true;
    else if (a === '--size') opts.size = next();
    else if (a === '--fill') opts.fill = next();
    else if (a === '--instances' || a === '--clones') opts.instances = Number(next());
    else if (a === '--timeout-ms') opts.timeoutMs = Number(next());
    else if (a === '-h' || a === '--help') {
      console.log('usage: tools/demo [--keep] [--size 256M] [--fill random|zero] [--instances N] [--timeout-ms N]');
      process.exit(0);
    } else throw new Error(`unknown argument ${JSON.stringify(a)}`);
  }
  if (!Number.isInteger(opts.instances) || opts.instances < 1 || opts.instances > 8)
    throw new Error('--instances must be 1..8');
  if (!['random', 'zero'].includes(opts.fill)) throw new Error('--fill must be random or zero');
  return opts;
}

const t0 = performance.now();
const secs = (ms) => (ms === undefined ? '?' : ms < 1000 ? `${ms.toFixed(0)} ms` : `${(ms / 1000).toFixed(2)} s`);
const log = (msg) => console.log(`[${((performance.now() - t0) / 1000).toFixed(1).padStart(6)}s] ${msg}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function loadStack() {
  const dir = process.env.EPHEMERA_STACK_DIR ? resolve(process.env.EPHEMERA_STACK_DIR) : join(repo, '.stack');
  const file = join(dir, 'stack.json');
  if (!existsSync(file)) throw new Error(`${file} not found: run \`bash tools/stack up\` first`);
  return JSON.parse(readFileSync(file, 'utf8'));
}

function guestImage(marker, size, fill) {
  return new Promise((res, rej) =>
    execFile(
      'bash',
      [join(repo, 'tools/guest-image'), '--marker', marker, '--size', size, '--fill', fill],
      { timeout: 900_000 },
      (err, stdout, stderr) =>
        err
          ? rej(new Error(`tools/guest-image failed: ${String(stderr).trim() || err.message}`))
          : res(String(stdout).trim().split('\n').pop()),
    ),
  );
}

function readMarker(text) {
  const end = text.lastIndexOf('\n');
  for (const line of text.slice(0, Math.max(end, 0)).split('\n')) {
    const at = line.indexOf(MARKER_PREFIX);
    if (at >= 0) return line.slice(at + MARKER_PREFIX.length).replace(/\r$/, '');
  }
  return undefined;
}

/** One clone of the image by the rbd backend (created and removed), its createFromImage time in ms. */
async function timedClone(rbd, driver, imageId) {
  const disk = { instance: randomUUID(), name: 'disk' };
  const source = sourceImageFromGlance(driver.glance, await driver.glance.getImage(imageId));
  const t0 = performance.now();
  const r = await rbd.createFromImage(disk, source);
  const ms = performance.now() - t0;
  await rbd.remove(disk);
  if (r.method !== 'cloned') throw new Error(`expected a clone, got ${r.method} (${r.reason})`);
  return ms;
}

async function waitMarker(driver, uuid, timeoutMs) {
  const start = performance.now();
  for (;;) {
    const text = await readFile(driver.consolePath(uuid), 'latin1').catch(() => '');
    const m = readMarker(text);
    if (m !== undefined) return { marker: m, ms: performance.now() - start, text };
    const err = /EPHEMERA-ERROR [^\r\n]*/.exec(text);
    if (err) throw new Error(`${uuid}: the guest reported ${err[0]}`);
    if (performance.now() - start > timeoutMs)
      throw new Error(`${uuid}: no marker within ${timeoutMs} ms; console: ${JSON.stringify(text.slice(-300))}`);
    await sleep(100);
  }
}

function bar(label, percent) {
  if (!process.stdout.isTTY) return;
  const w = 30;
  const full = Math.round((percent / 100) * w);
  process.stdout.write(
    `\r${label} [${'#'.repeat(full)}${' '.repeat(w - full)}] ${String(Math.floor(percent)).padStart(3)}%\x1b[K`,
  );
  if (percent >= 100) process.stdout.write('\n');
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const stack = loadStack();
  const { config } = loadConfig({
    stack,
    env: {},
    overrides: { log: { level: process.env.EPHEMERA_DEMO_LOG ?? 'warn' } },
  });
  const cleanup = []; // LIFO
  let interrupted = false;
  const onSignal = (sig) => {
    interrupted = true;
    log(`${sig}: stopping, then cleaning up`);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const check = () => {
    if (interrupted) throw new Error('interrupted');
  };

  log(
    `stack ${stack.dir}: ceph ${stack.ceph.fsid}, glance ${stack.glance.url}, libvirt ${stack.libvirt.uri} (${stack.libvirt.domainType})`,
  );
  const driver = await createDriver({ config });
  driver.on('step', (e) => {
    if (e.status === 'done') log(`  ${e.instance.slice(0, 8)} ${e.step.padEnd(14)} ${secs(e.durationMs)}`);
  });
  cleanup.push(['close the driver', () => driver.close()]);
  try {
    // 1. guest image -> Glance
    const marker = `EPHEMERA-GUEST demo ${randomUUID().slice(0, 8)}`;
    const buildStart = performance.now();
    const path = await guestImage(marker, opts.size, opts.fill);
    const size = (await stat(path)).size;
    log(
      `guest image ${path} (${(size / 2 ** 20).toFixed(0)} MiB raw, ${opts.fill} fill) ready in ${secs(performance.now() - buildStart)}`,
    );
    check();
    const upStart = performance.now();
    const image = await uploadImage(driver.glance, path, {
      name: `ephemera-demo-${marker.split(' ').pop()}`,
      onProgress: (e) => bar('upload to Glance', e.percent),
    });
    const uploadMs = performance.now() - upStart;
    cleanup.push([
      `delete Glance image ${image.id}`,
      () => driver.glance.deleteImage(image.id),
      `curl -X DELETE ${stack.glance.url}/v2/images/${image.id}`,
    ]);
    log(`uploaded to Glance as ${image.id} in ${secs(uploadMs)}`);

    // 2. the plan
    console.log(await driver.explain(image.id));
    check();

    // The driver's first clone (the backend warmed its clone format and pools in the background
    // at start), timed alone before the spawns so that parallel spawns do not blur it.
    const rbd = driver.backends.get('rbd');
    const firstClone = await timedClone(rbd, driver, image.id);
    log(`first clone after the driver started: ${secs(firstClone)}`);
    check();

    // 3. boot N instances from CoW clones, in parallel
    const flavor = { name: 'demo.nano', vcpus: 1, memoryMiB: 64, rootGiB: Math.max(1, Math.ceil(size / 2 ** 30)) };
    const uuids = Array.from({ length: opts.instances }, () => randomUUID());
    log(`booting ${uuids.length} instance(s) (${stack.libvirt.domainType}) from copy-on-write clones of ${image.id}`);
    const spawnStart = performance.now();
    const settled = await Promise.allSettled(
      uuids.map((uuid, i) => driver.spawn({ instance: { uuid, name: `demo-${i + 1}` }, image: image.id, flavor })),
    );
    for (const [i, s] of settled.entries()) {
      if (s.status === 'fulfilled')
        cleanup.push([
          `destroy instance demo-${i + 1} (${uuids[i]})`,
          () => driver.destroy(uuids[i]),
          `node packages/cli/dist/bin.js destroy ${uuids[i]}`,
        ]);
    }
    const failed = settled.find((s) => s.status === 'rejected');
    if (failed) throw failed.reason;
    const spawned = settled.map((s) => s.value);
    log(`${uuids.length} spawn(s) done in ${secs(performance.now() - spawnStart)}`);
    check();

    // 4. a full import of the same image, for comparison (no VM: the backend's streamed import)
    const importDisk = { instance: randomUUID(), name: 'disk' };
    const importResult = await rbd.createFromImage(
      importDisk,
      sourceImageFromGlance(driver.glance, await driver.glance.getImage(image.id)),
      {
        forceImport: true,
        onProgress: (e) => bar('full import', e.percent),
      },
    );
    await rbd.remove(importDisk);
    log(
      `full import of the same image: ${secs(importResult.durationMs)} (${importResult.reason ?? importResult.method})`,
    );

    // The steady state: the median of a few more clones, one at a time.
    const steadyRuns = [];
    for (let i = 0; i < 5; i++) steadyRuns.push(await timedClone(rbd, driver, image.id));
    const steady = steadyRuns.sort((a, b) => a - b)[2];
    log(`clones in the steady state: ${steadyRuns.map(secs).join(', ')} (median ${secs(steady)})`);

    // 5. markers and timings
    const markers = await Promise.all(uuids.map((u) => waitMarker(driver, u, opts.timeoutMs)));
    let ok = true;
    console.log('\n== summary ==');
    console.log(
      `image         ${(size / 2 ** 20).toFixed(0)} MiB raw (${opts.fill} fill), Glance ${image.id}, upload ${secs(uploadMs)}`,
    );
    console.log(`full import   ${secs(importResult.durationMs)} (streamed into RBD, verified)`);
    console.log(
      `clone         first ${secs(firstClone)} (the driver's first), steady state ${secs(steady)} (median of 5; ` +
        `${(importResult.durationMs / steady).toFixed(0)}x faster than the import); first / steady ` +
        `${(firstClone / steady).toFixed(2)}x (target <= 2x: ${firstClone <= 2 * steady ? 'PASS' : 'FAIL'})`,
    );
    for (const [i, r] of spawned.entries()) {
      const m = markers[i];
      const good = m.marker === marker && r.rootDisk.method === 'cloned';
      ok &&= good;
      console.log(
        `demo-${i + 1}        root disk ${r.rootDisk.method} in ${secs(r.rootDisk.durationMs)} ` +
          `(${(importResult.durationMs / r.rootDisk.durationMs).toFixed(1)}x faster than the import); ` +
          `spawn ${secs(r.totalMs)}; console: ${MARKER_PREFIX}${m.marker} ${good ? 'OK' : 'FAILED'}`,
      );
    }
    if (!ok) throw new Error('an instance was not cloned or did not print the expected marker');
    console.log(`demo: OK${opts.keep ? ' (kept: instances and the Glance image; see below)' : ''}`);
  } finally {
    const ordered = cleanup.reverse();
    if (!opts.keep || interrupted) {
      let failedCleanup = 0;
      for (const [what, fn] of ordered) {
        try {
          await fn();
          log(`cleanup: ${what}`);
        } catch (err) {
          failedCleanup++;
          log(`cleanup FAILED: ${what}: ${err.message}`);
        }
      }
      if (failedCleanup) process.exitCode = 1;
    } else {
      for (const [what, fn, hint] of ordered) {
        if (what === 'close the driver') await fn();
        else log(`kept: to ${what}, run: ${hint}`);
      }
    }
  }
}

main().catch((err) => {
  console.error(`demo: FAILED: ${err.message}`);
  process.exit(1);
});
