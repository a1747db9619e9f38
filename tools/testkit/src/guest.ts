/**
 * The bootable test guest (built by `tools/guest-image`, sources in `tools/guest/`).
 *
 * The guest is a BIOS boot sector. Disk layout (512-byte sectors): 0 boot code, 1 marker text
 * (NUL-terminated printable ASCII), 2 boot counter (uint16 LE, incremented on every boot), rest
 * padding. On COM1 it prints, one CRLF-terminated line each:
 * `EPHEMERA-BOOT`, `EPHEMERA-MARKER <marker>`, `EPHEMERA-BOOTS <n>`, `EPHEMERA-POWEROFF`, then powers
 * off through APM (ACPI S5), so libvirt reports the domain `shutoff` with reason `shutdown`.
 * The power-off needs ACPI: a libvirt domain must have `<features><acpi/></features>` (without it
 * libvirt passes `-no-acpi` and the guest prints `EPHEMERA-ERROR no-acpi` and halts instead).
 * With `mode: 'count'` it does not power off: after `EPHEMERA-BOOTS <n>` it prints
 * `EPHEMERA-COUNT <i>` (i = 0, 1, 2, ...) every 100 ms (PIT-timed) until it is stopped, so a test
 * can tell a guest that kept running (the count goes on) from one that rebooted (it starts at 0 again).
 * Boots under `-machine pc` and `q35`, TCG and KVM, from IDE/SATA/virtio disks, file or RBD.
 * The cached image is shared: boot a copy, an overlay or a clone, never the cached file itself.
 */
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

/** Options of {@link guestImage}; each maps to a `tools/guest-image` flag. */
export interface GuestImageOptions {
  /** Marker text written to sector 1 (1..255 printable ASCII). Default `EPHEMERA-GUEST base`. */
  marker?: string;
  /** Virtual size in bytes (multiple of 512, at least 4096). Default 1 MiB. */
  size?: number;
  /** Padding after the first 4 KiB: sparse zeros (default) or deterministic pseudo-random data. */
  fill?: 'zero' | 'random';
  /** Output format. Default `raw`. */
  format?: 'raw' | 'qcow2';
  /** `poweroff` (default): power off after the boot lines; `count`: print a counter every 100 ms, forever. */
  mode?: 'poweroff' | 'count';
  /** Copy the image to this path (a private, bootable copy) instead of returning the cached file. */
  out?: string;
}

/** Prefix of the serial line that carries the marker: `EPHEMERA-MARKER <marker text>`. */
export const MARKER_PREFIX = 'EPHEMERA-MARKER ';
/** Prefix of the serial line with the boot count after this boot: `EPHEMERA-BOOTS <n>`. */
export const BOOTS_PREFIX = 'EPHEMERA-BOOTS ';
/** Prefix of the counting guest's lines (`mode: 'count'`): `EPHEMERA-COUNT <n>`, every 100 ms. */
export const COUNT_PREFIX = 'EPHEMERA-COUNT ';
/** The line the guest prints right before it powers off. */
export const POWEROFF_LINE = 'EPHEMERA-POWEROFF';
/** Byte offset of the marker sector (sector 1) on the guest disk. */
export const MARKER_OFFSET = 512;
/** Byte offset of the boot counter sector (sector 2) on the guest disk. */
export const BOOT_COUNTER_OFFSET = 1024;
/** Size of a guest disk sector. */
export const SECTOR_SIZE = 512;

/**
 * Builds (or reuses from `<repo>/.cache/guest-image/`) the guest image and resolves to its path.
 * Runs `tools/guest-image`; rejects with its stderr on failure.
 */
export function guestImage(opts: GuestImageOptions = {}): Promise<string> {
  const args: string[] = [];
  if (opts.marker !== undefined) args.push('--marker', opts.marker);
  if (opts.size !== undefined) args.push('--size', String(opts.size));
  if (opts.fill !== undefined) args.push('--fill', opts.fill);
  if (opts.format !== undefined) args.push('--format', opts.format);
  if (opts.mode !== undefined) args.push('--mode', opts.mode);
  if (opts.out !== undefined) args.push('--out', opts.out);
  return new Promise((resolvePath, reject) => {
    execFile(
      'bash',
      [join(repoRoot, 'tools', 'guest-image'), ...args],
      { timeout: 900_000, maxBuffer: 1024 * 1024 },
      (err, stdout, stderr) => {
        if (err) {
          reject(new Error(`tools/guest-image failed: ${String(stderr).trim() || err.message}`));
          return;
        }
        const path = String(stdout).trim().split('\n').pop() ?? '';
        if (!path) reject(new Error('tools/guest-image printed no path'));
        else resolvePath(path);
      },
    );
  });
}

