import { open } from 'node:fs/promises';

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

