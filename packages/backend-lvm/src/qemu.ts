import { spawn } from 'node:child_process';
import { UnsafeImageError } from '@ephemera/image-backend';
import { run } from './exec.js';

/** Facts of an image file, from `qemu-img info`. */
export interface InspectedFile {
  virtualSize: number;
  format: string;
}

/**
 * Reads an image file's header with `qemu-img info` (format forced, never probed) and refuses
 * what must not be written to a disk: a backing file, an external data file, encryption, or a
 * format that is not the declared one.
 */
export async function inspectImageFile(path: string, format: 'raw' | 'qcow2', signal?: AbortSignal): Promise<InspectedFile> {
  // Probe without -f first: a declared qcow2 that is something else is refused.
  const probe = JSON.parse((await run('qemu-img', ['info', '--output=json', path], { timeoutMs: 60_000, signal })).stdout) as {
    format?: string;
  };
  if (probe.format !== format)
    throw new UnsafeImageError('format-mismatch', `image declared ${format} but its header says ${String(probe.format)}`);
  const { stdout } = await run('qemu-img', ['info', '--output=json', '-f', format, path], { timeoutMs: 60_000, signal });
  const info = JSON.parse(stdout) as {
    'virtual-size'?: number;
    format?: string;
    'backing-filename'?: string;
    encrypted?: boolean;
    'format-specific'?: { data?: { 'data-file'?: string } };
  };
  if (info['backing-filename'])
    throw new UnsafeImageError('backing-file', `image has a backing file (${info['backing-filename']})`);
  if (info['format-specific']?.data?.['data-file'] !== undefined)
    throw new UnsafeImageError('data-file', 'image has an external data file');
  if (info.encrypted) throw new UnsafeImageError('encrypted', 'image is encrypted');
  const virtualSize = info['virtual-size'];
  if (typeof virtualSize !== 'number' || !Number.isSafeInteger(virtualSize) || virtualSize <= 0)
    throw new UnsafeImageError('virtual-size', `image reports an invalid virtual size ${String(virtualSize)}`);
  return { virtualSize, format: info.format ?? format };
}

/**
 * `qemu-img convert -n -O raw` of `source` onto an existing block device, with progress
 * (`-p`, percent) and abort (the process is killed).
 */
export function convertImageToDevice(
  source: string,
  format: 'raw' | 'qcow2',
  device: string,
  options: { signal?: AbortSignal | undefined; onProgress?: (percent: number) => void; timeoutMs?: number } = {},
): Promise<void> {
  const args = ['convert', '-p', '-n', '-f', format, '-O', 'raw', source, device];
  return new Promise((resolve, reject) => {
    if (options.signal?.aborted) {
      reject(options.signal.reason ?? new Error('aborted'));
      return;
    }
    const child = spawn('qemu-img', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    let out = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 3_600_000);
    const onAbort = () => child.kill('SIGKILL');
    options.signal?.addEventListener('abort', onAbort, { once: true });
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      const all = [...out.matchAll(/\((\d+(?:\.\d+)?)\/100%\)/g)];
      const last = all.at(-1);
      if (last) options.onProgress?.(Number(last[1]));
      if (out.length > 4096) out = out.slice(-256);
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr = (stderr + d).slice(-4096);
    });
    child.on('error', (e) => {
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
      reject(e);
    });
    child.on('close', (code, sig) => {
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
      if (code === 0) resolve();
      else if (options.signal?.aborted) reject(options.signal.reason ?? new Error('aborted'));
      else reject(new Error(`qemu-img ${args.join(' ')} failed (${code ?? sig}): ${stderr.trim()}`));
    });
  });
}
