// The _base cache across processes: 20 concurrent creators of overlays of one image, 10 in this
// process and 10 in a second node process (running the same sources, transpiled), fetch the
// image exactly once. And a fetcher killed with SIGKILL mid-download: the other process takes
// over its lock once stale, fetches again, and the dead fetch's temp file is cleaned up later.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { appendFileSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { patternBytes, sourceImageFromBytes, type DiskRef, type SourceImage } from '@ephemera/image-backend';
import { baseKey } from '../../src/base-cache.js';
import { buildForChildProcess } from '../support/child-build.js';
import { createFixture, type Fixture } from '../support/fixture.js';

const here = dirname(fileURLToPath(import.meta.url));
const CHILD = join(here, '..', 'support', 'creator-child.mjs');
const MiB = 1024 * 1024;

let build: string;
let entries: Record<string, string>;
let fx: Fixture;
const children: ChildProcessWithoutNullStreams[] = [];

beforeAll(async () => {
  build = await mkdtemp(join(tmpdir(), 'ephemera-qcow2-child-'));
  entries = await buildForChildProcess(build);
  fx = await createFixture({ lockStaleMs: 2_000 });
});

afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await fx?.destroy();
  if (build) await rm(build, { recursive: true, force: true });
});

interface ChildResult {
  disk: DiskRef;
  method?: string;
  error?: string;
}

/** Starts the creator child and resolves once it is ready; `results` resolves with its output. */
async function startChild(
  config: Record<string, unknown>,
): Promise<{ child: ChildProcessWithoutNullStreams; go: () => void; results: Promise<ChildResult[]> }> {
  const child = spawn(
    process.execPath,
    [CHILD, entries['backend-qcow2']!, entries['image-backend']!, JSON.stringify(config)],
    {
      stdio: ['pipe', 'pipe', 'pipe'],
    },
  );
  children.push(child);
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (t: string) => (out += t));
  child.stderr.setEncoding('utf8').on('data', (t: string) => (err += t));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    const timer = setInterval(() => {
      if (out.startsWith('ready\n')) {
        clearInterval(timer);
        resolve();
      } else if (child.exitCode !== null) {
        clearInterval(timer);
        reject(new Error(`child exited early (${child.exitCode}): ${err}`));
      }
    }, 10);
  });
  const results = exited.then(() => {
    const line = out.split('\n')[1];
    if (!line) throw new Error(`child printed no results (exit ${child.exitCode}, ${child.signalCode}): ${err}`);
    return JSON.parse(line) as ChildResult[];
  });
  results.catch(() => undefined); // a child killed on purpose never reports
  return { child, go: () => child.stdin.write('go\n'), results };
}

/** The same image as the child builds, counting opens in the shared log. */
function countedSource(bytes: Uint8Array, id: string, opensLog: string, delayMs: number): SourceImage {
  const img = sourceImageFromBytes(bytes, { id, chunkBytes: 128 * 1024 });
  return {
    ...img,
    async open(o) {
      appendFileSync(opensLog, `${process.pid}\n`);
      const inner = await img.open(o);
      return (async function* () {
        for await (const chunk of inner as AsyncIterable<Uint8Array>) {
          if (delayMs) await new Promise((r) => setTimeout(r, delayMs));
          yield chunk;
        }
      })();
    },
  };
}

const opens = async (log: string): Promise<string[]> =>
  (await readFile(log, 'utf8').catch(() => '')).split('\n').filter(Boolean);

