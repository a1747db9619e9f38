// `ephemera boot`: what the command asks the driver for (the driver itself is tested against the stack).
import { PassThrough } from 'node:stream';
import { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import type { Driver, SpawnRequest } from '@ephemera/driver';
import { addBootCommand } from '../../src/boot.js';

const IMAGE = '0b6f2d39-4fd6-4a0c-9d5c-1f7b1c3c2a11';

/** Runs `ephemera boot ARGS` against a driver that records the spawn request it gets. */
async function boot(args: string[]): Promise<{ req?: SpawnRequest; error?: unknown; out: string }> {
  const stderr = new PassThrough();
  stderr.resume();
  let out = '';
  let req: SpawnRequest | undefined;
  const driver = {
    on: () => undefined,
    spawn: async (r: SpawnRequest) => {
      req = r;
      const inst = r.instance as { uuid: string; name?: string };
      return {
        instance: { name: inst.name, uuid: inst.uuid, state: 'running', backend: 'rbd', consolePath: '/x' },
        rootDisk: { method: 'clone', durationMs: 1 },
        timings: {},
        totalMs: 1,
      };
    },
  } as unknown as Driver;
  const program = new Command().exitOverride().configureOutput({ writeErr: () => undefined });
  addBootCommand(program, {
    io: { stdout: new PassThrough(), stderr, env: {} },
    json: () => false,
    withDriver: (fn) => fn(driver),
    print: (_json, text) => {
      out += text();
    },
  });
  try {
    await program.parseAsync(['boot', ...args], { from: 'user' });
    return { req, out };
  } catch (error) {
    return { req, error, out };
  }
}

describe('ephemera boot', () => {
  it('--encrypt luks asks for LUKS-encrypted disks; without it the flavor decides (no encryption field)', async () => {
    const enc = await boot(['--image', IMAGE, '--name', 'vm1', '--encrypt', 'luks']);
    expect(enc.error).toBeUndefined();
    expect(enc.req?.encryption).toEqual({ format: 'luks' });
    expect(enc.out).toContain('vm1');
    const plain = await boot(['--image', IMAGE, '--name', 'vm1']);
    expect(plain.req).toBeDefined();
    expect(plain.req).not.toHaveProperty('encryption');
  });

  it('--encrypt with another format is a usage error before any driver call', async () => {
    const r = await boot(['--image', IMAGE, '--name', 'vm1', '--encrypt', 'aes']);
    expect(r.req).toBeUndefined();
    expect(r.error).toMatchObject({ code: 'commander.invalidArgument' });
  });
});
