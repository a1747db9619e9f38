import { describe, expect, it } from 'vitest';
import { AbortedError, sleep } from '@ephemera/image-backend';

describe('sleep', () => {
  it('resolves after the delay', async () => {
    const t0 = performance.now();
    await sleep(30);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(25);
  });

  it('rejects with AbortedError (the signal reason as cause) when aborted before or during the wait', async () => {
    const reason = new Error('stop');
    const before = sleep(10_000, AbortSignal.abort(reason));
    await expect(before).rejects.toBeInstanceOf(AbortedError);
    await expect(before).rejects.toMatchObject({ code: 'ABORTED', cause: reason });
    const ac = new AbortController();
    const during = sleep(10_000, ac.signal);
    ac.abort(reason);
    await expect(during).rejects.toMatchObject({ name: 'AbortedError', cause: reason });
  });

  it('rejects with what abortError makes of the signal reason, before or during the wait', async () => {
    const reason = new Error('stop');
    const own = (r: unknown) => Object.assign(new Error('own'), { r });
    await expect(sleep(10_000, AbortSignal.abort(reason), { abortError: own })).rejects.toMatchObject({
      message: 'own',
      r: reason,
    });
    const ac = new AbortController();
    const during = sleep(10_000, ac.signal, { abortError: (r) => r });
    ac.abort(reason);
    await expect(during).rejects.toBe(reason);
  });
});
