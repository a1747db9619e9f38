// Smoke tests of the real dev stack (tools/stack): Ceph RBD with the stack's cephx users, Glance's
// rbd store, and the stack's libvirtd (including a guest booting from an RBD clone through the
// stack's ceph secret). Every test removes what it creates.
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { cephCli, loadStack } from '@ephemera/testkit';

const stack = loadStack();
const tag = `smoke-${process.pid}-${Date.now().toString(36)}`;
const work = mkdtempSync(join(tmpdir(), 'ephemera-stack-smoke-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

function virsh(args: string[], timeoutMs = 60_000): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    execFile('virsh', ['-c', stack.libvirt.uri, ...args], { timeout: timeoutMs }, (err, stdout, stderr) => {
      if (err) reject(new Error(`virsh ${args.join(' ')}: ${String(stderr).trim() || err.message}`));
      else resolvePromise(String(stdout));
    });
  });
}

/** A 1 MiB raw disk whose boot sector prints `line` on COM1 and halts. */
function bootDisk(file: string, line: string): void {
  const code: number[] = [0xba, 0xf8, 0x03]; // mov dx, 0x3f8
  for (const c of Buffer.from(`${line}\n`)) code.push(0xb0, c, 0xee); // mov al, c; out dx, al
  code.push(0xfa, 0xf4, 0xeb, 0xfd); // cli; hlt; jmp $-1
  const disk = Buffer.alloc(1 << 20);
  Buffer.from(code).copy(disk);
  disk[510] = 0x55;
  disk[511] = 0xaa;
  writeFileSync(file, disk);
}

async function removeRbd(user: 'admin' | 'glance' | 'ephemera', spec: string, snaps: string[] = []): Promise<void> {
  for (const snap of snaps) {
    await cephCli(user, ['rbd', 'snap', 'unprotect', `${spec}@${snap}`]).catch(() => {});
    await cephCli(user, ['rbd', 'snap', 'rm', `${spec}@${snap}`]).catch(() => {});
  }
  await cephCli(user, ['rbd', 'rm', '--no-progress', spec]).catch(() => {});
}

describe('dev stack: Ceph', () => {
  it('creates, snapshots, protects and clones an RBD image across pools with the cephx users', async () => {
    const base = `images/${tag}-base`;
    const clone = `vms/${tag}-clone`;
    try {
      await cephCli('glance', ['rbd', 'create', '--size', '16M', base]);
      await cephCli('glance', ['rbd', 'snap', 'create', `${base}@snap`]);
      await cephCli('glance', ['rbd', 'snap', 'protect', `${base}@snap`]);
      await cephCli('ephemera', ['rbd', 'clone', `${base}@snap`, clone]);
      const info = JSON.parse(await cephCli('ephemera', ['rbd', 'info', '--format', 'json', clone]));
      expect(info.parent).toMatchObject({ pool: 'images', image: `${tag}-base`, snapshot: 'snap' });
      expect(info.size).toBe(16 * 2 ** 20);
      // rbd_default_features = 61: layering, exclusive-lock, object-map, fast-diff, deep-flatten
      expect(info.features).toEqual(
        expect.arrayContaining(['layering', 'exclusive-lock', 'object-map', 'fast-diff', 'deep-flatten']),
      );
    } finally {
      await removeRbd('ephemera', clone);
      await removeRbd('glance', base, ['snap']);
    }
    await expect(cephCli('admin', ['rbd', 'info', base])).rejects.toThrow(/No such file or directory/);
  });

  it('does not let client.ephemera write into the images pool', async () => {
    const name = `images/${tag}-denied`;
    try {
      await expect(cephCli('ephemera', ['rbd', 'create', '--size', '1M', name])).rejects.toThrow(
        /Operation not permitted|Permission denied/i,
      );
    } finally {
      await removeRbd('admin', name);
    }
    // ...but it can read there.
    await expect(cephCli('ephemera', ['rbd', 'ls', 'images'])).resolves.toBeTypeOf('string');
  });
});

describe('dev stack: Glance', () => {
  it('stores an uploaded raw image in the rbd store and reports its rbd:// location', async () => {
    const g = stack.glance.url;
    const create = await fetch(`${g}/v2/images`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ name: tag, disk_format: 'raw', container_format: 'bare' }),
    });
    expect(create.status).toBe(201);
    const { id } = (await create.json()) as { id: string };
    try {
      const data = Buffer.alloc(1 << 20, 7);
      const put = await fetch(`${g}/v2/images/${id}/file`, {
        method: 'PUT',
        headers: { 'Content-Type': 'application/octet-stream' },
        body: data,
      });
      expect(put.status).toBe(204);
      const image = (await (await fetch(`${g}/v2/images/${id}`)).json()) as {
        status: string;
        size: number;
        direct_url: string;
        locations: { url: string }[];
      };
      const url = `rbd://${stack.ceph.fsid}/images/${id}/snap`;
      expect(image).toMatchObject({ status: 'active', size: data.length, direct_url: url });
      expect(image.locations.map((l) => l.url)).toEqual([url]);
      // Glance wrote it as client.glance with the stack's default features, snapshot protected.
      const snaps = JSON.parse(await cephCli('admin', ['rbd', 'snap', 'ls', '--format', 'json', `images/${id}`]));
      expect(snaps).toEqual([expect.objectContaining({ name: 'snap', protected: 'true' })]);
    } finally {
      const del = await fetch(`${g}/v2/images/${id}`, { method: 'DELETE' });
      expect(del.status).toBe(204);
    }
    await expect(cephCli('admin', ['rbd', 'info', `images/${id}`])).rejects.toThrow(/No such file or directory/);
  });
});

