// Test helpers on the real dev stack: the backend as client.ephemera, Glance uploads (fetch),
// admin reads through the binding and `rbd ls` through the CLI.
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { connect, type Cluster } from '@ephemera/ceph-rbd-napi';
import { diskId, patternBytes, type DiskRef, type ImageLocation, type SourceImage } from '@ephemera/image-backend';
import { loadStack, type StackInfo } from '@ephemera/testkit';
import { RbdBackend, type RbdBackendOptions } from '../../src/index.js';

const run = promisify(execFile);

export function stack(): StackInfo {
  return loadStack();
}

/** A disk ref of a new instance, recorded in `made` for the file's cleanup. */
export function trackedDisk(made: DiskRef[], name = 'disk'): DiskRef {
  const d = { instance: randomUUID(), name };
  made.push(d);
  return d;
}

/** `size` bytes, mostly zeros: 1 MiB of pattern `seed` at 0 and 1 MiB of `seed + 1` at `secondAt`. */
export function patternedImage(size: number, seed: number, secondAt: number): Uint8Array {
  const b = new Uint8Array(size);
  b.set(patternBytes(1024 * 1024, seed), 0);
  b.set(patternBytes(1024 * 1024, seed + 1), secondAt);
  return b;
}

/** A qcow2 of `raw` made with qemu-img in `dir` (test-side files only; the backend never stages). */
export async function qcow2Of(raw: Uint8Array, dir: string): Promise<Uint8Array> {
  const r = join(dir, `${randomUUID()}.raw`);
  const q = join(dir, `${randomUUID()}.qcow2`);
  await writeFile(r, raw);
  await run('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', r, q], { timeout: 60_000 });
  const bytes = await readFile(q);
  await rm(r);
  await rm(q);
  return bytes;
}

/** The backend as the stack's restricted user (read-only on `images`), with the libvirt secret. */
export function newBackend(extra: Partial<RbdBackendOptions> = {}): Promise<RbdBackend> {
  const s = stack();
  const u = s.ceph.users.ephemera;
  return RbdBackend.create({
    pool: s.ceph.pools.vms,
    confPath: u.confPath,
    clientId: u.id,
    keyringPath: u.keyringPath,
    secretUuid: s.libvirt.cephSecretUuid,
    connectTimeoutMs: 20_000,
    ...extra,
  });
}

/** `directSnapshot` credentials: the Glance user may write the images pool. */
export function glanceDirectSnapshot(): RbdBackendOptions['directSnapshot'] {
  const s = stack();
  const g = s.ceph.users.glance;
  return { pool: s.ceph.pools.images, clientId: g.id, confPath: g.confPath, keyringPath: g.keyringPath };
}

let admin: Promise<Cluster> | undefined;
/** A client.admin connection (shared by a test file; close with `closeAdmin`). */
export function adminCluster(): Promise<Cluster> {
  const a = stack().ceph.users.admin;
  admin ??= connect({ confPath: a.confPath, clientId: a.id, keyringPath: a.keyringPath, timeoutMs: 20_000 });
  return admin;
}
export async function closeAdmin(): Promise<void> {
  if (admin) await (await admin).close();
  admin = undefined;
}

/** Reads `length` bytes at `offset` of a disk in the vms pool, as admin. */
export async function readDisk(disk: DiskRef, length: number, offset = 0): Promise<Uint8Array> {
  const io = await (await adminCluster()).openIoCtx(stack().ceph.pools.vms);
  try {
    const img = await io.open(diskId(disk), { readOnly: true });
    try {
      return await img.read(offset, length);
    } finally {
      await img.close();
    }
  } finally {
    await io.close();
  }
}

/** `rbd ls <pool>` as admin (the CLI, independent of the binding). */
export async function rbdLs(pool: string): Promise<string[]> {
  const a = stack().ceph.users.admin;
  const { stdout } = await run('rbd', ['--conf', a.confPath, '--id', a.id, '--keyring', a.keyringPath, 'ls', pool], {
    timeout: 60_000,
  });
  return stdout.split('\n').filter(Boolean);
}

