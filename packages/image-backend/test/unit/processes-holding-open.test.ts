import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { processesHoldingOpen } from '@ephemera/image-backend';

const dir = mkdtempSync(join(tmpdir(), 'holders-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('processesHoldingOpen', () => {
  it('finds another process that holds a file open (also through a symlink), and forgets it once closed', async () => {
    const file = join(dir, 'disk.raw');
    writeFileSync(file, Buffer.alloc(4096));
    const link = join(dir, 'disk.link');
    symlinkSync(file, link);
    // The child opens the file, says so, and keeps it open until its stdin closes.
    const child = spawn(
      process.execPath,
      [
        '-e',
        `const fs=require('fs');const fd=fs.openSync(${JSON.stringify(file)},'r');process.stdout.write('open\\n');process.stdin.on('end',()=>{fs.closeSync(fd);process.exit(0)});process.stdin.resume();`,
      ],
      { stdio: ['pipe', 'pipe', 'inherit'] },
    );
    await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()));
    try {
      expect(await processesHoldingOpen(file)).toContain(child.pid);
      expect(await processesHoldingOpen(link)).toContain(child.pid);
      expect(await processesHoldingOpen(file)).not.toContain(process.pid);
    } finally {
      child.stdin.end();
      await new Promise((resolve) => child.once('exit', resolve));
    }
    expect(await processesHoldingOpen(file)).not.toContain(child.pid);
  });

  it('reports nobody for a path that does not exist', async () => {
    expect(await processesHoldingOpen(join(dir, 'missing'))).toEqual([]);
  });
});
