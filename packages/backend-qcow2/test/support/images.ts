import { writeFile, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { sourceImageFromBytes, type SourceImage } from '@ephemera/image-backend';
import { exec } from './fixture.js';

/** A SourceImage over bytes that counts `open()` calls and can pace its chunks. */
export function countingSource(
  bytes: Uint8Array,
  options: { diskFormat?: string; virtualSize?: number; id?: string; chunkBytes?: number; delayMs?: number } = {},
): SourceImage & { opens: () => number } {
  const img = sourceImageFromBytes(bytes, {
    ...(options.id ? { id: options.id } : {}),
    diskFormat: options.diskFormat ?? 'raw',
    ...(options.virtualSize ? { virtualSize: options.virtualSize } : {}),
    chunkBytes: options.chunkBytes ?? 64 * 1024,
  });
  let opens = 0;
  const delay = options.delayMs ?? 0;
  return {
    ...img,
    opens: () => opens,
    async open(o) {
      opens++;
      const inner = await img.open(o);
      return (async function* () {
        for await (const chunk of inner as AsyncIterable<Uint8Array>) {
          if (delay) await new Promise((r) => setTimeout(r, delay));
          yield chunk;
        }
      })();
    },
  };
}

/** Makes an image file with qemu-img and returns its bytes (`args` after `create -f fmt`). */
export async function qemuImageBytes(dir: string, format: string, args: string[]): Promise<Uint8Array> {
  const path = join(dir, `img-${Math.random().toString(36).slice(2)}.${format}`);
  try {
    await exec('qemu-img', ['create', '-q', '-f', format, ...args.map((a) => a.replace('@', path))], {
      timeout: 30_000,
    });
    return new Uint8Array(await readFile(path));
  } finally {
    await rm(path, { force: true });
  }
}

/** Converts raw bytes to a qcow2 image (qemu-img convert) and returns the qcow2 bytes. */
export async function qcow2Of(dir: string, raw: Uint8Array): Promise<Uint8Array> {
  const src = join(dir, `raw-${Math.random().toString(36).slice(2)}.raw`);
  const dst = `${src}.qcow2`;
  try {
    await writeFile(src, raw);
    await exec('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', src, dst], { timeout: 60_000 });
    return new Uint8Array(await readFile(dst));
  } finally {
    await rm(src, { force: true });
    await rm(dst, { force: true });
  }
}

/** `qemu-io -c 'write -P <pattern> <offset> <length>'` on a disk of known format. */
export async function writePattern(
  path: string,
  format: string,
  pattern: number,
  offset: number,
  length: number,
): Promise<void> {
  await exec('qemu-io', ['-f', format, '-c', `write -P 0x${pattern.toString(16)} ${offset} ${length}`, path], {
    timeout: 30_000,
  });
}
