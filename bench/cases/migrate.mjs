// Case 6: live migration of a running RBD instance between the stack's two hosts (issue 19.7),
// against a cold move of the same guest (power off on one host, start on the other), for guests of
// 64, 256 and 1024 MiB of RAM. The guest is the counting one (`EPHEMERA-COUNT n` every 100 ms on
// COM1, never powers off): "the guest prints again" is the first counter line on the destination.
//   live: driver.migrate(A -> B), direct (QEMU to QEMU over TCP, the default); time from the call
//         to the first new counter line in B's log; downtime from libvirt's completed job statistics.
//   tunnelled: the way back, B -> A, with B's `libvirt.migrationTunnelled` on (the data relayed by
//         both libvirtds): its downtime against the direct one, same guest, same run.
//   cold: power off on A (libvirt destroy), define and start the same domain on B from the same
//         RBD disks (virsh, the guest reboots and counts from 0); time to its first counter line.
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { guestImage } from '../lib/fixtures.mjs';
import { fmtMs, fmtRatio, log, median, round, table } from '../lib/util.mjs';

const exec = promisify(execFile);
const COUNT = /EPHEMERA-COUNT (\d+)\r?\n/g;
const counts = (path) =>
  existsSync(path) ? [...readFileSync(path, 'latin1').matchAll(COUNT)].map((m) => Number(m[1])) : [];

async function virsh(uri, args) {
  return (await exec('virsh', ['-q', '-c', uri, ...args], { timeout: 120_000 })).stdout;
}

