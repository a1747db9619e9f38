import {
  AbortedError,
  ImageSourceError,
  InvalidArgumentError,
  UnsafeImageError,
  readImage,
  throwIfAborted,
  type CreateFromImageOptions,
  type CreateResult,
  type ProgressReporter,
  type SourceImage,
} from '@ephemera/image-backend';
import { isRbdError, type Image } from '@ephemera/ceph-rbd-napi';
import { QemuImg, isQemuImgError, type ImageLocation } from '@ephemera/qemu-img-wrapper';
import { localRbdLocations } from './clone.js';
import type { RbdContext } from './context.js';
import { NAME } from './errors.js';
import type { RbdUrl } from './locations.js';
import { LoopbackImageServer, RangeUnavailableError } from './loopback.js';
import { rbdTarget } from './qemu.js';
import type { RangeServer } from './range-server.js';
import { SnapshotRangeServer } from './snapshot-server.js';
import { BlockPool, InspectedStream, Window, blocks, checkDeclared, isAllZero } from './stream.js';

/** Declared formats imported byte for byte (qemu reads them as raw). */
export const RAW_FORMATS = new Set(['raw', 'iso', 'ami', 'ari', 'aki']);
/** Declared formats converted with qemu-img (vetted by the inspector first). */
export const CONVERT_FORMATS = new Set(['qcow2', 'vmdk', 'vhd', 'vpc', 'vhdx', 'vdi', 'qed']);

/** Where `qemu-img convert` reads a non-raw image from. */
export type ConvertSource =
  /** The binding opens the snapshot read-only and serves it to qemu-img on the loopback by random access. */
  | { kind: 'rbd'; url: RbdUrl }
  /** `SourceImage.open()` (Glance's download), served on the loopback from a window. */
  | { kind: 'image-stream' };

/** One create from an image: the disk, the image, the caller's options, progress and start time. */
export interface ImportJob {
  id: string;
  image: SourceImage;
  /** Declared disk format, lower case. */
  format: string;
  /** Why the image is imported (not cloned): part of the result's reason. */
  reason: string;
  options: CreateFromImageOptions;
  progress: ProgressReporter;
  started: number;
}

/**
 * Where qemu-img reads a non-raw image: the first local `rbd://` snapshot this client can open
 * read-only (what the resolver's rbd-copy plan promises, `read <pool>/<image>@<snap>`); Glance's
 * stream only when no local snapshot is readable. Each skipped location says why.
 */
export async function convertSource(
  ctx: RbdContext,
  image: SourceImage,
): Promise<{ source: ConvertSource; skipped: string[] }> {
  const skipped: string[] = [];
  for (const { url, location } of localRbdLocations(image, ctx.fsid)) {
    try {
      await ctx.ops.probeSnapshot(url);
    } catch (e) {
      if (!isRbdError(e)) throw e;
      skipped.push(
        `skipped ${location}: ${url.pool}/${url.image}@${url.snapshot} is not readable (${e.code}: ${e.message})`,
      );
      continue;
    }
    return { source: { kind: 'rbd', url }, skipped };
  }
  return { source: { kind: 'image-stream' }, skipped };
}

/** librbd's default object size (order 22): the block size of a new image unless configured. */
const DEFAULT_BLOCK_BYTES = 4 * 1024 * 1024;

/**
 * Streams a raw image into a new RBD image: the inspector vets the first bytes before
 * anything is created; blocks of `importBlockBytes` (default the object size) are written with
 * up to `importInFlight` aio writes in flight; all-zero blocks are skipped (the new image reads
 * as zeros already) by one memcmp pass over the block we hold; the declared hash is checked as
 * the bytes pass (`readImage`). Blocks come from a pool and go back once written (a source with a
 * reader, such as a local file, is read straight into them). Memory held: `importInFlight`
 * blocks in writes, one or two more in the pool, and what the source buffers. Any failure
 * removes the image.
 */
