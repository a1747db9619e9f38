// Case 7: encrypted disks against plain ones, per backend (issue 23.6), measured in one run:
//   spawn: driver.spawn to the guest's serial marker, plain and with `encryption: { format: 'luks' }`
//          (RBD: an encrypted root disk is a streamed copy, not a clone; qcow2: an encrypted overlay
//          on the plain base; LVM: QEMU's LUKS on the LV);
//   disk:  `qemu-img convert` (16 coroutines, cache=none) writes then reads 256 MiB on the medium
//          of each backend (an RBD image, a qcow2 file, a block
//          device), plain against QEMU's LUKS1 (AES-XTS), the engine the guests use.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, open, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { guestImage } from '../lib/fixtures.mjs';
import { fmtMs, fmtRatio, log, median, round, table } from '../lib/util.mjs';

const exec = promisify(execFile);
const lvmEnv = { ...process.env, LVM_SUPPRESS_FD_WARNINGS: '1', LC_ALL: 'C' };
const BENCH_BYTES = 256 * 1024 * 1024;

/** The attached loop devices (`losetup --json --list`): name and back-file of each. */
async function loopDevices() {
  const { stdout } = await exec('losetup', ['--json', '--list'], { timeout: 30_000 });
  return stdout.trim() ? JSON.parse(stdout).loopdevices : [];
}

/** A throwaway volume group on a loop device over a sparse file (as the e2e tests make one). */
async function scratchVg(dir, sizeMiB) {
  const file = join(dir, 'pv.img');
  const fh = await open(file, 'w');
  await fh.truncate(sizeMiB * 1024 * 1024);
  await fh.close();
  const vg = `ephbench${process.pid}`;
  const { detectDeviceMapper } = await import('@ephemera/backend-lvm');
  const lvmArgs = (await detectDeviceMapper()) ? [] : ['--driverloaded', 'n'];
  const pv = (await exec('losetup', ['--find', '--show', file], { timeout: 30_000 })).stdout.trim();
  const destroy = async () => {
    for (const l of await loopDevices())
      if (l['back-file'] === pv && l.name !== pv) await exec('losetup', ['-d', l.name]).catch(() => {});
    await exec('vgremove', [...lvmArgs, '--devices', pv, '-f', '-y', vg], { env: lvmEnv }).catch(() => {});
    await exec('pvremove', [...lvmArgs, '--devices', pv, '-y', pv], { env: lvmEnv }).catch(() => {});
    await exec('losetup', ['-d', pv]).catch(() => {});
  };
  try {
    await exec('pvcreate', [...lvmArgs, '--devices', pv, '-y', pv], { env: lvmEnv, timeout: 60_000 });
    await exec('vgcreate', [...lvmArgs, '--devices', pv, '-s', '4m', vg, pv], { env: lvmEnv, timeout: 60_000 });
  } catch (e) {
    await destroy();
    throw e;
  }
  return { vg, pv, destroy };
}

