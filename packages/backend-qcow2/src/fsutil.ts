import { open, readdir, readlink, realpath } from 'node:fs/promises';

/** fsyncs a file or directory by path (directories: makes a rename durable). */
export async function fsyncPath(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** The errno code of an error, if it has one. */
export function errno(e: unknown): string | undefined {
  const c = (e as NodeJS.ErrnoException | undefined)?.code;
  return typeof c === 'string' ? c : undefined;
}

/** Pids of other processes that hold `path` open (scans `/proc/<pid>/fd`). */
export async function openers(path: string): Promise<number[]> {
  let target: string;
  try {
    target = await realpath(path);
  } catch {
    return [];
  }
  let entries: string[];
  try {
    entries = await readdir('/proc');
  } catch {
    return [];
  }
  const pids: number[] = [];
  await Promise.all(
    entries
      .filter((e) => /^\d+$/.test(e) && Number(e) !== process.pid)
      .map(async (pid) => {
        let fds: string[];
        try {
          fds = await readdir(`/proc/${pid}/fd`);
        } catch {
          return;
        }
        for (const fd of fds) {
          try {
            if ((await readlink(`/proc/${pid}/fd/${fd}`)) === target) {
              pids.push(Number(pid));
              return;
            }
          } catch {
            // the fd was closed meanwhile
          }
        }
      }),
  );
  return pids.sort((a, b) => a - b);
}