export async function importRaw(ctx: RbdContext, job: ImportJob): Promise<CreateResult> {
  const { ops } = ctx;
  const { id, image, format, reason, options, progress, started } = job;
  const size = Math.max(options.sizeBytes ?? 0, image.size);
  if (options.sizeBytes !== undefined && options.sizeBytes < image.size)
    throw new InvalidArgumentError(
      'options.sizeBytes',
      `${options.sizeBytes} is smaller than the image (${image.size} bytes)`,
      { backend: NAME, diskId: id },
    );
  // A source with a reader (a local file) reads straight into the pool's blocks; the object size
  // is only known once the image exists, so they have the usual one (regrouped if it differs).
  const pool = new BlockPool(ctx.options.importBlockBytes ?? DEFAULT_BLOCK_BYTES, ops.cfg.inFlight + 2);
  const stream = new InspectedStream(
    readImage(image, { signal: options.signal, progress, backend: NAME, into: () => pool.take() })[
      Symbol.asyncIterator
    ](),
  );
  let created = false;
  let img: Image | undefined;
  const window = new Window(ops.cfg.inFlight);
  try {
    const head = await stream.readHead();
    if (head) checkDeclared(head, format, NAME, id); // e.g. qcow2 declared raw: refused, nothing created
    await ops.io.create(id, size);
    created = true;
    await ops.stampOwner(id, options.owner);
    img = await ops.io.open(id);
    // One write per RADOS object, as `rbd import` does, unless configured otherwise.
    const blockBytes = ctx.options.importBlockBytes ?? (await img.stat()).objectSize;
    let offset = 0;
    for await (const block of blocks(stream.chunks(), blockBytes, pool)) {
      const at = offset;
      offset += block.length;
      if (isAllZero(block)) {
        pool.give(block);
        continue;
      }
      const target = img;
      // Given back only after a write that succeeded: a failed one may still be referenced.
      await window.push(() => target.write(at, block).then(() => pool.give(block)));
    }
    await window.drain();
    await img.flush();
    checkDeclared(stream.end(), format, NAME, id);
    throwIfAborted(options.signal, 'createFromImage');
    const done = img;
    img = undefined;
    await done.close();
    progress.finish(image.size, image.size);
    return { method: 'imported', reason, bytesWritten: image.size, sizeBytes: size, durationMs: Date.now() - started };
  } catch (e) {
    await stream.close();
    // Close before removing: an open handle keeps its watch (and the exclusive lock), so the
    // removal would be EBUSY. close() waits for the in-flight writes (each bounded by
    // rados_osd_op_timeout) and releases the handle even when the lock release fails (OSD
    // down); removeDisk() then clears the lock this client left (see removeOwnStaleLock).
    await window.settle();
    if (img) {
      const open = img;
      img = undefined;
      await open.close().catch(() => undefined);
    }
    if (created) await ops.removeQuietly(id);
    throw ops.translate(e, id, options.signal, created ? undefined : 'create');
  } finally {
    // Never leave the handle open (e.g. close() of the success path threw).
    if (img) await img.close().catch(() => undefined);
  }
}

/**
 * Converts a non-raw image with `qemu-img convert -O raw` (through `@ephemera/qemu-img-wrapper`)
 * straight into RBD; nothing is staged on local disk. The inspector vets the first bytes
 * (declared format, no backing or data file, no encryption, a virtual size) before the target
 * exists. qemu-img reads from a loopback NBD server (random reads; `from`, see
 * {@link convertSource}):
 * - `rbd` (an `rbd://` location in this cluster): the Glance snapshot, opened read-only through
 *   the binding and served by random access (any qcow2 layout works); the bytes qemu-img reads
 *   are hashed in file order as they pass (pieces read ahead are held, up to
 *   `convertStream.windowBytes`), and only what it never read is read afterwards: one read of
 *   the source (docs/operations.md, "Raw images for clones");
 * - `image-stream` (`SourceImage.open()`): the stream, served from a bounded memory window
 *   (qemu-img's reads of a qcow2 written by qemu-img are nearly sequential, after it read all
 *   L2 tables: a data pass behind the window restarts the stream); afterwards the rest of the
 *   stream is read so its size and hash are checked.
 * A hash that does not match fails the call. Any failure removes the target.
 */
