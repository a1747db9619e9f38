import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll } from 'vitest';
import { loadStack, type StackInfo } from '@ephemera/testkit';

const run = promisify(execFile);

/** The stack's libvirtd through `virsh`, for a test file (see {@link useVirsh}). */
export interface VirshSession {
  /** The dev stack (loaded before the file's tests). */
  readonly stack: StackInfo;
  /** A temp dir of the file's own, removed after its tests. */
  readonly dir: string;
  /** Domains to clean up after the tests; a test that cleans one up itself deletes it. */
  readonly domains: Set<string>;
  /** Runs `virsh -c <the stack's URI> ...args`; the error carries virsh's stderr. */
  virsh(...args: string[]): Promise<string>;
}

/**
 * Loads the stack and makes a temp dir before the file's tests; afterwards runs `virsh <undo>` on
 * every domain still in `domains` (errors ignored: it may be gone already) and removes the dir.
 */
export function useVirsh(tempPrefix: string, undo: 'destroy' | 'undefine'): VirshSession {
  let stack: StackInfo | undefined;
  let dir: string | undefined;
  const session: VirshSession = {
    get stack() {
      if (!stack) throw new Error('useVirsh: the stack is loaded in beforeAll');
      return stack;
    },
    get dir() {
      if (!dir) throw new Error('useVirsh: the temp dir is made in beforeAll');
      return dir;
    },
    domains: new Set<string>(),
    async virsh(...args: string[]): Promise<string> {
      try {
        const { stdout } = await run('virsh', ['-c', session.stack.libvirt.uri, ...args], {
          timeout: 60_000,
          maxBuffer: 16 * 1024 * 1024,
        });
        return stdout;
      } catch (err) {
        const e = err as { stderr?: string; message: string };
        throw new Error(`virsh ${args.join(' ')} failed: ${e.stderr || e.message}`);
      }
    },
  };
  beforeAll(async () => {
    stack = loadStack();
    dir = await mkdtemp(join(tmpdir(), tempPrefix));
  });
  afterAll(async () => {
    for (const name of session.domains) await session.virsh(undo, name).catch(() => undefined);
    if (dir) await rm(dir, { recursive: true, force: true });
  });
  return session;
}
