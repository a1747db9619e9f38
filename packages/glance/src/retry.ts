/** Exponential backoff with jitter. */

/** How failed requests are retried. Only 5xx, connection errors and timeouts are ever retried. */
export interface RetryPolicy {
  /** Total attempts including the first (>= 1). Default 4. */
  attempts: number;
  /** Delay before the first retry, in ms. Default 200. */
  baseDelayMs: number;
  /** Upper bound of one delay, in ms. Default 5 000. */
  maxDelayMs: number;
}

/** The defaults: 4 attempts, 200 ms doubling up to 5 s, "equal jitter". */
export const DEFAULT_RETRY: RetryPolicy = { attempts: 4, baseDelayMs: 200, maxDelayMs: 5_000 };

/**
 * Delay before retry number `retry` (1 = first retry): `min(max, base * 2^(retry-1))`, then a
 * random value in [d/2, d] ("equal jitter"). `random` is injectable for tests.
 */
export function backoffDelay(policy: RetryPolicy, retry: number, random: () => number = Math.random): number {
  const exp = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** Math.max(0, retry - 1));
  return Math.round(exp / 2 + random() * (exp / 2));
}