export async function importConverted(ctx: RbdContext, job: ImportJob, from: ConvertSource): Promise<CreateResult> {
  const { ops, options: o } = ctx;
  const { id, image, format, reason, options, progress, started } = job;
  const snap = from.kind === 'rbd' ? from.url : undefined;
  // Opened on the inspector's first read (its failure is the source's, as a download's).
  let ranged: SnapshotRangeServer | undefined;
  const source: SourceImage = snap
    ? {
        ...image,
        open: async () => {
          ranged = new SnapshotRangeServer(await ops.openSnapshot(snap), image.size, {
            blockBytes: ops.cfg.blockBytes,
            maxAheadBytes: o.convertStream?.windowBytes ?? 64 * 1024 * 1024,
          });
          return ranged.feed.chunks();
        },
      }
    : image;
  // From RBD, progress comes from qemu-img only (the hash follows its reads).
  const stream = new InspectedStream(
    readImage(source, { signal: options.signal, ...(snap ? {} : { progress }), backend: NAME })[Symbol.asyncIterator](),
  );
  // The stream whose inspector and hash see the bytes qemu-img read last (a restarted one, below).
  let current = stream;
  const declared = format === 'vpc' ? 'vhd' : format;
  let created = false;
  let killed = false;
  let server: RangeServer | undefined;
  try {
    const head = await stream.readHead();
    if (!head) {
      // The inspector found no header it knows at offset 0: for formats whose header is there,
      // that means the content is not what Glance declares (say so, not just "undecided").
      const atStart = ['qcow2', 'vmdk', 'vdi', 'vhdx', 'qed'].includes(declared);
      throw new UnsafeImageError(
        atStart ? 'format-mismatch' : 'format-undecided',
        atStart
          ? `image ${image.id}: declared ${declared} but it does not start with a ${declared} header (the content looks like raw data)`
          : `image ${image.id}: its ${format} headers could not be vetted from the first bytes`,
        { backend: NAME, diskId: id },
      );
    }
    const vetted = checkDeclared(head, declared, NAME, id);
    const virtualSize = vetted.virtualSize;
    if (virtualSize === undefined || !Number.isSafeInteger(virtualSize) || virtualSize <= 0)
      throw new UnsafeImageError('virtual-size', `image ${image.id}: no valid virtual size in its header`, {
        backend: NAME,
        diskId: id,
      });
    if (options.sizeBytes !== undefined && options.sizeBytes < virtualSize)
      throw new InvalidArgumentError(
        'options.sizeBytes',
        `${options.sizeBytes} is smaller than the image's virtual size ${virtualSize}`,
        { backend: NAME, diskId: id },
      );
    const size = Math.max(options.sizeBytes ?? 0, virtualSize);
    await ops.io.create(id, size);
    created = true;
    await ops.stampOwner(id, options.owner);
    const rbd = (pool: string, name: string, snapshot?: string): ImageLocation =>
      rbdTarget({
        pool,
        image: name,
        ...(snapshot ? { snapshot } : {}),
        user: ops.cfg.clientId,
        confPath: o.confPath,
        ...(o.keyringPath ? { keyringPath: o.keyringPath } : {}),
      });
    const target = rbd(ops.cfg.pool, id);
    const qemuImg = new QemuImg(o.qemuImgBinary ? { binary: o.qemuImgBinary } : {});
    // The inspector vetted the source above: qemu-img gets its format and never probes; the
    // target exists already and reads as zeros.
    const convert = (
      src: ImageLocation,
      extra: { signal: AbortSignal; killGraceMs: number; onAbort?: () => void },
    ): Promise<void> =>
      qemuImg.convert(src, target, {
        untrusted: false,
        sourceFormat: vetted.qemuFormat,
        targetFormat: 'raw',
        noCreate: true,
        targetIsZero: true,
        timeoutMs: o.convertTimeoutMs ?? 3_600_000,
        onProgress: (pct: number) => progress.report('convert', Math.floor((pct / 100) * virtualSize), virtualSize),
        onKill: () => (killed = true),
        ...extra,
      });
    let verify: Promise<void> | undefined;
    if (ranged) {
      const snapServer = ranged;
      server = snapServer;
      snapServer.feed.selfRead = false; // from here on, qemu-img's reads feed the hash
      verify = (async () => {
        for await (const chunk of stream.chunks()) void chunk; // readImage hashes and counts
      })();
      verify.catch((e: unknown) => snapServer.fail(e));
    } else {
      server = new LoopbackImageServer(stream.chunks()[Symbol.asyncIterator](), {
        size: image.size,
        ...(o.convertStream?.headBytes ? { headBytes: o.convertStream.headBytes } : {}),
        ...(o.convertStream?.windowBytes ? { windowBytes: o.convertStream.windowBytes } : {}),
        // qemu-img reads every qcow2 L2 table (spread through the file) before the data, so
        // its data pass starts behind the window: download again from the start (checked
        // the same way; progress stays with qemu-img's and the first download's).
        reopen: () => {
          current = new InspectedStream(
            readImage(source, { signal: options.signal, backend: NAME })[Symbol.asyncIterator](),
          );
          return current.chunks()[Symbol.asyncIterator]();
        },
      });
    }
    await server.listen();
    const srv = server;
    // Stop qemu-img on an abort or when the source fails (read, hash, window): first
    // cooperatively (its reads fail and it exits, closing librbd cleanly), then with signals
    // (in case it does not notice the dropped connection).
    const stop = new AbortController();
    const onAbort = (): void => stop.abort(options.signal?.reason);
    options.signal?.addEventListener('abort', onAbort, { once: true });
    if (options.signal?.aborted) onAbort();
    srv.onFail = (err) => stop.abort(err);
    try {
      await convert(srv.location, {
        signal: stop.signal,
        killGraceMs: 2_000,
        onAbort: () => srv.fail(new AbortedError('createFromImage aborted', { backend: NAME, diskId: id })),
      });
    } catch (e) {
      ranged?.feed.fail(e);
      await verify?.catch(() => undefined);
      // The source's own failure (read, hash, abort, window) explains qemu-img's.
      throw srv.error ?? e;
    } finally {
      options.signal?.removeEventListener('abort', onAbort);
    }
    if (ranged) {
      ranged.feed.selfRead = true; // what qemu-img never read (refcount blocks, unused tails)
      await verify;
    } else await (srv as LoopbackImageServer).drain();
    checkDeclared(current.end(), declared, NAME, id);
    throwIfAborted(options.signal, 'createFromImage');
    progress.finish(image.size, image.size);
    const via = snap
      ? `; converted by qemu-img reading ${snap.pool}/${snap.image}@${snap.snapshot} (read-only through librbd, hashed in the same pass: ${ranged?.clusterBytes ?? 0} bytes read for ${image.size})`
      : '; converted by qemu-img from the stream';
    return {
      method: 'imported',
      reason: reason + via,
      bytesWritten: image.size,
      sizeBytes: size,
      durationMs: Date.now() - started,
    };
  } catch (e) {
    await (server ?? ranged)?.close().catch(() => undefined);
    await stream.close();
    if (current !== stream) await current.close();
    if (created) {
      // A killed qemu-img leaves its watch on the target until the OSD times it out (~30 s):
      // evict it (only qemu-img can watch an image this call just created).
      if (killed) await ops.evictWatchers(id);
      await ops.removeQuietly(id);
    }
    if (e instanceof RangeUnavailableError)
      throw new ImageSourceError(`image ${image.id}: ${e.message}`, { backend: NAME, diskId: id, cause: e });
    // An aborted run is the caller's abort (translated below), not a source failure.
    if (isQemuImgError(e) && 'kind' in e && e.kind !== 'aborted')
      throw new ImageSourceError(`image ${image.id}: ${e.message}`, { backend: NAME, diskId: id, cause: e });
    throw ops.translate(e, id, options.signal, created ? undefined : 'create');
  } finally {
    await (server ?? ranged)?.close().catch(() => undefined);
  }
}
