// qemu-img dies with the process that started it, even a SIGKILLed one (reliability known
// failure 5: a killed driver left `qemu-img convert` writing a temp file that crash recovery had
// already removed). A child node process runs the BUILT wrapper (dist) with a `qemu-img convert`
// that blocks (its source is a FIFO nobody writes); the test SIGKILLs that node process alone.
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findSetpriv, withParentDeathSignal } from '@ephemera/qemu-img-wrapper';
import { qemuImgProcesses } from '../unit/helpers.js';

const exec = promisify(execFile);
const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..');
const dist = pathToFileURL(join(repo, 'packages', 'qemu-img-wrapper', 'dist', 'index.js')).href;
let dir: string;

async function until(fn: () => Promise<boolean>, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await fn()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return fn();
}

/** Starts the child (dist wrapper) converting from a FIFO; resolves once qemu-img runs. */
async function startChild(fifo: string, dieWithParent: boolean) {
  const code = `
    import { QemuImg } from ${JSON.stringify(dist)};
    const q = new QemuImg({ dieWithParent: process.env.DIE === '1', onExec: (a) => console.log(JSON.stringify(a)) });
    await q.convert(process.env.SRC, process.env.SRC + '.out', { sourceFormat: 'raw', targetFormat: 'raw', untrusted: false });`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', code], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', SRC: fifo, DIE: dieWithParent ? '1' : '0' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (d) => (out += String(d)));
  child.stderr.on('data', (d) => (out += String(d)));
  const exit = new Promise<void>((r) => child.once('exit', () => r()));
  expect(
    await until(async () => (await qemuImgProcesses(fifo)).length === 1, 20_000),
    `qemu-img did not start: ${out}`,
  ).toBe(true);
  return { child, exit, argv: JSON.parse(out.split('\n')[0]!) as string[] };
}

beforeAll(async () => {
  await exec('npx', ['nx', 'run', '@ephemera/qemu-img-wrapper:build'], {
    cwd: repo,
    timeout: 300_000,
    maxBuffer: 64 << 20,
    env: { ...process.env, NX_DAEMON: 'false', NX_NO_CLOUD: 'true', NX_TUI: 'false' },
  });
  dir = await mkdtemp(join(tmpdir(), 'qiw-pdeath-'));
}, 300_000);

afterAll(async () => {
  for (const pid of await qemuImgProcesses(dir)) process.kill(pid, 'SIGKILL');
  await rm(dir, { recursive: true, force: true });
});

describe('qemu-img dies with its parent', () => {
  it('setpriv is installed, and argv is prefixed with --pdeathsig KILL', () => {
    const setpriv = findSetpriv();
    expect(setpriv).toMatch(/\/setpriv$/);
    expect(withParentDeathSignal(['qemu-img', 'info', 'x'])).toEqual([
      setpriv,
      '--pdeathsig',
      'KILL',
      '--',
      'qemu-img',
      'info',
      'x',
    ]);
    expect(withParentDeathSignal(['qemu-img', 'info', 'x'], false)).toEqual(['qemu-img', 'info', 'x']);
  });

  it('a SIGKILL of the node process alone takes its qemu-img convert', async () => {
    const fifo = join(dir, 'a.fifo');
    await exec('mkfifo', [fifo]);
    const c = await startChild(fifo, true);
    expect(c.argv.slice(0, 4)).toEqual([findSetpriv(), '--pdeathsig', 'KILL', '--']);
    c.child.kill('SIGKILL'); // the node process only, as a crash or an OOM kill does
    await c.exit;
    expect(
      await until(async () => (await qemuImgProcesses(fifo)).length === 0, 3_000),
      'qemu-img outlived its parent',
    ).toBe(true);
  }, 60_000);

  it('without it (dieWithParent: false) qemu-img outlives a SIGKILLed parent', async () => {
    const fifo = join(dir, 'b.fifo');
    await exec('mkfifo', [fifo]);
    const c = await startChild(fifo, false);
    expect(c.argv[0]).toBe('qemu-img');
    c.child.kill('SIGKILL');
    await c.exit;
    await new Promise((r) => setTimeout(r, 500));
    const left = await qemuImgProcesses(fifo);
    expect(left).toHaveLength(1);
    process.kill(left[0]!, 'SIGKILL');
  }, 60_000);
});
