import { mkdtempSync, readFileSync, readdirSync, appendFileSync, rmSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { Journal, parseJournal, processAlive } from '../../src/journal.js';
import { KeyedMutex } from '../../src/mutex.js';

/** A temp dir removed when the current test finishes. */
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'eph-j-'));
  onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

describe('Journal', () => {
  it('writes begin/intent/done durably and deletes committed operations', async () => {
    const j = new Journal(tempDir());
    const op = await j.begin('spawn', 'b0d4c1a6-2f6e-4e55-9a38-8c0f2b1c3d4e', { backend: 'rbd' });
    await op.intent('root-disk', { kind: 'disk', backend: 'rbd', name: 'disk' });
    const lines = readFileSync(op.path, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(lines.map((l) => l.t)).toEqual(['begin', 'intent']);
    let entries = await j.entries();
    expect(entries).toHaveLength(1);
    expect(entries[0]).toMatchObject({
      op: 'spawn',
      pid: process.pid,
      intents: [{ step: 'root-disk', resource: { kind: 'disk', name: 'disk' } }],
      done: [],
    });
    await op.done('root-disk', { method: 'cloned' });
    await op.end('committed');
    entries = await j.entries();
    expect(entries).toEqual([]);
  });

  it("begin leaves only the renamed .jsonl; a dead process's half-begun temp file is swept, a live one's kept", async () => {
    const j = new Journal(tempDir());
    const op = await j.begin('spawn', 'b0d4c1a6-2f6e-4e55-9a38-8c0f2b1c3d4e');
    expect(readdirSync(j.dir)).toEqual([`${op.opId}.jsonl`]);
    // A process killed between creating its begin file and renaming it leaves `<opId>.<pid>.tmp`.
    const dead = spawnSync(process.execPath, ['-e', '0']).pid!;
    const deadTmp = `00001733112345678-spawn-deadbeef.${dead}.tmp`;
    const liveTmp = `00001733112345679-spawn-feedbeef.${process.pid}.tmp`;
    writeFileSync(join(j.dir, deadTmp), '');
    writeFileSync(join(j.dir, liveTmp), '{"t":"begin"');
    expect((await j.entries()).map((e) => e.opId)).toEqual([op.opId]);
    expect(await j.sweepAborted()).toEqual([deadTmp]);
    expect(readdirSync(j.dir).sort()).toEqual([liveTmp, `${op.opId}.jsonl`].sort());
    await op.end('committed');
  });

  it('keeps a failed rollback for reconcile; tolerates a torn last line', async () => {
    const j = new Journal(tempDir());
    const op = await j.begin('destroy', 'b0d4c1a6-2f6e-4e55-9a38-8c0f2b1c3d4e');
    await op.intent('domain', { kind: 'domain', uuid: 'b0d4c1a6-2f6e-4e55-9a38-8c0f2b1c3d4e', name: 'x' });
    await op.end('rollback-failed', 'busy');
    appendFileSync(op.path, '{"t":"intent","st');
    const [e] = await j.entries();
    expect(e).toMatchObject({ op: 'destroy', end: 'rollback-failed' });
    expect(e!.intents).toHaveLength(1);
    await j.remove(e!);
    expect(await j.entries()).toEqual([]);
  });

  it('parseJournal ignores files without begin', () => {
    expect(parseJournal('garbage\n')).toBeUndefined();
  });

  it('processAlive', () => {
    expect(processAlive(process.pid)).toBe(true);
    expect(processAlive(2 ** 22 + 12345)).toBe(false);
  });
});

describe('KeyedMutex', () => {
  it('serialises one key and runs different keys in parallel', async () => {
    const m = new KeyedMutex();
    const order: string[] = [];
    const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));
    const a1 = m.run('a', async () => {
      order.push('a1+');
      await wait(30);
      order.push('a1-');
    });
    const a2 = m.run('a', async () => {
      order.push('a2+');
      await wait(5);
      order.push('a2-');
    });
    const b1 = m.run('b', async () => {
      order.push('b1+');
      await wait(5);
      order.push('b1-');
    });
    expect(m.busy('a')).toBe(true);
    await Promise.all([a1, a2, b1]);
    expect(order.indexOf('a2+')).toBeGreaterThan(order.indexOf('a1-'));
    expect(order.indexOf('b1+')).toBeLessThan(order.indexOf('a1-'));
    expect(m.busy('a')).toBe(false);
  });

  it('a failing holder releases the key', async () => {
    const m = new KeyedMutex();
    await expect(
      m.run('k', async () => {
        throw new Error('x');
      }),
    ).rejects.toThrow('x');
    expect(await m.run('k', async () => 42)).toBe(42);
  });
});

describe('Journal end states', () => {
  it('an operation whose end was written but whose file survived a crash still parses as ended', async () => {
    const j = new Journal(tempDir());
    const op = await j.begin('spawn', 'b0d4c1a6-2f6e-4e55-9a38-8c0f2b1c3d4e');
    const path = op.path;
    const text = readFileSync(path, 'utf8');
    await op.end('committed');
    // Simulate the crash between the fsynced end record and the unlink.
    const { writeFileSync } = await import('node:fs');
    writeFileSync(path, `${text}{"t":"end","status":"committed","at":"x"}\n`);
    const [e] = await j.entries();
    expect(e!.end).toBe('committed');
  });
});
