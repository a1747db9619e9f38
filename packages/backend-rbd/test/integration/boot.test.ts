// The guest image boots from RBD disks made by RbdBackend, through the dev stack's libvirtd,
// with the domain XML built by @ephemera/libvirt-xml straight from diskSource() (network disk,
// every monitor, cephx secret of client.ephemera): once from a copy-on-write clone of a Glance
// upload, once from a qcow2 Glance image converted into RBD.
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DiskRef } from '@ephemera/image-backend';
import { domainXml } from '@ephemera/libvirt-xml';
import { guestImage, loadStack, readBootCount, sawPoweroff, waitForMarker, waitForSerial } from '@ephemera/testkit';
import type { RbdBackend } from '../../src/index.js';
import { GlanceImages, newBackend } from '../support/stack.js';

const exec = promisify(execFile);
const glance = new GlanceImages();
let backend: RbdBackend;
let dir: string;
const domains: string[] = [];
const disks: DiskRef[] = [];

beforeAll(async () => {
  backend = await newBackend();
  dir = await mkdtemp(join(tmpdir(), 'ephemera-rbd-boot-'));
});

afterAll(async () => {
  const { uri } = loadStack().libvirt;
  for (const name of domains)
    await exec('virsh', ['-c', uri, 'destroy', name], { timeout: 30_000 }).catch(() => undefined);
  for (const d of disks) await backend.remove(d, { busyTimeoutMs: 60_000 });
  await backend?.close();
  await glance.deleteAll();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** Boots `disk` as a transient TCG domain; resolves with the serial log text after power-off. */
async function boot(disk: DiskRef, label: string): Promise<{ text: string; ms: number }> {
  const { uri } = loadStack().libvirt;
  const name = `ephemera-rbd-test-${label}-${randomUUID().slice(0, 8)}`;
  const log = join(dir, `${name}.log`);
  const xml = domainXml({
    type: 'qemu',
    name,
    uuid: randomUUID(),
    memoryMiB: 64,
    vcpus: 1,
    os: { arch: 'x86_64', machine: 'pc' },
    features: { acpi: true },
    onPoweroff: 'destroy',
    onReboot: 'destroy',
    disks: [
      { source: await backend.diskSource(disk), driver: { cache: 'writeback' }, target: { dev: 'hda', bus: 'ide' } },
    ],
    serialLogPath: log,
    memballoon: false,
  });
  expect(xml).toContain("protocol='rbd'");
  expect(xml).toContain("<secret type='ceph'");
  const xmlPath = join(dir, `${name}.xml`);
  await writeFile(xmlPath, xml);
  const started = performance.now();
  domains.push(name);
  await exec('virsh', ['-c', uri, 'create', xmlPath], { timeout: 60_000 });
  await waitForMarker(log, 60_000);
  await waitForSerial(log, (t) => (sawPoweroff(t) ? true : undefined), 60_000, 'power-off');
  const deadline = Date.now() + 30_000;
  for (;;) {
    const { stdout } = await exec('virsh', ['-c', uri, 'list', '--name'], { timeout: 30_000 });
    if (!stdout.split('\n').includes(name)) break;
    if (Date.now() > deadline) throw new Error(`domain ${name} still running`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return { text: await readFile(log, 'latin1'), ms: Math.round(performance.now() - started) };
}

describe('RBD disks boot the guest', () => {
  it('from a clone of a Glance upload (diskSource -> libvirt-xml -> libvirtd, cephx as client.ephemera)', async () => {
    const marker = `rbd-clone-${randomUUID().slice(0, 8)}`;
    const rec = await glance.upload(await readFile(await guestImage({ marker })));
    const d: DiskRef = { instance: randomUUID(), name: 'disk' };
    disks.push(d);
    const res = await backend.createFromImage(d, glance.source(rec), { sizeBytes: 64 * 1024 * 1024 });
    expect(res.method).toBe('cloned');
    expect((await backend.info(d)).parent).toBe(`images/${rec.id}@snap`);
    const { text, ms } = await boot(d, 'clone');
    expect(text).toContain(`EPHEMERA-MARKER ${marker}`);
    expect(readBootCount(text)).toBe(1); // the guest's write went to the clone...
    console.log(`boot from an RBD clone: ${ms} ms`);
    // ...and a second clone of the same image starts from the pristine parent again.
    const d2: DiskRef = { instance: randomUUID(), name: 'disk' };
    disks.push(d2);
    expect((await backend.createFromImage(d2, glance.source(rec))).method).toBe('cloned');
    expect(readBootCount((await boot(d2, 'clone2')).text)).toBe(1);
    expect(readBootCount((await boot(d, 'clone-again')).text)).toBe(2);
  });

  it('from a qcow2 Glance image converted into RBD', async () => {
    const marker = `rbd-qcow2-${randomUUID().slice(0, 8)}`;
    const rec = await glance.upload(await readFile(await guestImage({ marker, format: 'qcow2' })), 'qcow2');
    const d: DiskRef = { instance: randomUUID(), name: 'disk' };
    disks.push(d);
    const res = await backend.createFromImage(d, glance.source(rec));
    expect(res.method).toBe('imported');
    const { text, ms } = await boot(d, 'qcow2');
    expect(text).toContain(`EPHEMERA-MARKER ${marker}`);
    console.log(`boot from a converted qcow2: ${ms} ms`);
  });
});