describe('dev stack: Glance http locations', () => {
  it('accepts an http location on loopback (any port)', async () => {
    const data = Buffer.alloc(64 * 1024, 3);
    const server = createHttpServer((req, res) => {
      res.writeHead(200, { 'Content-Length': data.length, 'Content-Type': 'application/octet-stream' });
      res.end(req.method === 'HEAD' ? undefined : data);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    const g = stack.glance.url;
    const { id } = (await (
      await fetch(`${g}/v2/images`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ name: `${tag}-http`, disk_format: 'raw', container_format: 'bare' }),
      })
    ).json()) as { id: string };
    try {
      const url = `http://127.0.0.1:${port}/${tag}.raw`;
      const patch = await fetch(`${g}/v2/images/${id}`, {
        method: 'PATCH',
        headers: { 'Content-Type': 'application/openstack-images-v2.1-json-patch' },
        body: JSON.stringify([{ op: 'add', path: '/locations/-', value: { url, metadata: {} } }]),
      });
      expect(patch.status, await patch.clone().text()).toBe(200);
      const image = (await (await fetch(`${g}/v2/images/${id}`)).json()) as {
        status: string;
        size: number;
        locations: { url: string }[];
      };
      expect(image).toMatchObject({ status: 'active', size: data.length });
      expect(image.locations.map((l) => l.url)).toEqual([url]);
    } finally {
      await fetch(`${g}/v2/images/${id}`, { method: 'DELETE' });
      await new Promise((r) => server.close(r));
    }
  });
});

describe('dev stack: libvirtd', () => {
  it('answers virsh version', async () => {
    expect(await virsh(['version'])).toMatch(/Running hypervisor: QEMU/);
  });

  it('boots a guest from an RBD clone through the stack ceph secret, then destroys it', async () => {
    const base = `images/${tag}-boot`;
    const clone = `vms/${tag}-boot`;
    const name = `${tag}-guest`;
    const raw = join(work, 'boot.raw');
    const serial = join(work, 'serial.log');
    bootDisk(raw, `HELLO-${tag}`);
    const mon = stack.ceph.monitors[0];
    try {
      await cephCli('glance', ['rbd', 'import', '--no-progress', raw, base]);
      await cephCli('glance', ['rbd', 'snap', 'create', `${base}@snap`]);
      await cephCli('glance', ['rbd', 'snap', 'protect', `${base}@snap`]);
      await cephCli('ephemera', ['rbd', 'clone', `${base}@snap`, clone]);
      const xml = `<domain type='${stack.libvirt.domainType}'>
  <name>${name}</name>
  <memory unit='MiB'>32</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <devices>
    <disk type='network' device='disk'>
      <driver name='qemu' type='raw' cache='writeback'/>
      <auth username='${stack.ceph.users.ephemera.id}'><secret type='ceph' uuid='${stack.libvirt.cephSecretUuid}'/></auth>
      <source protocol='rbd' name='${clone}'><host name='${mon.host}' port='${mon.port}'/></source>
      <target dev='hda' bus='ide'/>
    </disk>
    <serial type='file'><source path='${serial}'/><target port='0'/></serial>
    <video><model type='none'/></video><memballoon model='none'/>
  </devices>
</domain>`;
      writeFileSync(join(work, 'domain.xml'), xml);
      await virsh(['define', join(work, 'domain.xml')]);
      await virsh(['start', name]);
      expect((await virsh(['domstate', name])).trim()).toBe('running');
      const deadline = Date.now() + 60_000;
      let out = '';
      while (Date.now() < deadline) {
        try {
          out = readFileSync(serial, 'utf8');
        } catch {
          /* not yet */
        }
        if (out.includes(`HELLO-${tag}`)) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(out).toContain(`HELLO-${tag}`);
      await virsh(['destroy', name]);
      expect((await virsh(['domstate', name])).trim()).toBe('shut off');
    } finally {
      await virsh(['destroy', name]).catch(() => {});
      await virsh(['undefine', name]).catch(() => {});
      await removeRbd('ephemera', clone);
      await removeRbd('glance', base, ['snap']);
    }
  });
});
