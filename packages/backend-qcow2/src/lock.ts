import lockfile from 'proper-lockfile';
import { sleep, throwIfAborted } from '@ephemera/image-backend';

/** Releases a lock taken by {@link lockWait} or {@link tryLock}; safe to call twice. */
export type Unlock = () => Promise<void>;

/** Options of the cross-process file locks. */
export interface LockOptions {
  /** The lock directory (`mkdir` is the atomic test-and-set). */
  lockPath: string;
  /**
   * A lock whose directory was not refreshed for this long belongs to a dead process and is
   * taken over (proper-lockfile refreshes the mtime every `staleMs / 2` while it is held).
   */
  staleMs: number;
}

function guard(release: () => Promise<void>): Unlock {
  let done = false;
  return async () => {
    if (done) return;
    done = true;
    // A lock that was compromised (taken over as stale) cannot be released: nothing to do.
    await release().catch(() => undefined);
  };
}

/**
 * Takes the lock or returns `undefined` at once when another holder (another process, or
 * another backend object in this one) has it.
 */
export async function tryLock(target: string, options: LockOptions): Promise<Unlock | undefined> {
  try {
    const release = await lockfile.lock(target, {
      realpath: false,
      lockfilePath: options.lockPath,
      stale: options.staleMs,
      retries: 0,
      // A compromised lock (our process was stalled past `staleMs`) is not fatal: every write
      // under the lock ends with an atomic rename, so a second fetcher only repeats the work.
      onCompromised: () => undefined,
    });
    return guard(release);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ELOCKED') return undefined;
    throw e;
  }
}

/** Waits (polling with back-off, abortable) until the lock is ours. */
export async function lockWait(
  target: string,
  options: LockOptions & { signal?: AbortSignal | undefined },
): Promise<Unlock> {
  let delay = 10;
  for (;;) {
    throwIfAborted(options.signal, 'waiting for the image cache lock');
    const unlock = await tryLock(target, options);
    if (unlock) return unlock;
    await sleep(delay + Math.floor(Math.random() * delay), options.signal);
    delay = Math.min(delay * 2, 200);
  }
}
