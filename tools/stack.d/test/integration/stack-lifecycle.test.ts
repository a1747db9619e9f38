// The stack's own life cycle, on a SECOND stack in a temporary directory (the shared one is never
// stopped here): concurrent `up` from nothing, idempotent `up`, status, stop/start/restart of each
// service with data surviving an OSD restart, a failing service named with its log, `down`.
// It also proves that two stacks run side by side (ports, libvirtd namespaces).
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cephCli, loadStack, stackCommand, type StackInfo } from '@ephemera/testkit';

// Short path: the libvirt socket path lives under it (unix socket paths are limited to 107 bytes).
const dir = mkdtempSync('/tmp/eph-stack-');
const run = (args: string[]) => stackCommand(args, { dir, timeoutMs: 300_000 });

/** Exit code of `tools/stack status --quiet` for the test stack. */
function statusQuiet(): Promise<number> {
  return new Promise((r) => {
    execFile(
      'bash',
      ['tools/stack', 'status', '--quiet'],
      { env: { ...process.env, EPHEMERA_STACK_DIR: dir }, timeout: 60_000 },
      (err, stdout) => {
        expect(String(stdout)).toBe('');
        r(err ? Number(err.code) : 0);
      },
    );
  });
}

async function statusJson(): Promise<{
  healthy: boolean;
  services: Record<string, { pid: number | null; alive: boolean; answers: boolean }>;
}> {
  return JSON.parse(await run(['status', '--json']).catch((e: { stdout: string }) => e.stdout));
}

/** Processes whose command line mentions the test stack's directory. */
function processesOf(d: string): number[] {
  return readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .map(Number)
    .filter((p) => {
      try {
        return (
          readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(d) &&
          !/\) Z /.test(readFileSync(`/proc/${p}/stat`, 'utf8'))
        );
      } catch {
        return false;
      }
    });
}

let info: StackInfo;

beforeAll(async () => {
  // Two concurrent `up` calls from nothing: the lock serialises them, the second reuses the first's stack.
  const [a, b] = await Promise.all([run(['up']), run(['up'])]);
  expect([a, b].filter((o) => o.startsWith('stack up in')).length).toBe(1);
  expect([a, b].filter((o) => o.startsWith('stack already up')).length).toBe(1);
  info = loadStack(dir);
}, 300_000);

afterAll(async () => {
  if (existsSync(dir)) await run(['down']).catch(() => {});
  rmSync(dir, { recursive: true, force: true });
});

