// The monitor probe: concurrent callers share one ping, an answer counts for `freshMs` only when
// the caller accepts one, a refusal is an answer, a timeout is not (and is not remembered).
import { PermissionDenied, Timeout } from '@ephemera/ceph-rbd-napi';
import { describe, expect, it } from 'vitest';
import { MonitorProbe } from '../../src/monitor.js';

function probe(answers: (() => Promise<void>)[]) {
  let t = 0;
  const calls: number[] = [];
  const p = new MonitorProbe(
    () => {
      calls.push(t);
      const next = answers.shift();
      if (!next) throw new Error('unexpected ping');
      return next();
    },
    () => t,
  );
  return { p, calls, advance: (ms: number) => (t += ms) };
}

describe('MonitorProbe', () => {
  it('pings every time without freshMs; callers at the same time share one ping', async () => {
    let release!: () => void;
    const { p, calls } = probe([() => new Promise<void>((r) => (release = r)), () => Promise.resolve()]);
    const a = p.check();
    const b = p.check();
    release();
    await Promise.all([a, b]);
    expect(calls).toHaveLength(1);
    await p.check();
    expect(calls).toHaveLength(2);
  });

  it('accepts an answer younger than freshMs, pings again once it is older', async () => {
    const { p, calls, advance } = probe([() => Promise.resolve(), () => Promise.resolve()]);
    await p.check();
    advance(999);
    await p.check(1000);
    expect(calls).toHaveLength(1);
    advance(1);
    await p.check(1000);
    expect(calls).toEqual([0, 1000]);
  });

  it('a refusal (EACCES) is an answer; a timeout is not, and voids the answer before it', async () => {
    const { p, calls } = probe([
      () => Promise.reject(new PermissionDenied(13, 'cluster.monCommand', '')),
      () => Promise.reject(new Timeout(110, 'cluster.monCommand', '')),
      () => Promise.reject(new Timeout(110, 'cluster.monCommand', '')),
      () => Promise.resolve(),
    ]);
    await expect(p.check()).resolves.toBeUndefined();
    // The refusal's answer is fresh: accepted without a ping.
    await expect(p.check(1000)).resolves.toBeUndefined();
    expect(calls).toHaveLength(1);
    await expect(p.check()).rejects.toBeInstanceOf(Timeout);
    // Since that timeout the earlier answer no longer counts: a ping, timed out too.
    await expect(p.check(1000)).rejects.toBeInstanceOf(Timeout);
    await expect(p.check(1000)).resolves.toBeUndefined();
    expect(calls).toHaveLength(4);
  });

  it('a failed ping is not shared with later callers', async () => {
    const { p, calls } = probe([() => Promise.reject(new Error('socket closed')), () => Promise.resolve()]);
    await expect(p.check()).rejects.toThrow('socket closed');
    await expect(p.check(1000)).resolves.toBeUndefined();
    expect(calls).toHaveLength(2);
  });
});