/** Resolves with the time (ms since t0) at which `path` has more than `after` counter lines. */
async function firstCountAfter(path, after, t0, timeoutMs = 300_000) {
  for (;;) {
    if (counts(path).length > after) return performance.now() - t0;
    if (performance.now() - t0 > timeoutMs) throw new Error(`no new counter line in ${path} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

export async function caseMigrate(ctx) {
  const hosts = ctx.stack.hosts ?? [];
  if (hosts.length < 2) return { available: false, reason: 'the stack has one host (bench/run brings up two)' };
  const drv = await import('@ephemera/driver');
  const sizes = ctx.opts.quick ? [64, 256] : [64, 256, 1024];
  const reps = ctx.opts.quick ? 1 : 3;
  const path = await guestImage({ size: 1 << 20, fill: 'zero', marker: `bench-mig-${ctx.tag}`, mode: 'count' });
  const img = await ctx.glance.createImage({
    name: `bench-${ctx.tag}-count`,
    disk_format: 'raw',
    container_format: 'bare',
  });
  await ctx.glance.upload(img.id, await readFile(path));
  await ctx.glance.waitForStatus(img.id, ['active'], { timeoutMs: 120_000 });
  const make = async (i) => {
    const stateDir = join(ctx.tmpDir, `migrate-host-${i + 1}`);
    const config = drv.loadConfig({
      stack: ctx.stack,
      env: {},
      overrides: {
        stateDir,
        host: { id: `bench-${ctx.tag}-${i + 1}` },
        libvirt: { uri: hosts[i].libvirtUri, migrationTunnelled: i === 1 },
        log: { level: 'warn' },
      },
    }).config;
    return drv.createDriver({ config, reconcile: false });
  };
  const a = await make(0);
  const b = await make(1);
  const coldDir = join(ctx.tmpDir, 'migrate-cold');
  await mkdir(coldDir, { recursive: true });
  const rows = [];
  const out = { sizes: {} };
  try {
    for (const mib of sizes) {
      const live = [];
      const downtime = [];
      const tunnelled = [];
      const total = [];
      const cold = [];
      for (let r = 0; r < reps; r++) {
        const uuid = globalThis.crypto.randomUUID();
        await a.spawn({
          instance: { uuid, name: `bench-mig-${mib}` },
          image: img.id,
          flavor: { name: `bench.${mib}`, vcpus: 1, memoryMiB: mib, rootGiB: 0 },
        });
        try {
          const logA = a.consolePath(uuid);
          await firstCountAfter(logA, 3, performance.now());
          // Live: A -> B.
          const seenB = counts(b.consolePath(uuid)).length;
          const t0 = performance.now();
          const res = await a.migrate(uuid, { to: b });
          total.push(res.durationMs);
          live.push(await firstCountAfter(b.consolePath(uuid), seenB, t0));
          if (res.downtimeMs !== undefined) downtime.push(res.downtimeMs);
          // Tunnelled: B -> A.
          const back = await b.migrate(uuid, { to: a });
          if (back.downtimeMs !== undefined) tunnelled.push(back.downtimeMs);
          // Cold: power off on A, start the same domain (same RBD disks) on B.
          const inst = await a.get(uuid);
          await firstCountAfter(logA, counts(logA).length, performance.now());
          const xml = await virsh(hosts[0].libvirtUri, ['dumpxml', '--inactive', inst.domainName]);
          const coldLog = join(coldDir, `${uuid}.log`);
          const moved = xml.replace(/(<serial type='file'>\s*<source path=')[^']*'/, `$1${coldLog}'`);
          const xmlPath = join(coldDir, `${uuid}.xml`);
          await writeFile(xmlPath, moved);
          const t1 = performance.now();
          await virsh(hosts[0].libvirtUri, ['destroy', inst.domainName]);
          await virsh(hosts[1].libvirtUri, ['create', xmlPath]);
          cold.push(await firstCountAfter(coldLog, 0, t1));
          await virsh(hosts[1].libvirtUri, ['destroy', inst.domainName]).catch(() => undefined);
        } finally {
          await b.destroy(uuid).catch(() => undefined);
          await a.destroy(uuid).catch(() => undefined);
        }
      }
      const m = {
        liveToPrintMs: round(median(live), 1),
        liveTotalMs: round(median(total), 1),
        downtimeMs: downtime.length ? round(median(downtime), 1) : null,
        tunnelledDowntimeMs: tunnelled.length ? round(median(tunnelled), 1) : null,
        coldToPrintMs: round(median(cold), 1),
        n: reps,
      };
      m.coldOverLive = round(m.coldToPrintMs / m.liveToPrintMs);
      m.tunnelledOverDirect =
        m.downtimeMs && m.tunnelledDowntimeMs ? round(m.tunnelledDowntimeMs / m.downtimeMs) : null;
      m.downtimeTargetMet = mib > 256 ? null : m.downtimeMs !== null && m.downtimeMs <= 100;
      out.sizes[mib] = m;
      log(
        `case 6: ${mib} MiB: live ${fmtMs(m.liveToPrintMs)} (downtime ${fmtMs(m.downtimeMs)}, tunnelled ${fmtMs(m.tunnelledDowntimeMs)}), cold ${fmtMs(m.coldToPrintMs)}`,
      );
      rows.push([
        `${mib} MiB RAM`,
        fmtMs(m.liveTotalMs),
        fmtMs(m.downtimeMs),
        fmtMs(m.tunnelledDowntimeMs),
        m.tunnelledOverDirect === null ? '-' : fmtRatio(m.tunnelledOverDirect),
        fmtMs(m.liveToPrintMs),
        fmtMs(m.coldToPrintMs),
        fmtRatio(m.coldOverLive),
        m.downtimeTargetMet === null ? '-' : m.downtimeTargetMet ? 'pass' : 'FAIL',
      ]);
    }
  } finally {
    await b.close();
    await a.close();
    await ctx.glance.deleteImage(img.id).catch(() => undefined);
  }
  out.table = table(`Case 6: live migration vs cold move (${ctx.stack.libvirt.accel}, median of ${reps})`, [
    [
      'guest',
      'migration total',
      'downtime (libvirt)',
      'tunnelled downtime',
      'tunnelled / direct',
      'live: to print again',
      'cold: to print again',
      'cold / live',
      'downtime <= 100 ms',
    ],
    ...rows,
  ]);
  out.targets = {};
  for (const [mib, m] of Object.entries(out.sizes))
    if (Number(mib) <= 256)
      out.targets[`downtimeMs${mib}MiB`] = { value: m.downtimeMs, target: 100, pass: m.downtimeTargetMet === true };
  return out;
}
