import assert from 'node:assert/strict';
import { isImageBackendError } from './errors.js';
import { assertCompatiblePlugin } from './registry.js';
import { patternBytes, sourceImageFromBytes } from './source-image.js';
import { CAPABILITIES, type DiskRef, type ImageBackend, type ProgressEvent, type SourceImage } from './types.js';

/**
 * The test functions the suite registers with. Pass vitest's (or any compatible runner's):
 * `describeBackendConformance({ describe, it, beforeAll, afterAll }, ...)`. This keeps the
 * contract package free of a runtime test-framework dependency.
 */
export interface ConformanceTestApi {
  describe: (name: string, fn: () => void) => void;
  it: (name: string, fn: () => Promise<void>, timeout?: number) => void;
  beforeAll: (fn: () => Promise<void>, timeout?: number) => void;
  afterAll: (fn: () => Promise<void>, timeout?: number) => void;
}

/** What the backend's test gives the suite. */
export interface ConformanceFixture {
  /** The backend under test, ready to use. */
  backend: ImageBackend;
  /**
   * Makes an image holding `content` that this backend can clone (e.g. uploaded to Glance's rbd
   * store, with its `rbd://` location). Required when the backend claims `clone`.
   */
  cloneableImage?: (content: Uint8Array) => Promise<SourceImage>;
  /** Reads the first `length` bytes of a disk, to check that data arrived intact. Optional. */
  readDisk?: (disk: DiskRef, length: number) => Promise<Uint8Array>;
  /** Called once after all tests (after the suite removed every disk it made). */
  teardown?: () => Promise<void>;
}

/** Tunables of the suite. */
export interface ConformanceOptions {
  /** Per-test timeout (default 120 000 ms). */
  timeoutMs?: number;
  /** Size of test images (default 1 MiB). */
  imageBytes?: number;
  /** Size of blank disks (default 8 MiB; use a multiple of the backend's allocation unit). */
  blankBytes?: number;
  /** Size to grow to in the resize test (default 16 MiB). */
  growBytes?: number;
  /** Size of the thin-provisioning probe disk (default 1 GiB; only when `thin` is claimed). */
  thinProbeBytes?: number;
  /** Check that a blank disk larger than the free space is refused (default: when not `thin`). */
  checkInsufficientCapacity?: boolean;
}

export { assertWellFormedDiskSource, expectImageBackendError, expectUnsupported } from './conformance-asserts.js';
import { describeOwnerConformance } from './conformance-owner.js';
import {
  assertProgress,
  assertWellFormedDiskSource,
  expectImageBackendError,
  expectUnsupported,
} from './conformance-asserts.js';

/**
 * Registers the shared conformance suite for one backend. Every backend package runs it from
 * its own tests against the real storage:
 *
 * ```ts
 * import { describe, it, beforeAll, afterAll } from 'vitest';
 * describeBackendConformance({ describe, it, beforeAll, afterAll }, 'rbd', async () => ({ backend, cloneableImage }));
 * ```
 *
 * It checks each capability the backend claims (and that unclaimed ones throw
 * `UnsupportedOperationError` naming the capability), typed errors, idempotent removal, and
 * that failing or aborted creates leave nothing behind. Each test uses fresh instance UUIDs and
 * the suite removes everything it made.
 */
