// Process-level behaviour of the native addon, checked in child processes.
import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import { ErrorCode } from '@ephemera/libvirt-napi';
import { defaultAddonPath } from '../../src/native.js';

const CHILD = fileURLToPath(new URL('../fixtures/child.cjs', import.meta.url));

interface ChildResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

function runChild(mode: string, killAfterMs: number): Promise<ChildResult> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, [CHILD, defaultAddonPath(), mode], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), killAfterMs);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, ms: performance.now() - t0 });
    });
  });
}

describe('process behaviour', () => {
  it('exits by itself with connections left open, and libvirt prints nothing to stderr', async () => {
    const r = await runChild('errors', 15_000);
    expect(r.signal).toBeNull();
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    const { codes } = JSON.parse(r.stdout.trim()) as { codes: unknown[] };
    // VIR_ERR_NO_DOMAIN, VIR_ERR_XML_DETAIL, VIR_ERR_OPERATION_DENIED, VIR_ERR_NO_SUPPORT, then a failed open.
    expect(codes.slice(0, 4)).toEqual([
      ErrorCode.VIR_ERR_NO_DOMAIN,
      ErrorCode.VIR_ERR_XML_DETAIL,
      ErrorCode.VIR_ERR_OPERATION_DENIED,
      ErrorCode.VIR_ERR_NO_SUPPORT,
    ]);
    expect(typeof codes[4]).toBe('number');
    expect(r.ms).toBeLessThan(10_000);
  });

  it('stays alive while a connection is ref()ed', async () => {
    const r = await runChild('ref', 2_000);
    expect(r.stdout).toContain('"codes"');
    expect(r.signal).toBe('SIGKILL');
    expect(r.stderr).toBe('');
  });
});
