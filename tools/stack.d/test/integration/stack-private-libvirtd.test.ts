// startPrivateLibvirtd: an extra libvirtd (own mount namespace, config and socket) that a test may
// restart or stop without disturbing the stack's shared one.
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
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
  return new Promise((r, j) => execFile('virsh', ['-c', uri, ...args], { timeout: 60_000 }, (e, o, se) => (e ? j(new Error(`virsh ${args.join(' ')}: ${se}`)) : r(String(o)))));
}

const mountNs = (pid: number) => readlinkSync(`/proc/${pid}/ns/mnt`);
const qemuPids = (name: string) => readdirSync('/proc').filter((p) => /^\d+$/.test(p)).map(Number).filter((p) => {
  try { return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(`guest=${name}`); } catch { return false; }
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
    writeFileSync(xml, `<domain type='qemu'><name>${name}</name><memory unit='MiB'>16</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices><video><model type='none'/></video><memballoon model='none'/></devices></domain>\n`);
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
    expect(existsSync(`/proc/${pid}/cmdline`) && readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('libvirtd')).toBe(false);
    const deadline = Date.now() + 10_000;
    while (qemuPids(name).length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    expect(qemuPids(name)).toEqual([]);
  });
});
