#!/usr/bin/env node
// Builds Ephemera's bootable test guest image (see tools/guest/boot.asm for the disk layout and
// what the guest prints), cached by content in <repo>/.cache/guest-image/<hash>.<format>.
// Usage: tools/guest-image [--marker TEXT] [--size BYTES|64K|256M|1G] [--fill zero|random]
//                          [--format raw|qcow2] [--mode poweroff|count] [--out PATH]
// Prints the path of the image on stdout (the cached file, or PATH with --out).
// The cached file is shared: never boot it in place (the guest writes its boot counter to its own
// disk); boot a copy, a qcow2 overlay, an RBD clone, or use --out.
import { execFile } from 'node:child_process';
import { createCipheriv, createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, open, rename, rm, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '..', '..');
const SECTOR = 512;
/** Sectors 0..7 hold boot code, marker and counter; padding starts here. */
const HEADER_BYTES = 4096;
const MAX_MARKER = 255;
const DEFAULT_MARKER = 'EPHEMERA-GUEST base';
const DEFAULT_SIZE = 1024 * 1024;

class UsageError extends Error {}

function parseSize(text) {
  const m = /^(\d+)\s*([kmgt]?)(i?b)?$/i.exec(String(text).trim());
  if (!m) throw new UsageError(`invalid --size ${JSON.stringify(text)} (use bytes or a K/M/G/T suffix)`);
  const mult = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }[m[2].toLowerCase()];
  const size = Number(m[1]) * mult;
  if (!Number.isSafeInteger(size)) throw new UsageError(`--size ${text} is too large`);
  if (size < HEADER_BYTES) throw new UsageError(`--size must be at least ${HEADER_BYTES} bytes`);
  if (size % SECTOR !== 0) throw new UsageError(`--size must be a multiple of ${SECTOR} bytes`);
  return size;
}

function parseArgs(argv) {
  const opts = {
    marker: DEFAULT_MARKER,
    size: DEFAULT_SIZE,
    fill: 'zero',
    format: 'raw',
    mode: 'poweroff',
    out: undefined,
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '-h' || arg === '--help') {
      process.stdout.write(
        'usage: tools/guest-image [--marker TEXT] [--size BYTES|256M|1G] [--fill zero|random]\n' +
          '                         [--format raw|qcow2] [--mode poweroff|count] [--out PATH]\n' +
          'Builds (once, cached by content) a BIOS-bootable test disk that prints\n' +
          '"EPHEMERA-MARKER <marker>" on COM1 and powers off (--mode count: prints\n' +
          '"EPHEMERA-COUNT <n>" every 100 ms instead, forever). Prints the image path.\n',
      );
      process.exit(0);
    }
    const eq = arg.indexOf('=');
    const [name, inline] = arg.startsWith('--') && eq > 0 ? [arg.slice(0, eq), arg.slice(eq + 1)] : [arg, undefined];
    const value = () => {
      if (inline !== undefined) return inline;
      if (i + 1 >= argv.length) throw new UsageError(`${name} needs a value`);
      return argv[++i];
    };
    switch (name) {
      case '--marker':
        opts.marker = value();
        break;
      case '--size':
        opts.size = parseSize(value());
        break;
      case '--fill':
        opts.fill = value();
        break;
      case '--format':
        opts.format = value();
        break;
      case '--mode':
        opts.mode = value();
        break;
      case '--out':
        opts.out = resolve(value());
        break;
      default:
        throw new UsageError(`unknown argument ${JSON.stringify(arg)}`);
    }
  }
  if (opts.marker.length < 1 || opts.marker.length > MAX_MARKER || !/^[\x20-\x7e]+$/.test(opts.marker)) {
    throw new UsageError(`--marker must be 1..${MAX_MARKER} printable ASCII characters`);
  }
  if (!['zero', 'random'].includes(opts.fill)) throw new UsageError('--fill must be zero or random');
  if (!['raw', 'qcow2'].includes(opts.format)) throw new UsageError('--format must be raw or qcow2');
  if (!['poweroff', 'count'].includes(opts.mode)) throw new UsageError('--mode must be poweroff or count');
  return opts;
}

