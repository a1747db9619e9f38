import { randomUUID } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { guestImage, loadStack } from '@ephemera/testkit';
import { isLibvirtError, type Connection, type Domain } from '@ephemera/libvirt-napi';

export function uniqueName(tag: string): string {
  return `lvnapi-${tag}-${randomUUID().slice(0, 8)}`;
}

export function xmlEscape(s: string): string {
  return s
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/'/g, '&apos;')
    .replace(/"/g, '&quot;');
}

/** A private copy of the guest image (with its own marker) and a serial log path, in a temp dir. */
export interface GuestFiles {
  dir: string;
  disk: string;
  serialLog: string;
  marker: string;
  cleanup(): Promise<void>;
}

export async function guestFiles(tag: string): Promise<GuestFiles> {
  const dir = await mkdtemp(join(tmpdir(), `lvnapi-${tag}-`));
  const marker = `lvnapi ${tag} ${randomUUID().slice(0, 8)}`;
  const disk = join(dir, 'disk.raw');
  await guestImage({ marker, out: disk });
  return {
    dir,
    disk,
    serialLog: join(dir, 'serial.log'),
    marker,
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
}

/** Domain XML that boots the guest image from a raw file, serial console to a file. */
export function guestDomainXML(name: string, files: GuestFiles, domainType = loadStack().libvirt.domainType): string {
  // <acpi/> matters: without it SeaBIOS finds no FADT and the guest's APM power-off hangs.
  return `<domain type='${xmlEscape(domainType)}'>
  <name>${xmlEscape(name)}</name>
  <memory unit='MiB'>32</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='${xmlEscape(files.disk)}'/>
      <target dev='hda' bus='ide'/>
    </disk>
    <serial type='file'><source path='${xmlEscape(files.serialLog)}'/><target port='0'/></serial>
    <memballoon model='none'/>
  </devices>
</domain>
`;
}

/** Destroys (if running) and undefines (if persistent) a domain, ignoring "already gone". */
export async function removeDomain(conn: Connection, nameOrDomain: string | Domain): Promise<void> {
  let dom: Domain;
  try {
    dom = typeof nameOrDomain === 'string' ? await conn.lookupByName(nameOrDomain) : nameOrDomain;
  } catch (err) {
    if (isLibvirtError(err, 'VIR_ERR_NO_DOMAIN')) return;
    throw err;
  }
  for (const step of [() => dom.destroy(), () => dom.undefine()]) {
    try {
      await step();
    } catch (err) {
      if (!isLibvirtError(err, 'VIR_ERR_NO_DOMAIN') && !isLibvirtError(err, 'VIR_ERR_OPERATION_INVALID')) throw err;
    }
  }
}

export async function readText(path: string): Promise<string> {
  try {
    return await readFile(path, 'latin1');
  } catch {
    return '';
  }
}
