import { describe, expect, it } from 'vitest';
import {
  type ConformanceFixture,
  type ConformanceTestApi,
  type CreateFromImageOptions,
  type CreateResult,
  type DiskRef,
  MemoryBackend,
  NotFoundError,
  type RemoveOptions,
  type SourceImage,
  describeBackendConformance,
} from '@ephemera/image-backend';

/** Runs the suite outside vitest and returns which tests failed, to prove it catches bugs. */
async function runSuite(
  setup: () => Promise<ConformanceFixture>,
): Promise<{ passed: string[]; failed: Map<string, string> }> {
  const tests: { name: string; fn: () => Promise<void> }[] = [];
  const before: (() => Promise<void>)[] = [];
  const after: (() => Promise<void>)[] = [];
  const api: ConformanceTestApi = {
    describe: (_name, fn) => fn(),
    it: (name, fn) => void tests.push({ name, fn }),
    beforeAll: (fn) => void before.push(fn),
    afterAll: (fn) => void after.push(fn),
  };
  describeBackendConformance(api, 'meta', setup);
  for (const b of before) await b();
  const passed: string[] = [];
  const failed = new Map<string, string>();
  for (const t of tests) {
    try {
      await t.fn();
      passed.push(t.name);
    } catch (err) {
      failed.set(t.name, (err as Error).message);
    }
  }
  for (const a of after) await a().catch(() => undefined);
  return { passed, failed };
}

const failedMatching = (failed: Map<string, string>, re: RegExp) => [...failed.keys()].filter((n) => re.test(n));

describe('the conformance suite catches broken backends', () => {
  it('passes a correct backend completely', async () => {
    const backend = new MemoryBackend({ capabilities: { clone: false } });
    const { passed, failed } = await runSuite(async () => ({ backend }));
    expect([...failed.entries()]).toEqual([]);
    expect(passed.length).toBeGreaterThanOrEqual(25);
    expect(await backend.list()).toEqual([]); // every test cleaned up after itself
  });

  it('flags a backend that leaves a half-written disk when an import fails', async () => {
    class Leaky extends MemoryBackend {
      override async createFromImage(
        disk: DiskRef,
        image: SourceImage,
        options?: CreateFromImageOptions,
      ): Promise<CreateResult> {
        try {
          return await super.createFromImage(disk, image, options);
        } catch (err) {
          if (!(await this.exists(disk)).valueOf()) await this.createBlank(disk, image.size).catch(() => undefined);
          throw err;
        }
      }
    }
    const { failed } = await runSuite(async () => ({ backend: new Leaky({ capabilities: { clone: false } }) }));
    expect(failedMatching(failed, /stream fails midway/)).toHaveLength(1);
    expect(failedMatching(failed, /shorter than the declared size/)).toHaveLength(1);
    expect(failedMatching(failed, /hash does not match/)).toHaveLength(1);
    expect(failedMatching(failed, /aborted midway/)).toHaveLength(1);
  });

  it('flags a backend whose remove is not idempotent', async () => {
    class Strict extends MemoryBackend {
      override async remove(disk: DiskRef, options?: RemoveOptions): Promise<boolean> {
        if (!(await this.exists(disk))) throw new NotFoundError('gone');
        return super.remove(disk, options);
      }
    }
    const { failed } = await runSuite(async () => ({ backend: new Strict({ capabilities: { clone: false } }) }));
    expect(failedMatching(failed, /removes idempotently/)).toHaveLength(1);
  });

  it('flags a backend that claims a capability it does not implement, or hides a missing one behind a plain Error', async () => {
    class Liar extends MemoryBackend {
      override async createSnapshot(): Promise<never> {
        throw new Error('not implemented');
      }
      override async resize(): Promise<void> {
        throw new Error('not implemented');
      }
    }
    const { failed } = await runSuite(async () => ({
      backend: new Liar({ capabilities: { clone: false, resize: false } }),
    }));
    expect(failedMatching(failed, /^snapshots/)).toHaveLength(1);
    expect(failedMatching(failed, /^resizes/)).toHaveLength(1);
    expect(failed.get(failedMatching(failed, /^resizes/)[0]!)).toMatch(/UNSUPPORTED_OPERATION/);
  });

  it('flags a clone-capable backend that silently imports', async () => {
    const backend = new MemoryBackend({ name: 'fake-clone' });
    const { failed } = await runSuite(async () => ({
      backend,
      // Locations point nowhere this backend knows: it imports although it claims clone.
      cloneableImage: async (content) => (await import('@ephemera/image-backend')).sourceImageFromBytes(content),
    }));
    expect(failedMatching(failed, /^clones when/)).toHaveLength(1);
    expect(failed.get(failedMatching(failed, /^clones when/)[0]!)).toMatch(/expected a clone/);
  });

  it('flags a backend whose progress goes backwards or never reaches 100%', async () => {
    class Jumpy extends MemoryBackend {
      override async createFromImage(
        disk: DiskRef,
        image: SourceImage,
        options: CreateFromImageOptions = {},
      ): Promise<CreateResult> {
        const res = await super.createFromImage(disk, image, { ...options, onProgress: () => undefined });
        options.onProgress?.({ phase: 'download', bytesDone: 10, percent: 50 });
        options.onProgress?.({ phase: 'download', bytesDone: 5, percent: 20 });
        return res;
      }
    }
    const { failed } = await runSuite(async () => ({ backend: new Jumpy({ capabilities: { clone: false } }) }));
    expect(failed.get(failedMatching(failed, /^imports an image/)[0]!)).toMatch(/monotonic/);
  });

  it('flags a backend that is not what it says about disk content', async () => {
    const backend = new MemoryBackend({ capabilities: { clone: false } });
    const { failed } = await runSuite(async () => ({
      backend,
      readDisk: async (_disk, length) => new Uint8Array(length),
    }));
    expect(failed.get(failedMatching(failed, /^imports an image/)[0]!)).toMatch(/content equals/);
  });
});