/**
 * The 512-byte marker sector for `marker` (text, NUL, zero padding): write it at
 * {@link MARKER_OFFSET} of a guest disk to change the marker that disk prints.
 */
export function markerSector(marker: string): Buffer {
  if (marker.length < 1 || marker.length > 255 || !/^[\x20-\x7e]+$/.test(marker)) {
    throw new RangeError('marker must be 1..255 printable ASCII characters');
  }
  const sector = Buffer.alloc(SECTOR_SIZE);
  sector.write(marker, 0, 'latin1');
  return sector;
}

/** Complete (newline-terminated) serial lines, without CR. */
function completeLines(text: string): string[] {
  const end = text.lastIndexOf('\n');
  if (end < 0) return [];
  return text
    .slice(0, end)
    .split('\n')
    .map((l) => l.replace(/\r$/, ''));
}

/**
 * The marker text from a serial log (the first complete `EPHEMERA-MARKER ` line), or `undefined`
 * when the guest has not printed it (yet).
 */
export function readMarker(serialLogText: string): string | undefined {
  for (const line of completeLines(serialLogText)) {
    const at = line.indexOf(MARKER_PREFIX);
    if (at >= 0) return line.slice(at + MARKER_PREFIX.length);
  }
  return undefined;
}

/** The boot count the guest printed (`EPHEMERA-BOOTS <n>`), or `undefined`. */
export function readBootCount(serialLogText: string): number | undefined {
  for (const line of completeLines(serialLogText)) {
    const m = /EPHEMERA-BOOTS (\d+)$/.exec(line);
    if (m) return Number(m[1]);
  }
  return undefined;
}

/**
 * The counter values a counting guest printed (`EPHEMERA-COUNT <n>` lines, complete lines only), in
 * log order: `[0, 1, 2, ...]` for one guest that kept running; a reboot starts again at 0.
 */
export function readCounts(serialLogText: string): number[] {
  const out: number[] = [];
  for (const line of completeLines(serialLogText)) {
    const m = /EPHEMERA-COUNT (\d+)$/.exec(line);
    if (m) out.push(Number(m[1]));
  }
  return out;
}

/** Whether the guest announced its power-off (it prints this right before powering off). */
export function sawPoweroff(serialLogText: string): boolean {
  return completeLines(serialLogText).some((l) => l.endsWith(POWEROFF_LINE));
}

async function readText(path: string): Promise<string> {
  try {
    return await readFile(path, 'latin1');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return '';
    throw err;
  }
}

/**
 * Polls a serial log file until `parse` returns a value; rejects after `timeoutMs` with the log's
 * tail in the message (or immediately if the guest printed `EPHEMERA-ERROR`).
 */
export async function waitForSerial<T>(
  serialLogPath: string,
  parse: (text: string) => T | undefined,
  timeoutMs: number,
  what = 'serial output',
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const text = await readText(serialLogPath);
    const value = parse(text);
    if (value !== undefined) return value;
    const error = /EPHEMERA-ERROR [^\r\n]*/.exec(text);
    if (error || Date.now() >= deadline) {
      const tail = text.slice(-400).replace(/\x1b\[[0-9;?]*[a-zA-Z]/g, '');
      const why = error ? `the guest reported "${error[0]}"` : `timed out after ${timeoutMs} ms`;
      throw new Error(`waiting for ${what} in ${serialLogPath}: ${why}; log tail: ${JSON.stringify(tail)}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Waits until the serial log at `serialLogPath` shows the marker line; resolves to the marker text. */
export function waitForMarker(serialLogPath: string, timeoutMs: number): Promise<string> {
  return waitForSerial(serialLogPath, readMarker, timeoutMs, 'the guest marker');
}