describe('tools/stack life cycle (private stack)', () => {
  it('writes a stack.json that differs from the shared stack and is healthy', async () => {
    const shared = loadStack();
    expect(info.dir).toBe(dir);
    expect(info.glance.port).not.toBe(shared.glance.port);
    expect(info.ceph.monitors[0].port).not.toBe(shared.ceph.monitors[0].port);
    expect(info.ceph.fsid).not.toBe(shared.ceph.fsid);
    expect(info.libvirt.uri).toContain(dir);
    expect(Object.keys(info.pids).sort()).toEqual(['glance', 'libvirtd', 'mgr', 'mon', 'osd']);
    expect(await statusQuiet()).toBe(0);
    const env = await run(['env']);
    expect(env).toContain(`export EPHEMERA_STACK_DIR='${dir}'`);
    expect(env).toContain(`export LIBVIRT_DEFAULT_URI='${info.libvirt.uri}'`);
    // Its libvirtd lives in another mount namespace than the shared stack's.
    expect(readFileSync(`/proc/${info.pids.libvirtd}/cmdline`, 'utf8')).toContain(dir);
    expect((await run(['status'])).split('\n')[0]).toMatch(/^mon\s+pid \d+/);
  });

  it('up on a healthy stack is fast and keeps every pid', async () => {
    const t0 = Date.now();
    expect(await run(['up'])).toMatch(/^stack already up/);
    expect(Date.now() - t0).toBeLessThan(15_000); // ~0.3 s when the machine is idle
    expect(loadStack(dir).pids).toEqual(info.pids);
  });

  it('stops and starts the OSD; data written before survives', async () => {
    await cephCli('admin', ['rbd', 'create', '--size', '8M', 'rbd/survivor'], { stack: info });
    await run(['stop', 'osd']);
    expect(await statusQuiet()).toBe(1);
    const st = await statusJson();
    expect(st.services.osd).toMatchObject({ alive: false, answers: false });
    expect(st.services.mon).toMatchObject({ alive: true, answers: true });
    await run(['start', 'osd']);
    expect(await statusQuiet()).toBe(0);
    expect(await cephCli('admin', ['rbd', 'ls', 'rbd'], { stack: info })).toContain('survivor');
    expect(loadStack(dir).pids.osd).not.toBe(info.pids.osd);
  });

  it('restarts glance and libvirtd (the ceph secret survives)', async () => {
    const before = loadStack(dir).pids;
    await run(['restart', 'glance']);
    await run(['restart', 'libvirtd']);
    const after = loadStack(dir).pids;
    expect(after.glance).not.toBe(before.glance);
    expect(after.libvirtd).not.toBe(before.libvirtd);
    expect((await fetch(`${info.glance.url}/healthcheck`)).status).toBe(200);
    const secrets = await new Promise<string>((r, j) =>
      execFile('virsh', ['-c', info.libvirt.uri, 'secret-list'], (e, o) => (e ? j(e) : r(o))),
    );
    expect(secrets).toContain(info.libvirt.cephSecretUuid);
    expect(secrets).toContain('client.ephemera secret');
  });

  it('up brings back a service that died (and only that one)', async () => {
    const before = loadStack(dir).pids;
    process.kill(before.mgr, 'SIGKILL');
    await new Promise((r) => setTimeout(r, 200));
    expect(await statusQuiet()).toBe(1);
    await run(['up']);
    const after = loadStack(dir).pids;
    expect(after.mgr).not.toBe(before.mgr);
    expect({ ...after, mgr: 0 }).toEqual({ ...before, mgr: 0 });
    expect(await statusQuiet()).toBe(0);
  });

  it('names a service that fails to start, with the tail of its log', async () => {
    await run(['stop', 'glance']);
    // Someone else took Glance's port meanwhile (glance-api retries the bind for 30 s, then exits).
    const squatter = createServer((socket) => socket.destroy());
    await new Promise<void>((r) => squatter.listen(info.glance.port, '127.0.0.1', r));
    try {
      const err = await run(['start', 'glance']).then(
        () => undefined,
        (e: Error) => e,
      );
      expect(err?.message).toMatch(/glance: (exited|not ready)/);
      expect(err?.message).toMatch(/last lines of .*glance/);
    } finally {
      await new Promise((r) => squatter.close(r));
    }
    await run(['start', 'glance']);
    expect(await statusQuiet()).toBe(0);
  });

  it("down stops every process (and the stack's VMs) and removes the directory", async () => {
    const pids = Object.values(loadStack(dir).pids);
    // A running guest of this stack's libvirtd must go too.
    const name = `lifecycle-${process.pid}`;
    const xml = join(tmpdir(), `${name}.xml`);
    writeFileSync(
      xml,
      `<domain type='qemu'><name>${name}</name><memory unit='MiB'>16</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices><video><model type='none'/></video><memballoon model='none'/></devices></domain>\n`,
    );
    await new Promise<void>((r, j) =>
      execFile('virsh', ['-c', info.libvirt.uri, 'create', xml], (e) => (e ? j(e) : r())),
    );
    rmSync(xml);
    const qemu = readdirSync('/proc')
      .filter((p) => /^\d+$/.test(p))
      .map(Number)
      .filter((p) => {
        try {
          return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(`guest=${name}`);
        } catch {
          return false;
        }
      });
    expect(qemu.length).toBe(1);
    const out = await run(['down']);
    expect(out).toMatch(/^stack down in/);
    expect(existsSync(dir)).toBe(false);
    expect(processesOf(dir)).toEqual([]);
    const running = (p: number, text: string) => {
      try {
        return (
          readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(text) &&
          !/\) Z /.test(readFileSync(`/proc/${p}/stat`, 'utf8'))
        );
      } catch {
        return false;
      }
    };
    for (const p of pids) expect(running(p, dir)).toBe(false);
    for (const p of qemu) expect(running(p, `guest=${name}`)).toBe(false);
    // The shared stack is untouched.
    expect(loadStack().pids.mon).toBeGreaterThan(0);
  });
});
