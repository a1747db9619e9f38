// `ephemera migrate` (built bin) on the two-host dev stack: boot the counting guest on host 1,
// migrate it to host 2 with the progress bar, back with --from 2 --to 1 --json; each host's state
// is its stack.json state directory (the qcow2/LVM refusal is tested on the driver, in
// packages/driver/test/integration/migrate-refused.test.ts).
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDriver, loadConfig } from '@ephemera/driver';
import { GlanceClient } from '@ephemera/glance';
import { loadStack, readCounts, stackCommand, waitForSerial, type StackInfo } from '@ephemera/testkit';
import { deleteImage, newUuid, uploadGuest } from './support.js';

const exec = promisify(execFile);
const repo = resolve(import.meta.dirname, '..');
const bin = join(repo, 'packages/cli/dist/bin.js');
const uuid = newUuid();
let stack: StackInfo;
let glance: GlanceClient;
let imageId: string | undefined;

async function ephemera(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await exec(process.execPath, [bin, ...args], {
      timeout: 300_000,
      maxBuffer: 16 << 20,
      env: process.env,
    });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

const consoleOn = (host: number): string => join(stack.hosts[host - 1]!.stateDir, 'instances', uuid, 'console.log');

/** The counter goes on (3 more lines) in host `host`'s serial log; returns its counts. */
async function counting(host: number): Promise<number[]> {
  const path = consoleOn(host);
  const before = existsSync(path) ? readCounts(readFileSync(path, 'latin1')).length : 0;
  await waitForSerial(path, (t) => (readCounts(t).length >= before + 3 ? true : undefined), 60_000, 'the counter');
  return readCounts(readFileSync(path, 'latin1'));
}

beforeAll(async () => {
  await stackCommand(['up', '--hosts', '2'], { timeoutMs: 300_000 });
  stack = loadStack();
  glance = new GlanceClient({ url: stack.glance.url });
  await exec('npx', ['nx', 'run', '@ephemera/cli:build'], {
    cwd: repo,
    timeout: 600_000,
    maxBuffer: 64 << 20,
    env: { ...process.env, NX_DAEMON: 'false', NX_NO_CLOUD: 'true', NX_TUI: 'false' },
  });
  imageId = await uploadGuest(glance, `migrate-cli-${uuid.slice(0, 8)}`, { mode: 'count' });
}, 900_000);

afterAll(async () => {
  // Wherever a failed test left the instance: host 1 through the CLI, host 2 through its driver.
  await ephemera('destroy', uuid);
  const h2 = stack.hosts[1]!;
  const { config } = loadConfig({
    stack,
    env: {},
    overrides: { libvirt: { uri: h2.libvirtUri }, stateDir: h2.stateDir, log: { level: 'silent' } },
  });
  const d2 = await createDriver({ config, reconcile: false });
  await d2.destroy(uuid).catch(() => undefined);
  await d2.close();
  await deleteImage(glance, imageId);
});

describe('ephemera migrate', () => {
  it('moves a running instance to host 2 with a progress bar, and back with --from 2 --to 1 --json', async () => {
    const boot = await ephemera('boot', '--image', imageId!, '--name', 'mig-cli', '--uuid', uuid);
    expect(boot.code, boot.stderr).toBe(0);
    const onA = await counting(1);

    const there = await ephemera('migrate', uuid, '--to', '2');
    expect(there.code, there.stderr).toBe(0);
    expect(there.stdout.startsWith(`${uuid} migrated to ${stack.hosts[1]!.libvirtUri} in `)).toBe(true);
    expect(there.stdout).toMatch(/ in \d+ ms \(downtime \d+ ms\)\n$/);
    expect(there.stderr).toMatch(/^migrate 100% /m);
    const onB = await counting(2);
    expect(onB[0]!).toBeGreaterThan(onA.at(-1)!);
    expect(existsSync(consoleOn(1))).toBe(false);

    const back = await ephemera('--json', 'migrate', uuid, '--from', '2', '--to', '1');
    expect(back.code, back.stderr).toBe(0);
    const r = JSON.parse(back.stdout) as { instance: string; from: string; to: string; downtimeMs: number };
    expect(r).toMatchObject({ instance: uuid, from: stack.hosts[1]!.libvirtUri, to: stack.hosts[0]!.libvirtUri });
    expect(r.downtimeMs).toBeGreaterThanOrEqual(0);
    expect(back.stderr).not.toMatch(/migrate \d+%/);
    const again = await counting(1);
    expect(again[0]!).toBeGreaterThan(onB.at(-1)!);
    const shown = JSON.parse((await ephemera('--json', 'show', uuid)).stdout) as { state: string };
    expect(shown.state).toBe('running');
    expect(existsSync(consoleOn(2))).toBe(false);
  }, 600_000);

  it('an unknown host is a usage error (2) naming the hosts', async () => {
    const r = await ephemera('migrate', uuid, '--to', '7');
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--to "7": the dev stack has host\(s\) 1, 2/);
  });
});
