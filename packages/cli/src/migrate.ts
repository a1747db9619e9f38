/**
 * `ephemera migrate <instance> --to <host>`: live migration of an instance to another host (RBD:
 * no disk copied; qcow2: the destination caches the base, only the overlays are copied).
 * The destination is a second driver in this process, built from the destination host's
 * configuration: a dev stack host (`--to 2` or `--to host2`, from stack.json's `hosts[]`), or any
 * host's driver configuration file (`--to-config FILE`, then `--to` only names it).
 */
import type { Command } from 'commander';
import {
  createDriver,
  loadConfig,
  type ConfigInput,
  type Driver,
  type DriverConfig,
  type StackInfoLike,
} from '@ephemera/driver';
import { CliError, type CliIo } from './context.js';
import { ProgressBar, bytes } from './progress.js';

/** A host of the dev stack as stack.json lists it (`tools/stack up --hosts N`). */
interface StackHostLike {
  id: number;
  libvirtUri: string;
  stateDir: string;
}

/** What the command needs from the program. */
export interface MigrateContext {
  io: CliIo;
  json: () => boolean;
  stack: () => StackInfoLike | undefined;
  /** The CLI's configuration with `extra` applied (the source host's). */
  config: (extra?: ConfigInput) => DriverConfig;
  withDriver: <T>(fn: (d: Driver) => Promise<T>, extra?: ConfigInput) => Promise<T>;
  print: (json: unknown, text: () => string) => void;
  signal?: AbortSignal;
}

/** The dev stack host `ref` names (`2`, `host2`), or a usage error listing the hosts. */
export function stackHost(stack: StackInfoLike | undefined, ref: string, option: string): StackHostLike {
  const hosts = ((stack as { hosts?: StackHostLike[] } | undefined)?.hosts ?? []).filter(
    (h) => typeof h.libvirtUri === 'string',
  );
  const m = /^(?:host)?(\d+)$/.exec(ref);
  const host = m ? hosts.find((h) => h.id === Number(m[1])) : undefined;
  if (host) return host;
  if (!stack)
    throw new CliError(
      'INVALID_ARGUMENT',
      `${option} ${JSON.stringify(ref)}: no dev stack (stack.json) to find hosts in; give --to-config FILE`,
    );
  throw new CliError(
    'INVALID_ARGUMENT',
    `${option} ${JSON.stringify(ref)}: the dev stack has host(s) ${hosts.map((h) => `${h.id}`).join(', ') || 'none'} (tools/stack up --hosts N)`,
  );
}

/**
 * The driver configuration of dev stack host `host` as a migration destination: its libvirtd and
 * state directory, and the source's backends (`images.type`, `images.enabled`), so a qcow2
 * instance finds the qcow2 backend there.
 */
export function destinationConfig(
  stack: StackInfoLike | undefined,
  host: StackHostLike,
  source: DriverConfig,
): DriverConfig {
  return loadConfig({
    env: {},
    ...(stack ? { stack } : {}),
    defaults: { log: { level: source.log.level } },
    overrides: {
      libvirt: { uri: host.libvirtUri },
      stateDir: host.stateDir,
      images: { type: source.images.type, enabled: [...source.images.enabled] },
    },
  }).config;
}

/** Adds `migrate` to the program. */
export function addMigrateCommand(program: Command, ctx: MigrateContext): void {
  program
    .command('migrate <instance>')
    .description('live-migrate a running instance to another host (RBD: no disk copied; qcow2: overlays copied)')
    .option('--to <host>', 'destination: a dev stack host (2 or host2)')
    .option('--to-config <file>', "destination host's driver configuration (JSON), instead of a stack host")
    .option('--from <host>', 'source: a dev stack host (default: this configuration, host 1 on the stack)')
    .option('--timeout <seconds>', 'abort the migration after this long (default 600)')
    .option('--bandwidth <MiB/s>', 'cap the migration bandwidth')
    .action(
      async (
        ref: string,
        o: { to?: string; toConfig?: string; from?: string; timeout?: string; bandwidth?: string },
      ) => {
        if (!o.to && !o.toConfig)
          throw new CliError('INVALID_ARGUMENT', 'give the destination: --to <host> or --to-config FILE');
        const positive = (v: string | undefined, name: string): number | undefined => {
          if (v === undefined) return undefined;
          if (!/^\d+$/.test(v) || Number(v) < 1)
            throw new CliError('INVALID_ARGUMENT', `${name} must be a positive integer`);
          return Number(v);
        };
        const timeoutS = positive(o.timeout, '--timeout');
        const bandwidth = positive(o.bandwidth, '--bandwidth');
        const stack = ctx.stack();
        // Usage errors before any driver connects.
        const from = o.from !== undefined ? stackHost(stack, o.from, '--from') : undefined;
        const host = o.toConfig === undefined ? stackHost(stack, o.to!, '--to') : undefined;
        const destConfig = host
          ? destinationConfig(stack, host, ctx.config())
          : loadConfig({ file: o.toConfig!, env: {}, defaults: { log: { level: 'warn' } } }).config;
        const to = await createDriver({ config: destConfig, reconcile: false });
        try {
          await to.reconcile();
          await ctx.withDriver(
            async (d) => {
              const bar = new ProgressBar('migrate', ctx.io.stderr, !ctx.json());
              const r = await d.migrate(ref, {
                to,
                ...(ctx.signal ? { signal: ctx.signal } : {}),
                ...(timeoutS ? { timeoutMs: timeoutS * 1000 } : {}),
                ...(bandwidth ? { bandwidthMiB: bandwidth } : {}),
                onProgress: (p) =>
                  bar.update(
                    p.percent,
                    `${p.diskTotal ? `disks ${bytes(p.diskProcessed)} of ${bytes(p.diskTotal)}, ` : ''}${bytes(p.memProcessed)} sent, ${bytes(p.memRemaining)} left${p.downtimeMs !== undefined ? `, downtime ${p.downtimeMs} ms` : ''}`,
                  ),
              });
              bar.done();
              ctx.print(
                r,
                () =>
                  `${r.instance} migrated to ${r.to} in ${Math.round(r.durationMs)} ms${r.downtimeMs !== undefined ? ` (downtime ${r.downtimeMs} ms)` : ''}${r.diskProcessed !== undefined ? `, ${bytes(r.diskProcessed)} of disk copied` : ''}`,
              );
            },
            from ? { libvirt: { uri: from.libvirtUri }, stateDir: from.stateDir } : {},
          );
        } finally {
          await to.close();
        }
      },
    );
}
