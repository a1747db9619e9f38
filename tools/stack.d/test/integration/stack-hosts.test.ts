// Two compute hosts in one dev stack (issue 18, item 6): `tools/stack up --hosts 2` adds a second
// libvirtd (own namespace, socket, host_uuid, migration address) to the shared stack; a running
// domain with an RBD disk moves live between the two with virsh (`--p2p --tunnelled`), and back.
// `stop|start libvirtd@2` and `status` handle the second host. Every test removes what it creates
// (host 2 itself stays: hosts go only with `down`). A second, private stack is brought up with
// EPHEMERA_STACK_HOSTS=2 from nothing and taken down again.
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  cephCli,
  guestImage,
  loadStack,
  qemuPids,
  readBootCount,
  readCounts,
  stackCommand,
  until,
  waitForSerial,
  type StackInfo,
} from '@ephemera/testkit';

const tag = `hosts-${process.pid}-${Date.now().toString(36)}`;
const work = mkdtempSync(join(tmpdir(), 'ephemera-stack-hosts-'));
let stack: StackInfo;

function virsh(uri: string, args: string[], timeoutMs = 120_000): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    execFile('virsh', ['-q', '-c', uri, ...args], { timeout: timeoutMs }, (err, stdout, stderr) => {
      if (err) reject(new Error(`virsh -c ${uri} ${args.join(' ')}: ${String(stderr).trim() || err.message}`));
      else resolvePromise(String(stdout));
    });
  });
}
const names = async (uri: string, all = false) =>
  (await virsh(uri, ['list', '--name', ...(all ? ['--all'] : [])]))
    .split('\n')
    .map((s) => s.trim())
    .filter(Boolean);

const mountNs = (pid: number) => readlinkSync(`/proc/${pid}/ns/mnt`);

beforeAll(async () => {
  const out = await stackCommand(['up', '--hosts', '2'], { timeoutMs: 300_000 });
  expect(out).toMatch(/^stack (already )?up in/);
  stack = loadStack();
}, 300_000);

afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('tools/stack with two hosts', () => {
  it("lists both hosts in stack.json, host 1 being the stack's libvirt, each with its own identity", async () => {
    expect(stack.hosts.map((h) => h.id)).toEqual([1, 2]);
    const [h1, h2] = stack.hosts;
    expect(h1.libvirtUri).toBe(stack.libvirt.uri);
    expect(h1).toMatchObject({ service: 'libvirtd', pid: stack.pids.libvirtd, stateDir: join(stack.dir, 'ephemera') });
    expect(h2).toMatchObject({
      service: 'libvirtd@2',
      pid: stack.pids['libvirtd@2'],
      stateDir: join(stack.dir, 'host2', 'ephemera'),
    });
    expect(h2.libvirtUri).toBe(
      `qemu+unix:///system?socket=${join(stack.dir, 'host2', 'libvirt', 'sock', 'libvirt-sock')}`,
    );
    expect(h1.hostUuid).not.toBe(h2.hostUuid);
    expect([h1.migrationAddress, h2.migrationAddress]).toEqual(['127.0.0.2', '127.0.0.3']);
    expect(h1.migrationPorts.max).toBeLessThan(h2.migrationPorts.min);
    expect(mountNs(h2.pid!)).not.toBe(mountNs(h1.pid!));
    for (const h of stack.hosts) {
      // The fixed host_uuid is what libvirt reports (migration refuses two hosts with one UUID)...
      expect(await virsh(h.libvirtUri, ['capabilities'])).toContain(`<uuid>${h.hostUuid}</uuid>`);
      // ...and every host has the same ceph secret.
      expect(await virsh(h.libvirtUri, ['secret-list'])).toContain(stack.libvirt.cephSecretUuid);
    }
    const status = JSON.parse(await stackCommand(['status', '--json']));
    expect(status.healthy).toBe(true);
    expect(status.services['libvirtd@2']).toMatchObject({ pid: h2.pid, alive: true, answers: true });
  });

  it('up --hosts 1 and a plain up keep host 2; a bad host count is refused', async () => {
    await stackCommand(['up', '--hosts', '1']);
    await stackCommand(['up']);
    expect(loadStack().hosts.map((h) => h.pid)).toEqual(stack.hosts.map((h) => h.pid));
    for (const bad of ['0', 'two', '9']) {
      await expect(stackCommand(['up', '--hosts', bad])).rejects.toThrow(
        /--hosts: expected a number of hosts from 1 to 8/,
      );
    }
    await expect(stackCommand(['up', '--host', '2'])).rejects.toThrow(/unknown argument "--host"/);
  });

  it('migrates a running domain with an RBD disk live from host 1 to host 2 and back (virsh --p2p --tunnelled, then over the migration addresses)', async () => {
    const [h1, h2] = stack.hosts;
    const base = `${stack.ceph.pools.images}/${tag}-base`;
    const clone = `${stack.ceph.pools.vms}/${tag}-disk`;
    const name = `${tag}-guest`;
    // The counting guest: its counter goes on across a migration and would restart at 0 on a reboot.
    const raw = await guestImage({ marker: 'EPHEMERA-GUEST migrate', mode: 'count' });
    const serial = join(work, 'serial.log');
    const hosts = stack.ceph.monitors.map((m) => `<host name='${m.host}' port='${m.port}'/>`).join('');
    const xml = join(work, 'domain.xml');
    writeFileSync(
      xml,
      `<domain type='${stack.libvirt.domainType}'>
  <name>${name}</name>
  <memory unit='MiB'>32</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <devices>
    <disk type='network' device='disk'>
      <driver name='qemu' type='raw' cache='writeback'/>
      <auth username='${stack.ceph.users.ephemera.id}'><secret type='ceph' uuid='${stack.libvirt.cephSecretUuid}'/></auth>
      <source protocol='rbd' name='${clone}'>${hosts}</source>
      <target dev='hda' bus='ide'/>
    </disk>
    <serial type='file'><source path='${serial}' append='on'/><target port='0'/></serial>
    <video><model type='none'/></video><memballoon model='none'/>
  </devices>
</domain>`,
    );
    const timings: string[] = [];
    const counts = () => readCounts(readFileSync(serial, 'latin1'));
    const migrate = async (from: string, to: string, mode: string[]) => {
      const before = counts().length;
      const t0 = performance.now();
      await virsh(from, ['migrate', '--live', ...mode, '--persistent', '--undefinesource', name, to], 180_000);
      timings.push(`${mode.join(' ') || 'direct'} ${((performance.now() - t0) / 1000).toFixed(1)} s`);
      // Still the same guest, and still counting: 0, 1, 2, ... with no restart, and further on.
      await waitForSerial(
        serial,
        () => (counts().length > before + 3 ? true : undefined),
        30_000,
        'the counter to go on after the migration',
      );
      // One read: the guest keeps writing, so two reads of the log can differ by a line.
      const seen = counts();
      expect(seen).toEqual(seen.map((_, i) => i));
      expect(readBootCount(readFileSync(serial, 'latin1'))).toBe(1);
    };
    const runsOn = async (on: { libvirtUri: string; pid: number | null }, off: { libvirtUri: string }) => {
      expect((await virsh(on.libvirtUri, ['domstate', name])).trim()).toBe('running');
      expect(await virsh(on.libvirtUri, ['dominfo', name])).toMatch(/Persistent:\s+yes/);
      expect(await names(off.libvirtUri, true)).not.toContain(name);
      // One QEMU, started by that host's libvirtd (in its mount namespace).
      await until('the source QEMU to exit', () => qemuPids(name).length === 1);
      const [qemu] = qemuPids(name);
      expect(mountNs(qemu)).toBe(mountNs(on.pid!));
    };
    try {
      await cephCli('glance', ['rbd', 'import', '--no-progress', raw, base]);
      await cephCli('glance', ['rbd', 'snap', 'create', `${base}@snap`]);
      await cephCli('glance', ['rbd', 'snap', 'protect', `${base}@snap`]);
      await cephCli('ephemera', ['rbd', 'clone', `${base}@snap`, clone]);
      await virsh(h1.libvirtUri, ['define', xml]);
      await virsh(h1.libvirtUri, ['start', name]);
      await waitForSerial(serial, () => (counts().length ? true : undefined), 60_000, 'the first counter line');
      await runsOn(h1, h2);

      const tunnelled = ['--p2p', '--tunnelled'];
      await migrate(h1.libvirtUri, h2.libvirtUri, tunnelled);
      await runsOn(h2, h1);
      await migrate(h2.libvirtUri, h1.libvirtUri, tunnelled);
      await runsOn(h1, h2);
      // Not tunnelled: the data goes over TCP to the destination's migration address and ports.
      await migrate(h1.libvirtUri, h2.libvirtUri, ['--p2p']);
      await runsOn(h2, h1);
      await migrate(h2.libvirtUri, h1.libvirtUri, []);
      await runsOn(h1, h2);
      console.log(`virsh migrate --live wall time (1 -> 2, 2 -> 1, 1 -> 2, 2 -> 1): ${timings.join(', ')}`);
    } finally {
      for (const h of stack.hosts) {
        await virsh(h.libvirtUri, ['destroy', name]).catch(() => {});
        await virsh(h.libvirtUri, ['undefine', name]).catch(() => {});
      }
      await cephCli('ephemera', ['rbd', 'rm', '--no-progress', clone]).catch(() => {});
      await cephCli('glance', ['rbd', 'snap', 'unprotect', `${base}@snap`]).catch(() => {});
      await cephCli('glance', ['rbd', 'snap', 'rm', `${base}@snap`]).catch(() => {});
      await cephCli('glance', ['rbd', 'rm', '--no-progress', base]).catch(() => {});
    }
    for (const h of stack.hosts) expect(await names(h.libvirtUri, true)).not.toContain(name);
    await expect(cephCli('admin', ['rbd', 'info', clone])).rejects.toThrow(/No such file or directory/);
  });
});