/** The Glance record fields the tests use. */
export interface GlanceRecord {
  id: string;
  status: string;
  size: number;
  virtual_size: number | null;
  disk_format: string;
  checksum: string | null;
  os_hash_algo: string | null;
  os_hash_value: string | null;
  locations?: { url: string; metadata: Record<string, unknown> }[];
  direct_url?: string;
}

/** Glance images made by a test file; `deleteAll` removes them (after the disks cloned from them). */
export class GlanceImages {
  readonly ids: string[] = [];
  private readonly base = stack().glance.url;

  /** Uploads `bytes` as a new image (rbd store) and returns its active record. */
  async upload(bytes: Uint8Array, diskFormat = 'raw', name = 'ephemera-backend-rbd-test'): Promise<GlanceRecord> {
    const created = await this.json('POST', '/v2/images', { name, disk_format: diskFormat, container_format: 'bare' });
    const id = (created as { id: string }).id;
    this.ids.push(id);
    const put = await fetch(`${this.base}/v2/images/${id}/file`, {
      method: 'PUT',
      headers: { 'content-type': 'application/octet-stream' },
      body: bytes,
    });
    if (put.status !== 204) throw new Error(`glance upload ${id}: HTTP ${put.status} ${await put.text()}`);
    const rec = (await this.json('GET', `/v2/images/${id}`)) as GlanceRecord;
    if (rec.status !== 'active') throw new Error(`glance image ${id} is ${rec.status}`);
    return rec;
  }

  /** A SourceImage over a Glance record: locations from the record, bytes from `/file`. */
  source(rec: GlanceRecord, opts: { failAfterBytes?: number; locations?: ImageLocation[] } = {}): SourceImage {
    const base = this.base;
    const locations = opts.locations ?? (rec.locations ?? []).map((l) => ({ url: l.url, metadata: l.metadata ?? {} }));
    return {
      id: rec.id,
      size: rec.size,
      virtualSize: rec.virtual_size,
      diskFormat: rec.disk_format,
      containerFormat: 'bare',
      checksum: rec.checksum,
      osHashAlgo: rec.os_hash_algo,
      osHashValue: rec.os_hash_value,
      locations,
      async open(o = {}) {
        const res = await fetch(`${base}/v2/images/${rec.id}/file`, o.signal ? { signal: o.signal } : {});
        if (res.status !== 200 || !res.body) throw new Error(`glance download ${rec.id}: HTTP ${res.status}`);
        const body = res.body;
        if (opts.failAfterBytes === undefined) return body;
        const limit = opts.failAfterBytes;
        return (async function* () {
          let seen = 0;
          const reader = body.getReader();
          try {
            for (;;) {
              const { done, value } = await reader.read();
              if (done) return;
              if (seen + value.byteLength > limit) throw new Error(`simulated network failure after ${seen} bytes`);
              seen += value.byteLength;
              yield value;
            }
          } finally {
            await reader.cancel().catch(() => undefined);
          }
        })();
      },
    };
  }

  async deleteAll(): Promise<void> {
    const failures: string[] = [];
    for (const id of this.ids.splice(0)) {
      // 409 while the rbd image is in use: a killed qemu-img's watch lingers until the OSD times
      // it out (~30 s).
      const deadline = Date.now() + 60_000;
      for (;;) {
        const res = await fetch(`${this.base}/v2/images/${id}`, { method: 'DELETE' });
        if (res.status === 204 || res.status === 404) break;
        const text = await res.text();
        if (res.status !== 409 || Date.now() > deadline) {
          failures.push(`${id}: HTTP ${res.status} ${text}`);
          break;
        }
        await new Promise((r) => setTimeout(r, 1_000));
      }
    }
    if (failures.length) throw new Error(`glance cleanup failed: ${failures.join('; ')}`);
  }

  private async json(method: string, path: string, body?: unknown): Promise<unknown> {
    const res = await fetch(`${this.base}${path}`, {
      method,
      headers: body ? { 'content-type': 'application/json' } : {},
      ...(body ? { body: JSON.stringify(body) } : {}),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`glance ${method} ${path}: HTTP ${res.status} ${text}`);
    return JSON.parse(text);
  }
}