describe('single flight across processes', () => {
  it('20 concurrent creators in 2 processes fetch the image exactly once', async () => {
    const bytes = patternBytes(8 * MiB, 61);
    const imagePath = join(fx.root, 'image-61.raw');
    await writeFile(imagePath, bytes);
    const imageId = randomUUID();
    const opensLog = join(fx.root, 'opens-61.log');
    const delayMs = 3;
    const { go, results } = await startChild({
      instancesDir: fx.backend.instancesDir,
      imagePath,
      imageId,
      opensLog,
      count: 10,
      delayMs,
      lockStaleMs: 2_000,
    });
    const source = countedSource(bytes, imageId, opensLog, delayMs);
    const mine = Array.from({ length: 10 }, (): DiskRef => ({ instance: randomUUID(), name: 'disk' }));
    const started = performance.now();
    go();
    const local = await Promise.all(mine.map((d) => fx.backend.createFromImage(d, source)));
    const remote = await results;
    console.log(`20 creators in 2 processes: ${Math.round(performance.now() - started)} ms`);

    expect(remote.filter((r) => r.error)).toEqual([]);
    expect(await opens(opensLog)).toHaveLength(1);
    const methods = [...local.map((r) => r.method), ...remote.map((r) => r.method)];
    expect(methods.filter((m) => m === 'imported')).toHaveLength(1);
    expect(methods.filter((m) => m === 'cloned')).toHaveLength(19);

    const base = join(fx.backend.baseDir, baseKey(imageId));
    const all = [...mine, ...remote.map((r) => r.disk)];
    for (const d of all) expect((await fx.backend.info(d)).parent).toBe(base);
    expect(await fx.backend.list()).toHaveLength(20);
    expect((await readdir(fx.backend.baseDir)).sort()).toEqual([baseKey(imageId)]);
    // A disk made by each process reads the image.
    for (const d of [mine[0]!, remote[0]!.disk]) {
      expect(
        Buffer.compare(Buffer.from(await fx.read(d, 1 * MiB, 7 * MiB)), Buffer.from(bytes.subarray(7 * MiB))),
      ).toBe(0);
    }
    for (const d of all) expect(await fx.backend.remove(d)).toBe(true);
  });

  it('a fetcher killed mid-download: the other process takes over its stale lock; the half file never becomes a base', async () => {
    const bytes = patternBytes(4 * MiB, 62);
    const imagePath = join(fx.root, 'image-62.raw');
    await writeFile(imagePath, bytes);
    const imageId = randomUUID();
    const opensLog = join(fx.root, 'opens-62.log');
    const { child, go } = await startChild({
      instancesDir: fx.backend.instancesDir,
      imagePath,
      imageId,
      opensLog,
      count: 1,
      delayMs: 200, // 32 chunks: about 6 s, killed long before the end
      lockStaleMs: 2_000,
    });
    go();
    const deadline = Date.now() + 10_000;
    while ((await opens(opensLog)).length === 0) {
      if (Date.now() > deadline) throw new Error('the child never started its fetch');
      await new Promise((r) => setTimeout(r, 20));
    }
    await new Promise((r) => setTimeout(r, 300));
    const key = baseKey(imageId);
    expect((await readdir(fx.backend.baseDir)).filter((n) => n.startsWith('.tmp-'))).toHaveLength(1);
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    expect((await readdir(fx.backend.baseDir)).sort()).toContain(`${key}.lock`);

    const d: DiskRef = { instance: randomUUID(), name: 'disk' };
    const started = Date.now();
    const res = await fx.backend.createFromImage(d, countedSource(bytes, imageId, opensLog, 0));
    const waited = Date.now() - started;
    expect(res.method).toBe('imported');
    expect(waited).toBeGreaterThanOrEqual(1_000); // waited for the lock to go stale
    expect(await opens(opensLog)).toHaveLength(2);
    expect(Buffer.compare(Buffer.from(await fx.read(d, bytes.length)), Buffer.from(bytes))).toBe(0);
    // The dead fetch's temp file is left for clean-up, which removes it (unlocked now).
    const names = await readdir(fx.backend.baseDir);
    expect(names.filter((n) => n.startsWith('.tmp-'))).toHaveLength(1);
    expect(names).not.toContain(`${key}.lock`);
    const cleaned = await fx.backend.cleanupBases({ olderThanMs: 0 });
    expect(cleaned.removed.filter((p) => p.includes('.tmp-'))).toHaveLength(1);
    expect(cleaned.kept).toEqual([{ path: join(fx.backend.baseDir, key), reason: 'in-use' }]);
    expect(await fx.backend.remove(d)).toBe(true);
  });
});
