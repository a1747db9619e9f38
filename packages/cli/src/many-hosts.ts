// Many hosts on one storage cluster: the text form of `ephemera gc` (this host's orphans, unowned
// disks, and with --all-hosts other hosts' disks) and `ephemera adopt`.
import type { Command } from 'commander';
import { isHostId, type Driver, type GcReport, type StackInfoLike } from '@ephemera/driver';
import { isUuid } from '@ephemera/image-backend';
import { CliError } from './context.js';
import { stackHost } from './migrate.js';
import { bytes } from './progress.js';

/** One line per disk; a hint at the end saying which flag would remove what was only reported. */
export function formatGc(r: GcReport, deleting: boolean, includeUnowned: boolean): string {
  const lines: string[] = [];
  const state = (id: string, word: string): string => (r.removed.includes(id) ? 'removed' : word).padEnd(8);
  for (const x of r.orphans) lines.push(`${state(x.id, 'orphan')}${x.backend}:${x.id} ${bytes(x.sizeBytes)}`);
  for (const x of r.unowned) lines.push(`${state(x.id, 'unowned')}${x.backend}:${x.id} ${bytes(x.sizeBytes)}`);
  for (const x of r.otherHosts ?? [])
    lines.push(`${'host'.padEnd(8)}${x.backend}:${x.id} ${bytes(x.sizeBytes)} owned by ${x.hostId} (not touched)`);
  if (lines.length === 0) return 'no orphan disks';
  if (!deleting && r.orphans.length) lines.push('(run with --delete to remove the orphans)');
  if (r.unowned.length && !(deleting && includeUnowned))
    lines.push(
      "(unowned: no owner record, maybe another host's disk made before ownership; check, then --delete --include-unowned)",
    );
  return lines.join('\n');
}

/** Registers `ephemera adopt <instance> --from-host <id>`. */
export function addAdoptCommand(
  program: Command,
  withDriver: (fn: (d: Driver) => Promise<void>) => Promise<void>,
  print: (json: unknown, text: () => string) => void,
): void {
  program
    .command('adopt')
    .argument('<instance>', 'instance UUID whose disks the other host owns')
    .requiredOption('--from-host <id>', 'the host id that owns them now (a dead host)')
    .description(
      "take over the disks of a dead host's instance (refused while a client that is not blocklisted has one open)",
    )
    .action(async (instance: string, o: { fromHost: string }) => {
      if (!isUuid(instance))
        throw new CliError('INVALID_ARGUMENT', `not an instance UUID: ${JSON.stringify(instance)}`);
      await withDriver(async (d) => {
        const r = await d.adopt(instance, { fromHost: o.fromHost });
        print(r, () =>
          [
            ...r.adopted.map((x) => `adopted ${x} from ${r.fromHost}`),
            ...r.alreadyOwned.map((x) => `already this host's: ${x}`),
          ].join('\n'),
        );
      });
    });
}

/** What `evacuate` needs from the program. */
export interface EvacuateContext {
  withDriver: (fn: (d: Driver) => Promise<void>) => Promise<void>;
  print: (json: unknown, text: () => string) => void;
  stack: () => StackInfoLike | undefined;
  signal?: AbortSignal;
}

/** Registers `ephemera evacuate <instance> --from <host-id> --from-uri <uri>`. */
export function addEvacuateCommand(program: Command, ctx: EvacuateContext): void {
  program
    .command('evacuate')
    .argument('<instance>', 'instance UUID of the dead host')
    .requiredOption('--from <host-id>', 'the dead host: its host id (the owner recorded on the disks)')
    .requiredOption(
      '--from-uri <uri>',
      "the dead host's libvirtd URI (or a dev stack host: 2, host2): refused while it answers",
    )
    .option('--probe-timeout <seconds>', 'how long to try to reach that libvirtd (default 5)')
    .description("rebuild a dead host's RBD instance here: fence its Ceph clients, take the disks, define and start it")
    .action(async (instance: string, o: { from: string; fromUri: string; probeTimeout?: string }) => {
      if (!isUuid(instance))
        throw new CliError('INVALID_ARGUMENT', `not an instance UUID: ${JSON.stringify(instance)}`);
      if (!isHostId(o.from)) throw new CliError('INVALID_ARGUMENT', `--from: not a host id: ${JSON.stringify(o.from)}`);
      if (o.probeTimeout !== undefined && !/^[1-9]\d*$/.test(o.probeTimeout))
        throw new CliError('INVALID_ARGUMENT', '--probe-timeout must be a positive integer');
      let libvirtUri = o.fromUri;
      if (/^(?:host)?\d+$/.test(o.fromUri)) {
        const stack = ctx.stack();
        if (!stack)
          throw new CliError(
            'INVALID_ARGUMENT',
            `--from-uri ${JSON.stringify(o.fromUri)}: no dev stack (stack.json) to find hosts in; give a libvirt URI`,
          );
        libvirtUri = stackHost(stack, o.fromUri, '--from-uri').libvirtUri;
      }
      await ctx.withDriver(async (d) => {
        const r = await d.evacuate(instance, {
          from: { hostId: o.from, libvirtUri },
          ...(o.probeTimeout ? { probeTimeoutMs: Number(o.probeTimeout) * 1000 } : {}),
          ...(ctx.signal ? { signal: ctx.signal } : {}),
        });
        ctx.print(
          r,
          () =>
            `${r.instance} evacuated from ${r.fromHost} in ${Math.round(r.durationMs)} ms: ` +
            `fenced ${r.fenced.length ? r.fenced.join(', ') : 'no client'}; took ${r.disks.join(', ')}`,
        );
      });
    });
}