describe('a new stack with EPHEMERA_STACK_HOSTS=2 (private stack; host 2 stops and starts alone)', () => {
  // Short path: the libvirt socket path lives under it (unix socket paths are limited to 107 bytes).
  // Made in the test, so a run that filters this test out leaves no directory behind.
  let dir = '';
  const run = (args: string[], env: NodeJS.ProcessEnv = {}) =>
    new Promise<string>((resolvePromise, reject) => {
      execFile(
        'bash',
        ['tools/stack', ...args],
        { timeout: 300_000, env: { ...process.env, EPHEMERA_STACK_DIR: dir, ...env } },
        (err, stdout, stderr) => {
          if (err) reject(new Error(`tools/stack ${args.join(' ')}: ${String(stderr).trim() || err.message}`));
          else resolvePromise(String(stdout));
        },
      );
    });
  // Its stdout whatever the exit code (`status` exits non-zero while a service is down).
  const runStdout = (args: string[]) =>
    new Promise<string>((resolvePromise) => {
      execFile(
        'bash',
        ['tools/stack', ...args],
        { timeout: 300_000, env: { ...process.env, EPHEMERA_STACK_DIR: dir } },
        (_e, stdout) => resolvePromise(String(stdout)),
      );
    });
  afterAll(async () => {
    if (!dir) return;
    if (existsSync(dir)) await run(['down']).catch(() => {});
    rmSync(dir, { recursive: true, force: true });
  });

  it('starts both hosts from nothing; down stops both libvirtds and their domains', async () => {
    dir = mkdtempSync('/tmp/eph-2h-');
    const out = await run(['up'], { EPHEMERA_STACK_HOSTS: '2' });
    expect(out).toMatch(/^stack up in .*libvirtd@2 /);
    expect(out).toContain('hosts: 2\n');
    const info = loadStack(dir);
    expect(info.hosts.map((h) => h.service)).toEqual(['libvirtd', 'libvirtd@2']);
    expect(Object.keys(info.pids).sort()).toEqual(['glance', 'libvirtd', 'libvirtd@2', 'mgr', 'mon', 'osd']);
    expect((await run(['status'])).split('\n').find((l) => l.startsWith('libvirtd@2 '))).toMatch(/pid \d+ .* ok$/);
    let h2 = info.hosts[1]!;
    expect(await virsh(h2.libvirtUri, ['secret-list'])).toContain(info.libvirt.cephSecretUuid);

    // Host 2 stops and starts alone (stop|start libvirtd@2) and its secret is back after the start.
    // On this private stack: the shared stack's host 2 carries other test files' migrations.
    const before = loadStack(dir);
    await run(['stop', 'libvirtd@2']);
    const stopped = JSON.parse(await runStdout(['status', '--json']));
    expect(stopped.healthy).toBe(false);
    expect(stopped.services['libvirtd@2']).toMatchObject({ alive: false, answers: false });
    expect(stopped.services.libvirtd).toMatchObject({ pid: before.pids.libvirtd, alive: true, answers: true });
    await run(['start', 'libvirtd@2']);
    const after = loadStack(dir);
    expect(after.pids['libvirtd@2']).not.toBe(before.pids['libvirtd@2']);
    expect(after.pids.libvirtd).toBe(before.pids.libvirtd);
    expect(after.hosts[1].hostUuid).toBe(before.hosts[1].hostUuid);
    expect(await virsh(after.hosts[1].libvirtUri, ['capabilities'])).toContain(
      `<uuid>${after.hosts[1].hostUuid}</uuid>`,
    );
    expect(await virsh(after.hosts[1].libvirtUri, ['secret-list'])).toContain(after.libvirt.cephSecretUuid);
    await expect(run(['stop', 'libvirtd@3'])).rejects.toThrow(/this stack has 2 host\(s\)/);
    info.pids['libvirtd@2'] = after.pids['libvirtd@2']!;
    info.hosts[1] = after.hosts[1]!;
    h2 = after.hosts[1]!;

    const name = `twohost-down-${process.pid}`;
    const xml = join(work, `${name}.xml`);
    writeFileSync(
      xml,
      `<domain type='qemu'><name>${name}</name><memory unit='MiB'>16</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices><video><model type='none'/></video><memballoon model='none'/></devices></domain>\n`,
    );
    await virsh(h2.libvirtUri, ['create', xml]);
    const [qemu] = qemuPids(name);
    expect(mountNs(qemu)).toBe(mountNs(h2.pid!));

    expect(await run(['down'])).toMatch(/^stack down in/);
    expect(existsSync(dir)).toBe(false);
    const running = (p: number) => {
      try {
        return !/\) Z /.test(readFileSync(`/proc/${p}/stat`, 'utf8'));
      } catch {
        return false;
      }
    };
    for (const p of [...Object.values(info.pids), qemu]) expect(running(p)).toBe(false);
  });
});
