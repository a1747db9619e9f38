/** What every command shares: its I/O, global options, the checkout and dev stack it runs in, the help's epilogue. */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { glanceClient, StackInfoLike } from '@ephemera/driver';
import { EXIT_MEANINGS } from './exit-codes.js';

/** Where the command writes and what it reads (tests pass their own). */
export interface CliIo {
  stdout: NodeJS.WritableStream & { isTTY?: boolean };
  stderr: NodeJS.WritableStream & { isTTY?: boolean };
  env: Readonly<Record<string, string | undefined>>;
}

export interface GlobalOpts {
  config?: string;
  stack: boolean;
  json?: boolean;
  logLevel?: string;
  stateDir?: string;
}

export type GlanceImageLike = Awaited<ReturnType<ReturnType<typeof glanceClient>['getImage']>>;

export class CliError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** The repository checkout this CLI belongs to (for `stack` and the dev stack's stack.json). */
export function repoRoot(env: CliIo['env'] = process.env): string | undefined {
  if (env.EPHEMERA_REPO) return resolve(env.EPHEMERA_REPO);
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (existsSync(join(dir, 'tools', 'stack'))) return dir;
    dir = dirname(dir);
  }
  return undefined;
}

export function stackJson(env: CliIo['env']): StackInfoLike | undefined {
  const root = repoRoot(env);
  const dir = env.EPHEMERA_STACK_DIR ? resolve(env.EPHEMERA_STACK_DIR) : root ? join(root, '.stack') : undefined;
  if (!dir || !existsSync(join(dir, 'stack.json'))) return undefined;
  return JSON.parse(readFileSync(join(dir, 'stack.json'), 'utf8')) as StackInfoLike;
}

/** This package's version (package.json is one level above both src/ and dist/). */
export function cliVersion(): string {
  return (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;
}

export const EXAMPLES = `
Examples:
  $ ephemera stack up                                   # the dev stack (Ceph, Glance, libvirtd)
  $ ephemera image upload guest.img --name guest        # detects raw/qcow2, progress bar
  $ ephemera image explain <image-id> --backend rbd     # the resolver's plan and every declined option
  $ ephemera boot --image <image-id> --name vm1 --flavor e1.nano
  $ ephemera boot --image <id> --name vm2 --flavor vcpus=1,ram=64,root=1,swap=8 --backend lvm
  $ ephemera list --json | jq '.[].state'
  $ ephemera console vm1
  $ ephemera snapshot vm1 vm1-snap && ephemera destroy vm1
  $ ephemera gc --delete; ephemera reconcile

Configuration: --config FILE (JSON) or $EPHEMERA_CONFIG, then EPHEMERA_* variables; on a checkout
with the dev stack up, its stack.json provides the defaults (--no-stack ignores it).

${exitCodesHelp()}
`;

/** The help's "Exit codes:" paragraph, from the exit-code table (wrapped at 100 columns). */
export function exitCodesHelp(): string {
  const lines = ['Exit codes:'];
  for (const item of Object.entries(EXIT_MEANINGS).map(([n, m]) => `${n} ${m}`)) {
    const last = lines[lines.length - 1]!;
    if (`${last} ${item},`.length > 100) lines.push(`${item},`);
    else lines[lines.length - 1] = `${last} ${item},`;
  }
  lines[lines.length - 1] = lines[lines.length - 1]!.replace(/,$/, '.');
  return lines.join('\n');
}