function cacheKey(opts) {
  const h = createHash('sha256');
  for (const f of ['boot.asm', 'build.mjs']) h.update(readFileSync(join(here, f))).update('\0');
  h.update(
    JSON.stringify({
      v: 1,
      marker: opts.marker,
      size: opts.size,
      fill: opts.fill,
      format: opts.format,
      mode: opts.mode,
    }),
  );
  return h.digest('hex').slice(0, 24);
}

/** Deterministic pseudo-random bytes: the AES-128-CTR keystream of a fixed key (GB/s with AES-NI). */
function fillStream() {
  const key = createHash('sha256').update('ephemera-guest-image-fill-v1').digest().subarray(0, 16);
  return createCipheriv('aes-128-ctr', key, Buffer.alloc(16));
}

async function buildRaw(path, opts, work) {
  const bootBin = join(work, 'boot.bin');
  // --mode count assembles boot.asm's COUNT variant; poweroff is the same code as before modes.
  const defines = opts.mode === 'count' ? ['-DCOUNT'] : [];
  await run('nasm', ['-f', 'bin', ...defines, '-o', bootBin, join(here, 'boot.asm')], { timeout: 30_000 });
  const boot = readFileSync(bootBin);
  if (boot.length !== SECTOR || boot.readUInt16LE(510) !== 0xaa55) {
    throw new Error(`nasm produced a bad boot sector (${boot.length} bytes)`);
  }
  const header = Buffer.alloc(HEADER_BYTES);
  boot.copy(header, 0);
  header.write(opts.marker, SECTOR, 'latin1'); // sector 1: marker, NUL-terminated (rest is zero)
  // sector 2 (boot counter) and sectors 3..7 stay zero
  const fh = await open(path, 'w');
  try {
    await fh.write(header, 0, header.length, 0);
    if (opts.fill === 'random') {
      const chunk = 4 * 1024 * 1024;
      const zeros = Buffer.alloc(chunk);
      const cipher = fillStream();
      for (let pos = HEADER_BYTES; pos < opts.size; pos += chunk) {
        const n = Math.min(chunk, opts.size - pos);
        const data = cipher.update(n === chunk ? zeros : zeros.subarray(0, n));
        await fh.write(data, 0, n, pos);
      }
    }
    await fh.truncate(opts.size); // sparse zeros for --fill zero
  } finally {
    await fh.close();
  }
}

async function build(opts) {
  const cacheDir = join(repo, '.cache', 'guest-image');
  const target = join(cacheDir, `${cacheKey(opts)}.${opts.format}`);
  if (!existsSync(target)) {
    await mkdir(cacheDir, { recursive: true });
    const work = await mkdtemp(join(cacheDir, '.build-'));
    try {
      process.stderr.write(
        `guest-image: building ${target} (${opts.size} bytes, fill ${opts.fill}, ${opts.format}, ${opts.mode})\n`,
      );
      const raw = join(work, 'image.raw');
      await buildRaw(raw, opts, work);
      let result = raw;
      if (opts.format === 'qcow2') {
        result = join(work, 'image.qcow2');
        await run('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', raw, result], { timeout: 600_000 });
      }
      await rename(result, target); // atomic: concurrent builders of one key produce identical files
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  }
  if (!opts.out) return target;
  await mkdir(dirname(opts.out), { recursive: true });
  await run('cp', ['--sparse=always', '--reflink=auto', '--', target, opts.out], { timeout: 600_000 });
  await stat(opts.out);
  return opts.out;
}

try {
  const opts = parseArgs(process.argv.slice(2));
  process.stdout.write(`${await build(opts)}\n`);
} catch (err) {
  const detail =
    err && typeof err === 'object' && 'stderr' in err && err.stderr ? `: ${String(err.stderr).trim()}` : '';
  process.stderr.write(`guest-image: ${err instanceof Error ? err.message : String(err)}${detail}\n`);
  process.exit(err instanceof UsageError ? 2 : 1);
}
