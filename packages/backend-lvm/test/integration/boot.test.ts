// The guest image written onto an LV by LvmBackend boots: under qemu-system-x86_64 directly on
// the disk's block device, and through the dev stack's libvirtd from a <disk type='block'>
// built from diskSource(). The guest prints its marker on COM1 and powers off.
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sourceImageFromBytes, type BlockDiskSource, type DiskRef } from '@ephemera/image-backend';
import { guestImage, loadStack, readMarker, sawPoweroff, waitForMarker, waitForSerial } from '@ephemera/testkit';
import { listLoops } from '../../src/loop.js';
import { createBackendFixture, type BackendFixture } from '../support/backend-fixture.js';

const exec = promisify(execFile);
let fx: BackendFixture;
const domains: string[] = [];

function xmlEscape(s: string): string {
  return s
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/'/g, '&apos;')
    .replace(/"/g, '&quot;');
}

/** The libvirt <disk> element for a block DiskSource (what the XML generator makes of it). */
function diskXml(src: BlockDiskSource): string {
  return `<disk type='block' device='disk'><driver name='qemu' type='${src.format}' cache='none' io='native'/><source dev='${xmlEscape(src.path)}'/><target dev='hda' bus='ide'/></disk>`;
}

beforeAll(async () => {
  fx = await createBackendFixture({ sizeMiB: 128, extentMiB: 4 });
});

afterAll(async () => {
  const { uri } = loadStack().libvirt;
  for (const name of domains) await exec('virsh', ['-c', uri, 'destroy', name]).catch(() => undefined);
  const pv = fx?.tvg.pv;
  const file = fx?.tvg.file;
  await fx?.destroy();
  const left = (await listLoops()).filter((l) => l.backFile === pv || l.backFile === file);
  expect(left).toEqual([]);
});

async function importGuest(marker: string, format: 'raw' | 'qcow2'): Promise<DiskRef> {
  const path = await guestImage({ marker, format });
  const bytes = await readFile(path);
  const d: DiskRef = { instance: randomUUID(), name: 'disk' };
  await fx.backend.createFromImage(d, sourceImageFromBytes(bytes, { diskFormat: format }));
  return d;
}

describe('LVM disk boots the guest', () => {
  it('under qemu-system-x86_64 (TCG) directly on the block device', async () => {
    const marker = `lvm-direct-${randomUUID().slice(0, 8)}`;
    const d = await importGuest(marker, 'raw');
    const src = await fx.backend.diskSource(d);
    expect(src.type).toBe('block');
    const log = join(fx.tvg.dir, 'serial-direct.log');
    const started = performance.now();
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
        `file=${src.path},format=raw,if=ide,index=0,media=disk`,
      ],
      { timeout: 60_000 },
    );
    const text = await readFile(log, 'latin1');
    expect(readMarker(text)).toBe(marker);
    expect(sawPoweroff(text)).toBe(true);
    console.log(`direct TCG boot from ${src.path}: ${Math.round(performance.now() - started)} ms`);
    expect(await fx.backend.remove(d)).toBe(true);
  });

  it('through the stack libvirtd from the diskSource XML (qcow2 image converted onto the LV)', async () => {
    const { uri } = loadStack().libvirt;
    const marker = `lvm-libvirt-${randomUUID().slice(0, 8)}`;
    const d = await importGuest(marker, 'qcow2');
    const src = (await fx.backend.diskSource(d)) as BlockDiskSource;
    expect(src.type).toBe('block');
    const name = `ephemera-lvm-test-${randomUUID().slice(0, 8)}`;
    const log = join(fx.tvg.dir, 'serial-libvirt.log');
    const xml = `<domain type='qemu'><name>${name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <features><acpi/></features><on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot><on_crash>destroy</on_crash>
  <devices>${diskXml(src)}<serial type='file'><source path='${xmlEscape(log)}'/><target port='0'/></serial></devices></domain>`;
    const xmlPath = join(fx.tvg.dir, 'domain.xml');
    await import('node:fs/promises').then((fs) => fs.writeFile(xmlPath, xml));
    const started = performance.now();
    domains.push(name);
    await exec('virsh', ['-c', uri, 'create', xmlPath], { timeout: 60_000 });
    expect(await waitForMarker(log, 60_000)).toBe(marker);
    await waitForSerial(log, (t) => (sawPoweroff(t) ? true : undefined), 60_000, 'power-off');
    // The domain goes away on power-off (transient + on_poweroff destroy).
    const deadline = Date.now() + 30_000;
    for (;;) {
      const { stdout } = await exec('virsh', ['-c', uri, 'list', '--name']);
      if (!stdout.split('\n').includes(name)) break;
      if (Date.now() > deadline) throw new Error(`domain ${name} still running`);
      await new Promise((r) => setTimeout(r, 100));
    }
    console.log(`libvirt boot from ${src.path}: ${Math.round(performance.now() - started)} ms`);
    expect(await fx.backend.remove(d)).toBe(true);
  });
});