/** Milliseconds from t0 until the marker line is in the serial log at `path`. */
async function markerMs(path, t0, timeoutMs = 300_000) {
  for (;;) {
    const text = existsSync(path) ? readFileSync(path, 'latin1') : '';
    if (/EPHEMERA-MARKER [^\r\n]*\r?\n/.test(text)) return performance.now() - t0;
    if (performance.now() - t0 > timeoutMs) throw new Error(`no marker in ${path} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/**
 * Write then read throughput (MiB/s) of one image given as --image-opts, with `qemu-img convert`
 * (`qemu-img bench` takes no `--object`, so it cannot open a LUKS image): write = a page-cached
 * file of random bytes into the image (`-n`, 16 coroutines out of order, cache=none on the target,
 * `-S 0`: every byte written); read = the image into QEMU's null driver (cache=none on the source).
 */
async function qemuBench(imageOpts, { secretFile, source }) {
  const obj = secretFile ? ['--object', `secret,id=s0,file=${secretFile}`] : [];
  const sink = `driver=null-co,size=${BENCH_BYTES}`;
  const mibs = async (args) => {
    const t0 = performance.now();
    await exec('qemu-img', ['convert', ...obj, '-n', '-m', '16', '-W', '-S', '0', ...args], { timeout: 600_000 });
    return BENCH_BYTES / 2 ** 20 / ((performance.now() - t0) / 1000);
  };
  const write = await mibs(['-f', 'raw', '-t', 'none', '--target-image-opts', source, imageOpts]);
  const read = await mibs(['-T', 'none', '--image-opts', '--target-image-opts', imageOpts, sink]);
  return { write, read };
}

export async function caseEncryption(ctx) {
  const drv = await import('@ephemera/driver');
  const reps = ctx.opts.quick ? 1 : 3;
  const dir = join(ctx.tmpDir, 'encryption');
  await mkdir(dir, { recursive: true });
  const vg = await scratchVg(dir, 2048);
  const path = await guestImage({ size: 64 * 2 ** 20, fill: 'random', marker: `bench-crypt-${ctx.tag}` });
  const img = await ctx.glance.createImage({
    name: `bench-${ctx.tag}-crypt`,
    disk_format: 'raw',
    container_format: 'bare',
  });
  await ctx.glance.upload(img.id, readFileSync(path));
  await ctx.glance.waitForStatus(img.id, ['active'], { timeoutMs: 120_000 });
  const config = drv.loadConfig({
    stack: ctx.stack,
    env: {},
    overrides: {
      stateDir: join(dir, 'state'),
      log: { level: 'warn' },
      images: { type: 'qcow2', enabled: ['lvm', 'rbd'], lvm: { volumeGroup: vg.vg, devices: [vg.pv] } },
    },
  }).config;
  const driver = await drv.createDriver({ config, reconcile: false });
  const out = { backends: {} };
  const rows = [];
  const admin = ctx.stack.ceph.users.admin;
  try {
    for (const backend of ['rbd', 'qcow2', 'lvm']) {
      const spawn = { plain: [], encrypted: [] };
      for (let r = 0; r < reps; r++)
        for (const kind of r % 2 ? ['encrypted', 'plain'] : ['plain', 'encrypted']) {
          const uuid = globalThis.crypto.randomUUID();
          const t0 = performance.now();
          try {
            await driver.spawn({
              instance: { uuid, name: `bench-crypt-${backend}` },
              image: img.id,
              backend,
              flavor: { name: 'bench.tiny', vcpus: 1, memoryMiB: 64, rootGiB: 0 },
              ...(kind === 'encrypted' ? { encryption: { format: 'luks' } } : {}),
            });
            spawn[kind].push(await markerMs(driver.consolePath(uuid), t0));
          } finally {
            await driver.destroy(uuid).catch((e) => log(`case 7: destroy ${uuid}: ${e.message}`));
          }
        }

      // The medium of each backend, plain and LUKS, with a throwaway 256 MiB image on it.
      const key = join(dir, 'bench.key');
      await writeFile(key, randomBytes(32).toString('base64url'), { mode: 0o600 });
      const name = `bench-${ctx.tag}-crypt-io`;
      let plainOpts;
      let luksOpts;
      let cleanup;
      const source = join(dir, 'random.raw');
      if (!existsSync(source)) await writeFile(source, randomBytes(BENCH_BYTES));
      if (backend === 'rbd') {
        const rbd = (image) =>
          `file.driver=rbd,file.pool=${ctx.stack.ceph.pools.vms},file.image=${image},file.user=${admin.id},file.conf=${admin.confPath}`;
        const target = (image) => `rbd:${ctx.stack.ceph.pools.vms}/${image}:id=${admin.id}:conf=${admin.confPath}`;
        await exec('qemu-img', ['create', '-f', 'raw', target(`${name}-plain`), String(BENCH_BYTES)]);
        await exec('qemu-img', [
          ...['create', '-f', 'luks', '--object', `secret,id=s0,file=${key}`],
          ...['-o', 'key-secret=s0,iter-time=50', target(`${name}-luks`), String(BENCH_BYTES)],
        ]);
        plainOpts = `driver=raw,${rbd(`${name}-plain`)}`;
        luksOpts = `driver=luks,key-secret=s0,${rbd(`${name}-luks`)}`;
        cleanup = async () => {
          const vms = await ctx.cluster.openIoCtx(ctx.stack.ceph.pools.vms);
          for (const n of [`${name}-plain`, `${name}-luks`]) await vms.remove(n).catch(() => {});
        };
      } else if (backend === 'qcow2') {
        const p = join(dir, 'plain.qcow2');
        const l = join(dir, 'luks.qcow2');
        await exec('qemu-img', ['create', '-f', 'qcow2', p, String(BENCH_BYTES)]);
        await exec('qemu-img', [
          ...['create', '-f', 'qcow2', '--object', `secret,id=s0,file=${key}`],
          ...['-o', 'encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=50', l, String(BENCH_BYTES)],
        ]);
        plainOpts = `driver=qcow2,file.driver=file,file.filename=${p}`;
        luksOpts = `driver=qcow2,encrypt.key-secret=s0,file.driver=file,file.filename=${l}`;
        cleanup = async () => {
          await rm(p, { force: true });
          await rm(l, { force: true });
        };
      } else {
        // LVM's medium is a block device: here a loop device, as the LVM backend maps an LV on a
        // machine without device-mapper (see ../shared/notes/machine.md).
        const devs = [];
        for (const f of ['plain.blk', 'luks.blk']) {
          const fh = await open(join(dir, f), 'w');
          await fh.truncate(BENCH_BYTES + 8 * 2 ** 20);
          await fh.close();
          devs.push((await exec('losetup', ['--find', '--show', join(dir, f)], { timeout: 30_000 })).stdout.trim());
        }
        await exec('qemu-img', [
          ...['create', '-f', 'luks', '--object', `secret,id=s0,file=${key}`],
          ...['-o', 'key-secret=s0,iter-time=50', devs[1], String(BENCH_BYTES)],
        ]);
        // A raw layer with `size`: the device is larger than the 256 MiB the other media hold.
        plainOpts = `driver=raw,size=${BENCH_BYTES},file.driver=host_device,file.filename=${devs[0]}`;
        luksOpts = `driver=raw,size=${BENCH_BYTES},file.driver=luks,file.key-secret=s0,file.file.driver=host_device,file.file.filename=${devs[1]}`;
        cleanup = async () => {
          // A device still held (a qemu-img just exiting) survives one detach: retry until it is gone.
          const ours = (l) => devs.includes(l.name) && String(l['back-file']).startsWith(`${dir}/`);
          for (let i = 0; i < 25; i++) {
            const left = (await loopDevices()).filter(ours).map((l) => l.name);
            if (left.length === 0) break;
            for (const d of left) await exec('losetup', ['-d', d]).catch(() => {});
            await new Promise((r) => setTimeout(r, 200));
          }
          for (const f of ['plain.blk', 'luks.blk']) await rm(join(dir, f), { force: true });
        };
      }
      let io;
      try {
        io = {
          plain: await qemuBench(plainOpts, { source }),
          encrypted: await qemuBench(luksOpts, { secretFile: key, source }),
        };
      } finally {
        await cleanup();
        await rm(key, { force: true });
      }
      const m = {
        spawnPlainMs: round(median(spawn.plain), 1),
        spawnEncryptedMs: round(median(spawn.encrypted), 1),
        writeMiBs: { plain: round(io.plain.write, 1), encrypted: round(io.encrypted.write, 1) },
        readMiBs: { plain: round(io.plain.read, 1), encrypted: round(io.encrypted.read, 1) },
        n: reps,
      };
      m.ratios = {
        spawnEncryptedOverPlain: round(m.spawnEncryptedMs / m.spawnPlainMs),
        writeEncryptedOverPlain: round(io.encrypted.write / io.plain.write),
        readEncryptedOverPlain: round(io.encrypted.read / io.plain.read),
      };
      out.backends[backend] = m;
      log(`case 7: ${backend}: spawn ${fmtMs(m.spawnPlainMs)} plain, ${fmtMs(m.spawnEncryptedMs)} encrypted`);
      rows.push([
        backend,
        fmtMs(m.spawnPlainMs),
        fmtMs(m.spawnEncryptedMs),
        fmtRatio(m.ratios.spawnEncryptedOverPlain),
        `${m.writeMiBs.plain} / ${m.writeMiBs.encrypted}`,
        fmtRatio(m.ratios.writeEncryptedOverPlain),
        `${m.readMiBs.plain} / ${m.readMiBs.encrypted}`,
        fmtRatio(m.ratios.readEncryptedOverPlain),
      ]);
    }
  } finally {
    await driver.close();
    await ctx.glance.deleteImage(img.id).catch(() => undefined);
    await vg.destroy();
  }
  out.table = table(`Case 7: encrypted vs plain disks (${ctx.stack.libvirt.accel}, spawn median of ${reps})`, [
    [
      'backend',
      'spawn plain',
      'spawn encrypted',
      'enc / plain',
      'write MiB/s plain / enc',
      'enc / plain',
      'read MiB/s plain / enc',
      'enc / plain',
    ],
    ...rows,
  ]);
  return out;
}
