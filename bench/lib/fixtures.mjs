// Test images for the benchmarks: built by tools/guest-image (cached), put into the stack's
// Glance once per run, removed at the end.
import { createReadStream, openSync, readSync, closeSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { GiB, MiB, log, repo, run, timed } from './util.mjs';

/** Builds (or reuses) a guest image; resolves to its path. */
export async function guestImage({ size, fill, marker, format = 'raw', mode }) {
  const argv = [
    join(repo, 'tools', 'guest-image'),
    '--size',
    String(size),
    '--fill',
    fill,
    '--marker',
    marker,
    '--format',
    format,
    ...(mode ? ['--mode', mode] : []),
  ];
  const { stdout } = await run('bash', argv, { timeoutMs: 1_800_000 });
  return stdout.trim().split('\n').pop();
}

/** Human label of a size (`256 MiB`, `1 GiB`). */
export const sizeLabel = (bytes) => (bytes >= GiB ? `${bytes / GiB} GiB` : `${bytes / MiB} MiB`);

/**
 * The image set of a run. Images with real (pseudo-random) data are uploaded through Glance's
 * API (Glance's rbd store writes them, snapshots and protects `snap`, and records the
 * `rbd://fsid/images/<id>/snap` location and the sha512). The mostly sparse image (64 GiB, its
 * first 4 KiB are the guest's boot code) is written straight into the images pool with
 * librbd and registered in Glance by location, as an operator importing a big image would:
 * pushing 64 GiB of zeros through glance-api would take the better part of an hour here.
 */
export class Fixtures {
  /** @param {{ glance: import('@ephemera/glance').GlanceClient, admin: any, stack: any, tag: string }} o */
  constructor({ glance, cluster, stack, tag }) {
    this.glance = glance;
    this.cluster = cluster;
    this.stack = stack;
    this.tag = tag;
    /** @type {Map<string, any>} key -> { id, image, path, bytes, sparse, uploadMs } */
    this.images = new Map();
  }

  /** A raw image of `size` bytes in Glance; `fill` random (real data) or zero (sparse). */
  async get(size, fill = 'random', { format = 'raw' } = {}) {
    const key = `${size}-${fill}-${format}`;
    if (this.images.has(key)) return this.images.get(key);
    const marker = `EPHEMERA-BENCH ${sizeLabel(size)} ${fill}`;
    log(`fixture: building guest image ${sizeLabel(size)} ${fill} ${format}`);
    const path = await guestImage({ size, fill, marker, format });
    const fileBytes = statSync(path).size;
    const id = globalThis.crypto.randomUUID();
    const name = `bench-${this.tag}-${sizeLabel(size).replace(' ', '')}-${fill}-${format}`;
    let uploadMs;
    if (fill === 'zero' && format === 'raw' && size > 4 * GiB) {
      ({ ms: uploadMs } = await timed(() => this.#registerSparse(id, name, path, size)));
      log(
        `fixture: ${name} written to ${this.stack.ceph.pools.images}/${id} and registered by location in ${(uploadMs / 1000).toFixed(1)} s`,
      );
    } else {
      log(`fixture: uploading ${name} (${sizeLabel(fileBytes)}) to Glance`);
      await this.glance.createImage({ id, name, disk_format: format, container_format: 'bare' });
      this.images.set(key, { id, name, path, pending: true });
      ({ ms: uploadMs } = await timed(() =>
        this.glance.upload(id, createReadStream(path, { highWaterMark: 4 * MiB })),
      ));
      log(`fixture: uploaded in ${(uploadMs / 1000).toFixed(1)} s`);
    }
    const image = await this.glance.getImage(id);
    const entry = {
      key,
      id,
      name,
      path,
      bytes: image.size,
      virtualSize: size,
      fill,
      format,
      image,
      uploadMs,
      fileBytes,
    };
    this.images.set(key, entry);
    return entry;
  }

  async #registerSparse(id, name, path, size) {
    const pool = this.stack.ceph.pools.images;
    const head = Buffer.alloc(4096);
    const fd = openSync(path, 'r');
    try {
      readSync(fd, head, 0, 4096, 0);
    } finally {
      closeSync(fd);
    }
    const io = await this.cluster.openIoCtx(pool);
    await io.create(id, size);
    this.images.set(`${size}-zero-raw`, { id, name, path, pending: true, rbdOnly: true });
    const img = await io.open(id);
    try {
      await img.write(0, head);
      await img.flush();
      await img.createSnapshot('snap');
      await img.protectSnapshot('snap');
    } finally {
      await img.close();
    }
    await this.glance.createImage({ id, name, disk_format: 'raw', container_format: 'bare' });
    await this.glance.addLocation(id, `rbd://${this.stack.ceph.fsid}/${pool}/${id}/snap`, {});
  }

  /** Deletes one image (Glance removes its RBD image and snapshot). */
  async remove(key) {
    const e = this.images.get(key);
    if (!e) return;
    this.images.delete(key);
    try {
      await this.glance.deleteImage(e.id);
    } catch (err) {
      log(`cleanup: Glance delete of ${e.id} failed (${err.message}); removing its RBD image directly`);
    }
    // Belt and braces: the RBD image must not outlive the run.
    try {
      const io = await this.cluster.openIoCtx(this.stack.ceph.pools.images);
      if ((await io.list()).includes(e.id)) {
        const img = await io.open(e.id);
        for (const s of await img.listSnapshots()) {
          if (s.namespace && s.namespace !== 'user') continue;
          if (await img.isSnapshotProtected(s.name).catch(() => false)) await img.unprotectSnapshot(s.name);
          await img.removeSnapshot(s.name);
        }
        await img.close();
        await io.remove(e.id);
      }
    } catch (err) {
      log(`cleanup: could not remove images/${e.id}: ${err.message}`);
    }
  }

  async removeAll() {
    for (const key of [...this.images.keys()]) await this.remove(key);
  }
}

/**
 * A SourceImage (the image-backend contract) over a Glance image: its locations and a byte
 * stream from `GET /v2/images/ID/file` (the backend verifies the hash itself). `onOpen` counts
 * fetches.
 */
export function glanceSource(glance, image, { onOpen } = {}) {
  const locations = (image.locations ?? []).map((l) => ({ url: l.url, metadata: l.metadata ?? {} }));
  if (image.direct_url && !locations.some((l) => l.url === image.direct_url))
    locations.push({ url: image.direct_url, metadata: {} });
  return {
    id: image.id,
    name: image.name,
    size: image.size,
    virtualSize: image.virtual_size ?? (image.disk_format === 'raw' ? image.size : null),
    diskFormat: image.disk_format,
    containerFormat: image.container_format,
    checksum: image.checksum,
    osHashAlgo: image.os_hash_algo,
    osHashValue: image.os_hash_value,
    locations,
    async open(opts = {}) {
      onOpen?.();
      const dl = await glance.download(image.id, {
        image,
        verify: false,
        ...(opts.signal ? { signal: opts.signal } : {}),
      });
      dl.result.catch(() => undefined);
      return dl.stream;
    },
  };
}

/**
 * A SourceImage over a local file, no locations, no declared hash (the importer alone):
 * `sourceImageFromFile` of `@ephemera/image-backend`, whose reader fills the importer's blocks.
 */
export async function fileSource(path, { id = globalThis.crypto.randomUUID(), format = 'raw' } = {}) {
  const { sourceImageFromFile } = await import('@ephemera/image-backend');
  return sourceImageFromFile(path, { id, diskFormat: format });
}
