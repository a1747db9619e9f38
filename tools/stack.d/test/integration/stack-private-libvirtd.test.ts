// startPrivateLibvirtd: an extra libvirtd (own mount namespace, config and socket) that a test may
// restart or stop without disturbing the stack's shared one.
import { execFile, spawn } from 'node:child_process';
import {
  appendFileSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadStack, startPrivateLibvirtd, type PrivateLibvirtd } from '@ephemera/testkit';

const dir = mkdtempSync('/tmp/eph-lv-');
let lv: PrivateLibvirtd | undefined;

afterAll(async () => {
  await lv?.stop().catch(() => {});
  rmSync(dir, { recursive: true, force: true });
});

function virsh(uri: string, args: string[]): Promise<string> {
  return new Promise((r, j) =>
    execFile('virsh', ['-c', uri, ...args], { timeout: 60_000 }, (e, o, se) =>
      e ? j(new Error(`virsh ${args.join(' ')}: ${se}`)) : r(String(o)),
    ),
  );
}

const mountNs = (pid: number) => readlinkSync(`/proc/${pid}/ns/mnt`);
const qemuPids = (name: string) =>
  readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .map(Number)
    .filter((p) => {
      try {
        return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(`guest=${name}`);
      } catch {
        return false;
      }
    });

describe('startPrivateLibvirtd', () => {
  it('runs its own libvirtd: domains survive a restart, stop removes them', async () => {
    const shared = loadStack();
    lv = await startPrivateLibvirtd(dir);
    expect(lv.uri).toBe(`qemu+unix:///system?socket=${dir}/sock/libvirt-sock`);
    expect(await virsh(lv.uri, ['version'])).toMatch(/Running hypervisor: QEMU/);
    expect(mountNs(lv.pid)).not.toBe(mountNs(shared.pids.libvirtd));
    expect(mountNs(lv.pid)).not.toBe(mountNs(process.pid));
    // The stack's ceph secret is defined here too (same UUID), so RBD disks work the same way.
    expect(await virsh(lv.uri, ['secret-list'])).toContain(shared.libvirt.cephSecretUuid);

    const name = `private-${process.pid}`;
    const xml = join(dir, 'domain.xml');
    writeFileSync(
      xml,
      `<domain type='qemu'><name>${name}</name><memory unit='MiB'>16</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices><video><model type='none'/></video><memballoon model='none'/></devices></domain>\n`,
    );
    await virsh(lv.uri, ['create', xml]);
    expect((await virsh(lv.uri, ['domstate', name])).trim()).toBe('running');
    // It is not visible to the shared libvirtd.
    expect(await virsh(shared.libvirt.uri, ['list', '--all', '--name'])).not.toContain(name);
    const [qemu] = qemuPids(name);
    expect(qemu).toBeGreaterThan(0);

    const oldPid = lv.pid;
    await lv.restart();
    expect(lv.pid).not.toBe(oldPid);
    expect((await virsh(lv.uri, ['domstate', name])).trim()).toBe('running');
    expect(qemuPids(name)).toEqual([qemu]);

    const pid = lv.pid;
    await lv.stop();
    lv = undefined;
    expect(
      existsSync(`/proc/${pid}/cmdline`) && readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('libvirtd'),
    ).toBe(false);
    const deadline = Date.now() + 10_000;
    while (qemuPids(name).length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    expect(qemuPids(name)).toEqual([]);
  });

  it('stop kills only processes of its own libvirtd, even in a namespace it recorded that is now another one', async () => {
    // The kernel reuses a freed mount namespace's inode number at once: after a restart, the first
    // libvirtd's namespace (still recorded) can be another stack's. Simulated here: a foreign
    // process in its own mount namespace, recorded in this libvirtd's namespace list.
    const d = mkdtempSync('/tmp/eph-lv2-');
    const foreign = spawn('unshare', ['--mount', '--propagation', 'private', '--', 'sleep', '300'], {
      stdio: 'ignore',
    });
    let mine: PrivateLibvirtd | undefined;
    try {
      let ns = '';
      const deadline = Date.now() + 10_000;
      // unshare execs sleep in the new namespace: wait until the pid's namespace differs from ours.
      while (
        Date.now() < deadline &&
        ((ns = (() => {
          try {
            return mountNs(foreign.pid!);
          } catch {
            return '';
          }
        })()) === '' ||
          ns === mountNs(process.pid))
      ) {
        await new Promise((r) => setTimeout(r, 20));
      }
      expect(ns).not.toBe(mountNs(process.pid));
      mine = await startPrivateLibvirtd(d);
      appendFileSync(join(d, 'namespaces'), `${ns}\n`);
      const pid = mine.pid;
      await mine.stop();
      mine = undefined;
      expect(
        existsSync(`/proc/${pid}/cmdline`) && readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('libvirtd'),
      ).toBe(false);
      // The foreign process was left alone.
      expect(foreign.exitCode).toBeNull();
      expect(readFileSync(`/proc/${foreign.pid}/cmdline`, 'utf8')).toContain('sleep');
    } finally {
      await mine?.stop().catch(() => {});
      foreign.kill('SIGKILL');
      rmSync(d, { recursive: true, force: true });
    }
  });
});
