import { describe, expect, it } from 'vitest';
import { GlanceAbortedError } from '@ephemera/glance';
import { GlanceHttp } from '../../src/http.js';
import { DEFAULT_RETRY } from '../../src/retry.js';

const http = new GlanceHttp({
  url: 'http://127.0.0.1:9',
  auth: { token: async () => 'unused' } as never,
  timeoutMs: 1_000,
  retry: DEFAULT_RETRY,
  userAgent: 'test',
});

describe('GlanceHttp.sleep (the waits between retries and polls)', () => {
  it('resolves after the delay', async () => {
    const t0 = performance.now();
    await http.sleep(30, undefined, undefined);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(25);
  });

  it('an abort, before or during the wait, rejects with GlanceAbortedError caused by the signal reason', async () => {
    const reason = new Error('stop');
    const before = http.sleep(10_000, AbortSignal.abort(reason), 'img-1');
    await expect(before).rejects.toBeInstanceOf(GlanceAbortedError);
    await expect(before).rejects.toMatchObject({ code: 'GLANCE_ABORTED', imageId: 'img-1', cause: reason });
    const ac = new AbortController();
    const during = http.sleep(10_000, ac.signal, undefined);
    ac.abort(reason);
    const err = await during.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GlanceAbortedError);
    expect((err as GlanceAbortedError).cause).toBe(reason);
    expect((err as GlanceAbortedError).imageId).toBeUndefined();
  });
});
