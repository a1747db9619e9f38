// Boots the test guest through the dev stack's libvirtd: from a file disk as <domain type='qemu'>
// (TCG) and as the stack's domainType (KVM when usable), and from RBD clones with cephx.
// Checks the marker, the clean power-off as libvirt sees it (`shut off (shutdown)`), and that
// writes to one clone (new marker, boot counter) reach neither its sibling nor the parent.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BOOT_COUNTER_OFFSET,
  MARKER_OFFSET,
  cephCli,
  guestImage,
  loadStack,
  markerSector,
  readBootCount,
  readMarker,
  waitForMarker,
  type StackInfo,
} from '@ephemera/testkit';

const tmp = mkdtempSync(join(tmpdir(), 'guest-libvirt-'));
const tag = randomBytes(3).toString('hex');
const MARKER = 'EPHEMERA-GUEST libvirt-test';
let stack: StackInfo;
let base = '';
const domains: string[] = [];
const rbdImages: string[] = []; // pool/name, removed in reverse order
const timings: string[] = [];

function exec(
  cmd: string,
  args: string[],
  opts: { input?: Buffer; timeoutMs?: number; label?: string } = {},
): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      cmd,
      args,
      { timeout: opts.timeoutMs ?? 60_000, maxBuffer: 16 << 20 },
      (err, stdout, stderr) => {
        if (err)
          reject(
            new Error(
              `${opts.label ?? `${cmd} ${args.slice(0, 4).join(' ')}`}: ${String(stderr).trim() || err.message}`,
            ),
          );
        else resolve(String(stdout));
      },
    );
    if (opts.input) child.stdin!.end(opts.input);
  });
}
const virsh = (...args: string[]) => exec('virsh', ['-q', '-c', stack.libvirt.uri, ...args]);

function domainXml(name: string, type: string, disk: string, serialLog: string): string {
  return `<domain type='${type}'>
  <name>${name}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot><on_crash>destroy</on_crash>
  <devices>
    ${disk}
    <serial type='file'><source path='${serialLog}'/><target port='0'/></serial>
    <memballoon model='none'/>
  </devices>
</domain>`;
}

function rbdDisk(pool: string, image: string): string {
  const hosts = stack.ceph.monitors.map((m) => `<host name='${m.host}' port='${m.port}'/>`).join('');
  return `<disk type='network' device='disk'>
      <driver name='qemu' type='raw' cache='writeback'/>
      <auth username='${stack.ceph.users.ephemera.id}'><secret type='ceph' uuid='${stack.libvirt.cephSecretUuid}'/></auth>
      <source protocol='rbd' name='${pool}/${image}'>${hosts}</source>
      <target dev='vda' bus='virtio'/>
    </disk>`;
}

function fileDisk(path: string): string {
  return `<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='${path}'/><target dev='vda' bus='virtio'/></disk>`;
}