export function describeBackendConformance(
  t: ConformanceTestApi,
  label: string,
  setup: () => Promise<ConformanceFixture>,
  options: ConformanceOptions = {},
): void {
  const timeout = options.timeoutMs ?? 120_000;
  const imageBytes = options.imageBytes ?? 1024 * 1024;
  const blankBytes = options.blankBytes ?? 8 * 1024 * 1024;
  const growBytes = options.growBytes ?? 16 * 1024 * 1024;
  const thinProbeBytes = options.thinProbeBytes ?? 1024 ** 3;
  let fx: ConformanceFixture | undefined;
  const instances = new Set<string>();

  const fixture = (): ConformanceFixture => {
    assert.ok(fx, 'conformance setup() did not complete');
    return fx;
  };
  const backend = (): ImageBackend => fixture().backend;
  let current = new Set<string>();
  const newInstance = (): string => {
    const id = globalThis.crypto.randomUUID();
    instances.add(id);
    current.add(id);
    return id;
  };
  /** Removes every disk of the given instances; returns the failures. */
  const sweep = async (ids: Iterable<string>): Promise<string[]> => {
    const failures: string[] = [];
    for (const instance of ids) {
      for (const d of await backend().list({ instance })) {
        try {
          await backend().remove(d.disk, { busyTimeoutMs: 30_000 });
        } catch (err) {
          failures.push(`${d.id}: ${(err as Error).message}`);
        }
      }
    }
    return failures;
  };
  /** Registers a test that removes the disks it made when it ends (small pools stay small). */
  const test = (name: string, fn: () => Promise<void>): void => {
    t.it(
      name,
      async () => {
        current = new Set();
        const mine = current;
        let failed = true;
        try {
          await fn();
          failed = false;
        } finally {
          // Never let cleanup mask the test's own failure; the afterAll sweep retries leftovers.
          const failures = await sweep(mine).catch((err: unknown) => [String(err)]);
          for (const id of mine) if (failures.every((f) => !f.startsWith(id))) instances.delete(id);
          if (!failed) assert.deepEqual(failures, [], "the test's disks are removable");
        }
      },
      timeout,
    );
  };
  const newDisk = (name = 'disk'): DiskRef => ({ instance: newInstance(), name });
  const content = (seed: number): Uint8Array => patternBytes(imageBytes, seed);
  const assertNothingLeft = async (disk: DiskRef): Promise<void> => {
    assert.equal(await backend().exists(disk), false, 'disk must not exist after a failed create');
    assert.deepEqual(await backend().list({ instance: disk.instance }), [], 'nothing listed for the instance');
  };
  const checkContent = async (disk: DiskRef, expected: Uint8Array): Promise<void> => {
    const read = fixture().readDisk;
    if (!read) return;
    const got = await read(disk, expected.length);
    assert.equal(Buffer.compare(Buffer.from(got), Buffer.from(expected)), 0, 'disk content equals the image');
  };
  const caps = (): ImageBackend['capabilities'] => backend().capabilities;

  t.describe(`image backend conformance: ${label}`, () => {
    t.beforeAll(async () => {
      fx = await setup();
    }, timeout);

    t.afterAll(async () => {
      if (!fx) return;
      const failures = await sweep(instances);
      await fx.teardown?.();
      assert.deepEqual(failures, [], 'suite cleanup removed every disk');
    });

    test('declares a valid contract (name, apiVersion in window, all capabilities, disk formats)', async () => {
      const b = backend();
      assertCompatiblePlugin(b);
      for (const c of CAPABILITIES) assert.equal(typeof b.capabilities[c], 'boolean', `capability ${c}`);
      for (const f of b.diskFormats) assert.ok(f === 'raw' || f === 'qcow2', `disk format ${f}`);
      if (b.capabilities.clone)
        assert.ok(fixture().cloneableImage, 'a backend claiming clone must give cloneableImage');
    });

    test('reports a disk never created as missing (exists false, info/diskSource NotFound)', async () => {
      const disk = newDisk();
      assert.equal(await backend().exists(disk), false);
      await expectImageBackendError(backend().info(disk), 'NOT_FOUND');
      await expectImageBackendError(backend().diskSource(disk), 'NOT_FOUND');
      assert.deepEqual(await backend().list({ instance: disk.instance }), []);
    });

    test('rejects invalid disk references with InvalidArgumentError and creates nothing', async () => {
      const instance = newInstance();
      const bad: DiskRef[] = [
        { instance: 'not-a-uuid', name: 'disk' },
        { instance: `${instance}/x`, name: 'disk' },
        { instance, name: '' },
        { instance, name: '../etc' },
        { instance, name: 'a/b' },
        { instance, name: 'disk@snap' },
        { instance, name: 'disk\n' },
        { instance, name: ' disk' },
        { instance, name: '.hidden' },
        { instance, name: 'x'.repeat(65) },
      ];
      const img = sourceImageFromBytes(content(1));
      for (const disk of bad) {
        await expectImageBackendError(backend().exists(disk), 'INVALID_ARGUMENT');
        await expectImageBackendError(backend().createBlank(disk, blankBytes), 'INVALID_ARGUMENT');
        await expectImageBackendError(backend().createFromImage(disk, img), 'INVALID_ARGUMENT');
        await expectImageBackendError(backend().remove(disk), 'INVALID_ARGUMENT');
        await expectImageBackendError(backend().diskSource(disk), 'INVALID_ARGUMENT');
      }
      assert.deepEqual(await backend().list({ instance }), []);
      await expectImageBackendError(backend().list({ instance: 'nope' }), 'INVALID_ARGUMENT');
    });

    describeOwnerConformance({
      test,
      backend,
      newDisk,
      content,
      cloneableImage: () => fixture().cloneableImage,
      blankBytes,
    });

    test('imports an image without a usable location, verified, with progress to 100%', async () => {
      const disk = newDisk();
      const bytes = content(2);
      const img = sourceImageFromBytes(bytes);
      const events: ProgressEvent[] = [];
      const res = await backend().createFromImage(disk, img, { onProgress: (e) => events.push(e) });
      assert.equal(res.method, 'imported');
      assert.equal(typeof res.reason, 'string', 'an import says why it did not clone');
      assert.ok(res.reason!.length > 0);
      assert.equal(res.bytesWritten, img.size);
      assert.ok(Number.isFinite(res.durationMs) && res.durationMs >= 0);
      assert.ok(res.sizeBytes >= img.size);
      assertProgress(events);
      assert.equal(await backend().exists(disk), true);
      const info = await backend().info(disk);
      assert.equal(info.disk.instance, disk.instance.toLowerCase());
      assert.equal(info.disk.name, disk.name);
      assert.equal(info.id, `${disk.instance}_${disk.name}`);
      assert.ok(info.sizeBytes >= img.size);
      await checkContent(disk, bytes);
      assertWellFormedDiskSource(await backend().diskSource(disk));
    });

    test('creates from an image at a requested larger size', async () => {
      const disk = newDisk();
      const img = sourceImageFromBytes(content(3));
      const res = await backend().createFromImage(disk, img, { sizeBytes: blankBytes });
      assert.ok(res.sizeBytes >= blankBytes);
      assert.ok((await backend().info(disk)).sizeBytes >= blankBytes);
    });

    test('clones when it claims clone and the image allows it; imports when told to', async () => {
      const make = fixture().cloneableImage;
      if (!caps().clone) {
        // Not claimed: even an image another backend could clone is imported.
        const img = make ? await make(content(4)) : sourceImageFromBytes(content(4));
        const res = await backend().createFromImage(newDisk(), img);
        assert.equal(res.method, 'imported');
        assert.ok(res.reason && res.reason.length > 0);
        return;
      }
      assert.ok(make, 'cloneableImage is required for a clone-capable backend');
      const bytes = content(4);
      const img = await make(bytes);
      const disk = newDisk();
      const events: ProgressEvent[] = [];
      const res = await backend().createFromImage(disk, img, { onProgress: (e) => events.push(e) });
      assert.equal(res.method, 'cloned', `expected a clone, got import: ${res.reason}`);
      assertProgress(events);
      await checkContent(disk, bytes);
      const forced = newDisk();
      const res2 = await backend().createFromImage(forced, img, { forceImport: true });
      assert.equal(res2.method, 'imported');
      assert.ok(res2.reason && res2.reason.length > 0);
      await checkContent(forced, bytes);
    });

    test('refuses to create over an existing disk (AlreadyExists) and leaves it untouched', async () => {
      const disk = newDisk();
      const bytes = content(5);
      await backend().createFromImage(disk, sourceImageFromBytes(bytes));
      const before = await backend().info(disk);
      await expectImageBackendError(
        backend().createFromImage(disk, sourceImageFromBytes(content(6))),
        'ALREADY_EXISTS',
      );
      await expectImageBackendError(backend().createBlank(disk, blankBytes), 'ALREADY_EXISTS');
      assert.deepEqual(await backend().info(disk), before);
      await checkContent(disk, bytes);
    });

    test('lets exactly one of two concurrent creates of the same disk win', async () => {
      const disk = newDisk('disk.local');
      const results = await Promise.allSettled([
        backend().createBlank(disk, blankBytes),
        backend().createBlank(disk, blankBytes),
      ]);
      const ok = results.filter((r) => r.status === 'fulfilled');
      const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
      assert.equal(ok.length, 1, 'one create succeeds');
      assert.equal(failed.length, 1);
      assert.ok(
        isImageBackendError(failed[0]!.reason, 'ALREADY_EXISTS'),
        `loser gets AlreadyExists: ${String(failed[0]!.reason)}`,
      );
      assert.equal(await backend().exists(disk), true);
    });

    test('creates blank disks of at least the requested size in every advertised format', async () => {
      const instance = newInstance();
      for (const [i, format] of backend().diskFormats.entries()) {
        const disk = { instance, name: `disk.blank${i}` };
        const res = await backend().createBlank(disk, blankBytes, { format });
        assert.equal(res.method, 'blank');
        assert.ok(res.sizeBytes >= blankBytes);
        const info = await backend().info(disk);
        assert.equal(info.format, format);
        assert.ok(info.sizeBytes >= blankBytes);
        const src = await backend().diskSource(disk);
        assertWellFormedDiskSource(src);
        assert.equal(src.format, format);
      }
      const swap = { instance, name: 'disk.swap' };
      await backend().createBlank(swap, blankBytes);
      assert.equal((await backend().info(swap)).format, backend().diskFormats[0]);
    });

    test('rejects bad blank sizes and unknown formats with InvalidArgumentError', async () => {
      const disk = newDisk('disk.local');
      for (const size of [0, -1, 1.5, Number.NaN, 2 ** 60]) {
        await expectImageBackendError(backend().createBlank(disk, size), 'INVALID_ARGUMENT');
      }
      await expectImageBackendError(
        backend().createBlank(disk, blankBytes, { format: 'vmdk' as never }),
        'INVALID_ARGUMENT',
      );
      await assertNothingLeft(disk);
    });

    test('resizes (grow only) when it claims resize, else UnsupportedOperation(resize)', async () => {
      const disk = newDisk();
      await backend().createBlank(disk, blankBytes);
      if (!caps().resize) {
        await expectUnsupported(backend().resize(disk, growBytes), 'resize');
        return;
      }
      await backend().resize(disk, growBytes);
      assert.ok((await backend().info(disk)).sizeBytes >= growBytes);
      await expectImageBackendError(backend().resize(disk, blankBytes), 'INVALID_ARGUMENT');
      await expectImageBackendError(backend().resize(newDisk(), growBytes), 'NOT_FOUND');
    });

    test('snapshots (create/list/duplicate/remove) when it claims snapshot, else UnsupportedOperation(snapshot)', async () => {
      const disk = newDisk();
      await backend().createFromImage(disk, sourceImageFromBytes(content(7)));
      if (!caps().snapshot) {
        await expectUnsupported(backend().createSnapshot(disk, 's1'), 'snapshot');
        await expectUnsupported(backend().listSnapshots(disk), 'snapshot');
        await expectUnsupported(backend().removeSnapshot(disk, 's1'), 'snapshot');
        return;
      }
      assert.deepEqual(await backend().listSnapshots(disk), []);
      const s = await backend().createSnapshot(disk, 's1');
      assert.equal(s.name, 's1');
      assert.ok(s.sizeBytes >= imageBytes);
      assert.deepEqual(
        (await backend().listSnapshots(disk)).map((x) => x.name),
        ['s1'],
      );
      await expectImageBackendError(backend().createSnapshot(disk, 's1'), 'ALREADY_EXISTS');
      for (const bad of ['', 'a/b', 'a@b', 'x y', '..']) {
        await expectImageBackendError(backend().createSnapshot(disk, bad), 'INVALID_ARGUMENT');
      }
      await expectImageBackendError(backend().createSnapshot(newDisk(), 's1'), 'NOT_FOUND');
      assert.equal(await backend().removeSnapshot(disk, 's1'), true);
      assert.deepEqual(await backend().listSnapshots(disk), []);
      assert.equal(await backend().removeSnapshot(disk, 's1'), false);
      // A disk with snapshots is still removable in one call.
      await backend().createSnapshot(disk, 's2');
      assert.equal(await backend().remove(disk), true);
      assert.equal(await backend().exists(disk), false);
    });

    test('rolls back to a snapshot when it claims rollback, else UnsupportedOperation(rollback)', async () => {
      const disk = newDisk();
      const bytes = content(8);
      await backend().createFromImage(disk, sourceImageFromBytes(bytes));
      if (!caps().rollback) {
        await expectUnsupported(backend().rollbackToSnapshot(disk, 's1'), 'rollback');
        return;
      }
      assert.ok(caps().snapshot, 'rollback implies snapshot');
      await backend().createSnapshot(disk, 'before');
      if (caps().resize) await backend().resize(disk, growBytes);
      await backend().rollbackToSnapshot(disk, 'before');
      await checkContent(disk, bytes);
      const size = (await backend().info(disk)).sizeBytes;
      assert.ok(size >= imageBytes && size < growBytes, `size restored by rollback (${size})`);
      await expectImageBackendError(backend().rollbackToSnapshot(disk, 'missing'), 'NOT_FOUND');
    });

    test('flattens when it claims flatten, else UnsupportedOperation(flatten)', async () => {
      const bytes = content(9);
      const disk = newDisk();
      const make = fixture().cloneableImage;
      const img = caps().clone && make ? await make(bytes) : sourceImageFromBytes(bytes);
      await backend().createFromImage(disk, img);
      if (!caps().flatten) {
        await expectUnsupported(backend().flatten(disk), 'flatten');
        return;
      }
      await backend().flatten(disk);
      assert.equal((await backend().info(disk)).parent, undefined, 'no parent after flatten');
      await checkContent(disk, bytes);
      await backend().flatten(disk); // a second flatten is a no-op
      await expectImageBackendError(backend().flatten(newDisk()), 'NOT_FOUND');
    });

    test('direct-snapshots when it claims directSnapshot, else UnsupportedOperation(directSnapshot)', async () => {
      const disk = newDisk();
      await backend().createFromImage(disk, sourceImageFromBytes(content(10)));
      const imageId = globalThis.crypto.randomUUID();
      if (!caps().directSnapshot) {
        await expectUnsupported(backend().directSnapshot(disk, { imageId }), 'directSnapshot');
        return;
      }
      const loc = await backend().directSnapshot(disk, { imageId });
      assert.equal(typeof loc.url, 'string');
      assert.doesNotThrow(() => new URL(loc.url), 'location is a URL');
      await expectImageBackendError(
        backend().directSnapshot(newDisk(), { imageId: globalThis.crypto.randomUUID() }),
        'NOT_FOUND',
      );
      if (backend().removeDirectSnapshot) {
        // Undoing it (what a crash recovery does) removes what it made; a second undo finds nothing.
        assert.equal(
          await backend().removeDirectSnapshot!(disk, { imageId }),
          true,
          'removeDirectSnapshot removes the snapshot it made',
        );
        assert.equal(
          await backend().removeDirectSnapshot!(disk, { imageId }),
          false,
          'removeDirectSnapshot is idempotent',
        );
        assert.equal(
          await backend().removeDirectSnapshot!(newDisk(), { imageId: globalThis.crypto.randomUUID() }),
          false,
          'nothing to undo on a missing disk',
        );
      }
    });

    test('encrypts when it claims encryption, else UnsupportedOperation(encryption) and nothing made', async () => {
      const disk = newDisk('disk.local');
      const encryption = { format: 'luks' as const, secretUuid: globalThis.crypto.randomUUID() };
      if (!caps().encryption) {
        await expectUnsupported(backend().createBlank(disk, blankBytes, { encryption }), 'encryption');
        await expectUnsupported(
          backend().createFromImage(disk, sourceImageFromBytes(content(11)), { encryption }),
          'encryption',
        );
        await assertNothingLeft(disk);
        return;
      }
      // A backend that formats the disk needs the passphrase; diskSource never returns it.
      const passphrase = async (): Promise<Uint8Array> => new TextEncoder().encode('conformance-key');
      await backend().createBlank(disk, blankBytes, { encryption: { ...encryption, passphrase } });
      assert.equal((await backend().info(disk)).encrypted, true);
      const src = await backend().diskSource(disk);
      assertWellFormedDiskSource(src);
      assert.deepEqual(src.encryption, encryption);
    });

    test('removes idempotently (true, then false; never-created is false)', async () => {
      const disk = newDisk();
      assert.equal(await backend().remove(disk), false);
      await backend().createFromImage(disk, sourceImageFromBytes(content(12)));
      assert.equal(await backend().remove(disk), true);
      assert.equal(await backend().exists(disk), false);
      assert.equal(await backend().remove(disk), false);
      await expectImageBackendError(backend().info(disk), 'NOT_FOUND');
      assert.deepEqual(await backend().list({ instance: disk.instance }), []);
      // The name is free again.
      await backend().createBlank(disk, blankBytes);
      assert.equal(await backend().exists(disk), true);
    });

    test('lists disks by instance', async () => {
      const a = newInstance();
      const b = newInstance();
      await backend().createBlank({ instance: a, name: 'disk' }, blankBytes);
      await backend().createBlank({ instance: a, name: 'disk.swap' }, blankBytes);
      await backend().createBlank({ instance: b, name: 'disk' }, blankBytes);
      const listA = await backend().list({ instance: a });
      assert.deepEqual(listA.map((d) => d.id).sort(), [`${a}_disk`, `${a}_disk.swap`]);
      for (const d of listA) {
        assert.equal(d.disk.instance, a);
        assert.ok(d.sizeBytes >= blankBytes);
      }
      assert.deepEqual(
        (await backend().list({ instance: b.toUpperCase() })).map((d) => d.id),
        [`${b}_disk`],
      );
      const all = (await backend().list()).map((d) => d.id);
      for (const id of [`${a}_disk`, `${a}_disk.swap`, `${b}_disk`]) assert.ok(all.includes(id), `list() has ${id}`);
    });

    test('reports sane capacity', async () => {
      const c = await backend().capacity();
      assert.ok(Number.isSafeInteger(c.totalBytes) && c.totalBytes > 0, `totalBytes ${c.totalBytes}`);
      assert.ok(Number.isSafeInteger(c.freeBytes) && c.freeBytes >= 0, `freeBytes ${c.freeBytes}`);
      assert.ok(c.freeBytes <= c.totalBytes);
    });

    test('leaves nothing behind when the source stream fails midway, and the name stays usable', async () => {
      const disk = newDisk();
      const bytes = content(13);
      const img = sourceImageFromBytes(bytes, { failAfterBytes: Math.floor(bytes.length / 2), chunkBytes: 64 * 1024 });
      await expectImageBackendError(backend().createFromImage(disk, img), 'IMAGE_SOURCE');
      await assertNothingLeft(disk);
      const res = await backend().createFromImage(disk, sourceImageFromBytes(bytes));
      assert.equal(res.method, 'imported');
      await checkContent(disk, bytes);
    });

    test('leaves nothing behind when the stream is shorter than the declared size', async () => {
      const disk = newDisk();
      const img = sourceImageFromBytes(content(14), { noHash: true });
      await expectImageBackendError(
        backend().createFromImage(disk, { ...img, size: img.size + 4096, virtualSize: img.size + 4096 }),
        'IMAGE_SOURCE',
      );
      await assertNothingLeft(disk);
    });

    test('refuses an image whose hash does not match (UnsafeImage) and leaves nothing behind', async () => {
      const disk = newDisk();
      await expectImageBackendError(
        backend().createFromImage(disk, sourceImageFromBytes(content(15), { corruptHash: true })),
        'UNSAFE_IMAGE',
      );
      await assertNothingLeft(disk);
    });

    test('honours an already-aborted signal (Aborted, nothing made)', async () => {
      const disk = newDisk();
      const ac = new AbortController();
      ac.abort();
      await expectImageBackendError(
        backend().createFromImage(disk, sourceImageFromBytes(content(16)), { signal: ac.signal }),
        'ABORTED',
      );
      await expectImageBackendError(backend().createBlank(disk, blankBytes, { signal: ac.signal }), 'ABORTED');
      await assertNothingLeft(disk);
    });

    test('rolls back an import aborted midway (Aborted, nothing left)', async () => {
      const disk = newDisk();
      const ac = new AbortController();
      const img = sourceImageFromBytes(content(17), {
        chunkBytes: 32 * 1024,
        onChunk: (done) => {
          if (done >= imageBytes / 4) ac.abort(new Error('test abort'));
        },
      });
      await expectImageBackendError(backend().createFromImage(disk, img, { signal: ac.signal }), 'ABORTED');
      await assertNothingLeft(disk);
    });

    test('is thin when it claims thin, else accounts the full size of a blank disk', async () => {
      const thin = caps().thin;
      const size = thin ? thinProbeBytes : blankBytes;
      const before = await backend().capacity();
      const disk = newDisk('disk.local');
      await backend().createBlank(disk, size);
      const after = await backend().capacity();
      const dropped = before.freeBytes - after.freeBytes;
      if (thin) assert.ok(dropped < size / 2, `thin: free space dropped by ${dropped} for a ${size}-byte disk`);
      else assert.ok(dropped >= size / 2, `thick: free space dropped by only ${dropped} for a ${size}-byte disk`);
      assert.equal(await backend().remove(disk), true);
    });

    test('refuses a blank disk larger than the free space when thick (InsufficientCapacity, nothing left)', async () => {
      const disk = newDisk('disk.local');
      const { freeBytes } = await backend().capacity();
      const oversize = freeBytes + 1024 ** 3;
      const mustRefuse = options.checkInsufficientCapacity ?? !caps().thin;
      let refused: unknown;
      try {
        await backend().createBlank(disk, oversize);
      } catch (err) {
        refused = err;
      }
      if (refused !== undefined || mustRefuse) {
        assert.ok(
          isImageBackendError(refused, 'INSUFFICIENT_CAPACITY'),
          `expected InsufficientCapacity, got ${String(refused)}`,
        );
        await assertNothingLeft(disk);
      } else {
        // A thin backend may overcommit: the disk exists and is removable.
        assert.ok((await backend().info(disk)).sizeBytes >= oversize);
        assert.equal(await backend().remove(disk), true);
      }
    });
  });
}
