// The guest image (qcow2 in "Glance") goes through Qcow2Backend: fetched into _base, converted
// to raw once, and booted from qcow2 overlays: under qemu-system-x86_64 directly, and through the
// dev stack's libvirtd from domain XML whose <disk> is diskXml(diskSource()) of
// @ephemera/libvirt-xml. The guest prints its marker and boot count on COM1 and powers off; the
// boot counter it keeps on its disk shows that overlays never write into the shared base.
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sourceImageFromBytes, type DiskRef, type SourceImage } from '@ephemera/image-backend';
import { domainXml } from '@ephemera/libvirt-xml';
import {
  guestImage,
  loadStack,
  readBootCount,
  readMarker,
  sawPoweroff,
  waitForMarker,
  waitForSerial,
} from '@ephemera/testkit';
import { createFixture, type Fixture } from '../support/fixture.js';

const exec = promisify(execFile);
let fx: Fixture;
let image: SourceImage;
let marker: string;
const domains: string[] = [];

beforeAll(async () => {
  fx = await createFixture();
  marker = `qcow2-${randomUUID().slice(0, 8)}`;
  const path = await guestImage({ marker, format: 'qcow2' });
  image = sourceImageFromBytes(new Uint8Array(await readFile(path)), { diskFormat: 'qcow2' });
});

afterAll(async () => {
  const { uri } = loadStack().libvirt;
  for (const name of domains) await exec('virsh', ['-c', uri, 'destroy', name]).catch(() => undefined);
  if (fx) {
    for (const d of await fx.backend.list()) await fx.backend.remove(d.disk);
    await fx.backend.cleanupBases({ olderThanMs: 0 });
    await fx.destroy();
  }
});

async function bootDirect(d: DiskRef, log: string): Promise<string> {
  const src = await fx.backend.diskSource(d);
  await exec(
    'qemu-system-x86_64',
    [
      '-machine',
      'pc,accel=tcg',
      '-m',
      '64',
      '-nographic',
      '-nodefaults',
      '-no-user-config',
      '-no-reboot',
      '-serial',
      `file:${log}`,
      '-monitor',
      'none',
      '-net',
      'none',
      '-drive',
      `file=${src.path},format=${src.format},if=ide,index=0,media=disk`,
    ],
    { timeout: 60_000 },
  );
  return readFile(log, 'latin1');
}

async function bootLibvirt(d: DiskRef, log: string): Promise<string> {
  const { uri } = loadStack().libvirt;
  const name = `ephemera-qcow2-test-${randomUUID().slice(0, 8)}`;
  const xml = domainXml({
    type: 'qemu',
    name,
    uuid: randomUUID(),
    memoryMiB: 64,
    vcpus: 1,
    os: { arch: 'x86_64', machine: 'pc', boot: ['hd'] },
    onPoweroff: 'destroy',
    onReboot: 'destroy',
    disks: [{ source: await fx.backend.diskSource(d), target: { dev: 'hda', bus: 'ide' } }],
    serialLogPath: log,
    memballoon: false,
  });
  expect(xml).toContain("type='qcow2'");
  const file = join(fx.root, `${name}.xml`);
  await writeFile(file, xml);
  domains.push(name);
  await exec('virsh', ['-c', uri, 'create', file], { timeout: 60_000 });
  await waitForMarker(log, 60_000);
  await waitForSerial(log, (t) => (sawPoweroff(t) ? true : undefined), 60_000, 'power-off');
  const deadline = Date.now() + 30_000;
  for (;;) {
    const { stdout } = await exec('virsh', ['-c', uri, 'list', '--name']);
    if (!stdout.split('\n').includes(name)) break;
    if (Date.now() > deadline) throw new Error(`domain ${name} still running`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return readFile(log, 'latin1');
}

describe('qcow2 overlay disks boot the guest', () => {
  it('under qemu-system-x86_64 (TCG) directly from the overlay on a raw base converted from qcow2', async () => {
    const d: DiskRef = { instance: randomUUID(), name: 'disk' };
    const res = await fx.backend.createFromImage(d, image);
    expect(res.method).toBe('imported');
    expect((await fx.backend.cachedBase(image.id))!.format).toBe('raw');
    const started = performance.now();
    const text = await bootDirect(d, join(fx.root, 'serial-direct.log'));
    console.log(`direct TCG boot of a qcow2 overlay: ${Math.round(performance.now() - started)} ms`);
    expect(readMarker(text)).toBe(marker);
    expect(readBootCount(text)).toBe(1);
    expect(sawPoweroff(text)).toBe(true);
  });

  it('through the stack libvirtd from diskXml(diskSource()); overlays keep their own writes', async () => {
    const a: DiskRef = { instance: randomUUID(), name: 'disk' };
    const b: DiskRef = { instance: randomUUID(), name: 'disk' };
    expect((await fx.backend.createFromImage(a, image)).method).toBe('cloned');
    expect((await fx.backend.createFromImage(b, image, { sizeBytes: 64 * 1024 * 1024 })).method).toBe('cloned');
    const started = performance.now();
    const first = await bootLibvirt(a, join(fx.root, 'serial-a1.log'));
    console.log(`libvirt (qemu/TCG) boot of a qcow2 overlay: ${Math.round(performance.now() - started)} ms`);
    expect(readMarker(first)).toBe(marker);
    expect(readBootCount(first)).toBe(1);
    const second = await bootLibvirt(a, join(fx.root, 'serial-a2.log'));
    expect(readBootCount(second)).toBe(2);
    // The other overlay of the same base never saw a's boots.
    const other = await bootLibvirt(b, join(fx.root, 'serial-b1.log'));
    expect(readMarker(other)).toBe(marker);
    expect(readBootCount(other)).toBe(1);
    // A snapshot taken now rolls the disk's boot counter back.
    await fx.backend.createSnapshot(a, 'after-two-boots');
    await bootLibvirt(a, join(fx.root, 'serial-a3.log'));
    await fx.backend.rollbackToSnapshot(a, 'after-two-boots');
    expect(readBootCount(await bootLibvirt(a, join(fx.root, 'serial-a4.log')))).toBe(3);
  });
});