/** Defines, starts and waits for a persistent domain to shut off; returns its serial log and timings. */
async function bootDomain(name: string, type: string, disk: string, timeoutMs = 120_000) {
  const serialLog = join(tmp, `${name}.log`);
  const xmlPath = join(tmp, `${name}.xml`);
  writeFileSync(xmlPath, domainXml(name, type, disk, serialLog));
  await virsh('define', xmlPath);
  domains.push(name);
  const started = performance.now();
  await virsh('start', name);
  const marker = await waitForMarker(serialLog, timeoutMs);
  const markerMs = performance.now() - started;
  let state = '';
  while (performance.now() - started < timeoutMs) {
    state = (await virsh('domstate', '--reason', name)).trim();
    if (state.startsWith('shut off')) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  const offMs = performance.now() - started;
  return { marker, markerMs, offMs, state, log: readFileSync(serialLog, 'latin1') };
}

async function writeRbd(pool: string, image: string, offset: number, data: Buffer): Promise<void> {
  const u = stack.ceph.users.ephemera;
  const script = [
    'import sys, rados, rbd',
    'conf, user, pool, name, off = sys.argv[1:6]',
    'data = sys.stdin.buffer.read()',
    'with rados.Rados(conffile=conf, name="client." + user) as c:',
    '    with c.open_ioctx(pool) as io:',
    '        with rbd.Image(io, name) as img:',
    '            img.write(data, int(off)); img.flush()',
  ].join('\n');
  await exec('/usr/bin/python3', ['-c', script, u.confPath, u.id, pool, image, String(offset)], {
    input: data,
    label: `librbd write of ${pool}/${image} at ${offset}`,
  });
}

async function readRbd(user: 'admin' | 'ephemera', spec: string, length: number): Promise<Buffer> {
  const out = join(tmp, `export-${randomBytes(4).toString('hex')}.raw`);
  await cephCli(user, ['rbd', 'export', '--no-progress', spec, out]);
  const data = readFileSync(out).subarray(0, length);
  rmSync(out, { force: true });
  return data;
}

beforeAll(async () => {
  stack = loadStack();
  base = await guestImage({ marker: MARKER });
});

afterAll(async () => {
  for (const name of domains.reverse()) {
    const state = await virsh('domstate', name).catch(() => 'gone');
    if (state === 'gone') continue;
    if (!state.startsWith('shut off')) await virsh('destroy', name).catch(() => undefined);
    await virsh('undefine', name).catch(() => undefined);
  }
  for (const spec of rbdImages.reverse()) {
    await cephCli('admin', ['rbd', 'snap', 'unprotect', `${spec}@base`]).catch(() => undefined);
    await cephCli('admin', ['rbd', 'snap', 'purge', '--no-progress', spec]).catch(() => undefined);
    await cephCli('admin', ['rbd', 'rm', '--no-progress', spec]).catch(() => undefined);
  }
  rmSync(tmp, { recursive: true, force: true });
  console.log(`guest boot timings via libvirt (virsh start -> marker / -> shut off):\n  ${timings.join('\n  ')}`);
});

describe('guest image under libvirt', () => {
  const types = () => [...new Set(['qemu', stack.libvirt.domainType])];

  it('boots from a file disk as every usable domain type and shuts off with reason "shutdown"', async () => {
    for (const type of types()) {
      const disk = join(tmp, `file-${type}.raw`);
      writeFileSync(disk, readFileSync(base));
      const r = await bootDomain(`guest-file-${type}-${tag}`, type, fileDisk(disk));
      timings.push(
        `file ${type.padEnd(4)} marker ${(r.markerMs / 1000).toFixed(2)} s, shut off ${(r.offMs / 1000).toFixed(2)} s`,
      );
      expect(r.marker).toBe(MARKER);
      expect(r.state).toBe('shut off (shutdown)');
      expect(readBootCount(r.log)).toBe(1);
      expect(readFileSync(disk).readUInt16LE(BOOT_COUNTER_OFFSET)).toBe(1);
    }
  });

  it('boots RBD clones with cephx; each clone sees only its own writes', async () => {
    const pools = stack.ceph.pools;
    // the parent lives where Glance puts images: client.ephemera may read `images`, not `rbd`
    const parent = `${pools.images}/guest-parent-${tag}`;
    await cephCli('admin', ['rbd', 'import', '--no-progress', base, parent]);
    rbdImages.push(parent);
    await cephCli('admin', ['rbd', 'snap', 'create', `${parent}@base`]);
    await cephCli('admin', ['rbd', 'snap', 'protect', `${parent}@base`]);
    const a = `guest-clone-a-${tag}`;
    const b = `guest-clone-b-${tag}`;
    for (const name of [a, b]) {
      await cephCli('admin', ['rbd', 'clone', `${parent}@base`, `${pools.vms}/${name}`]);
      rbdImages.push(`${pools.vms}/${name}`);
    }
    await writeRbd(pools.vms, b, MARKER_OFFSET, markerSector('EPHEMERA-GUEST clone b'));

    // TCG: the fixed KVM start cost here is ~3-4 s per boot; the file-disk test covers KVM
    const type = 'qemu';
    const ra = await bootDomain(`guest-rbd-a-${tag}`, type, rbdDisk(pools.vms, a));
    const rb = await bootDomain(`guest-rbd-b-${tag}`, type, rbdDisk(pools.vms, b));
    timings.push(
      `rbd  ${type.padEnd(4)} marker ${(ra.markerMs / 1000).toFixed(2)} s, shut off ${(ra.offMs / 1000).toFixed(2)} s`,
    );
    expect(ra.marker).toBe(MARKER);
    expect(rb.marker).toBe('EPHEMERA-GUEST clone b');
    expect(ra.state).toBe('shut off (shutdown)');
    expect(rb.state).toBe('shut off (shutdown)');
    // boot a second time: the counter write landed in clone a only
    const ra2 = await bootDomain(`guest-rbd-a2-${tag}`, type, rbdDisk(pools.vms, a));
    expect(readBootCount(ra.log)).toBe(1);
    expect(readBootCount(rb.log)).toBe(1);
    expect(readBootCount(ra2.log)).toBe(2);

    const head = (spec: string) => readRbd('admin', spec, 2048);
    const [pa, ca, cb] = await Promise.all([
      head(`${parent}@base`),
      head(`${pools.vms}/${a}`),
      head(`${pools.vms}/${b}`),
    ]);
    expect(pa.readUInt16LE(BOOT_COUNTER_OFFSET)).toBe(0);
    expect(readMarker(`${MARKER_PREFIX_LINE(pa)}\n`)).toBe(MARKER);
    expect(ca.readUInt16LE(BOOT_COUNTER_OFFSET)).toBe(2);
    expect(cb.readUInt16LE(BOOT_COUNTER_OFFSET)).toBe(1);
    expect(cb.subarray(MARKER_OFFSET, MARKER_OFFSET + 512).equals(markerSector('EPHEMERA-GUEST clone b'))).toBe(true);
  });
});

/** The marker sector of a disk head rendered as the serial line the guest would print. */
function MARKER_PREFIX_LINE(head: Buffer): string {
  const sector = head.subarray(MARKER_OFFSET, MARKER_OFFSET + 512);
  const end = sector.indexOf(0);
  return `EPHEMERA-MARKER ${sector.subarray(0, end < 0 ? 512 : end).toString('latin1')}`;
}
