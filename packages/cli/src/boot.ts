/**
 * `ephemera boot --image <id> --name <name>`: spawn an instance from a Glance image, with a
 * progress bar for the root disk and the driver's steps on stderr.
 */
import { randomUUID } from 'node:crypto';
import { Option, type Command } from 'commander';
import { BOOTABLE_BACKENDS, type ConfigInput, type Driver } from '@ephemera/driver';
import { isUuid } from '@ephemera/image-backend';
import { CliError, type CliIo } from './context.js';
import { FLAVORS, parseFlavor } from './flavors.js';
import { ProgressBar, bytes } from './progress.js';

/** What the command needs from the program. */
export interface BootContext {
  io: CliIo;
  json: () => boolean;
  withDriver: <T>(fn: (d: Driver) => Promise<T>, extra?: ConfigInput) => Promise<T>;
  print: (json: unknown, text: () => string) => void;
  signal?: AbortSignal;
}

/** Registers `ephemera boot`. */
export function addBootCommand(program: Command, ctx: BootContext): void {
  program
    .command('boot')
    .description('boot an instance from a Glance image')
    .requiredOption('--image <id>', 'Glance image id')
    .requiredOption('--name <name>', 'instance name')
    .option(
      '--flavor <flavor>',
      `flavor: ${Object.keys(FLAVORS).join(', ')} or vcpus=1,ram=64,root=1,ephemeral=0,swap=8`,
      'e1.nano',
    )
    .addOption(
      new Option('--backend <backend>', 'image backend for this instance (default images.type)').choices(
        BOOTABLE_BACKENDS,
      ),
    )
    .option('--uuid <uuid>', 'instance UUID (default: a new one)')
    .option('--force-import', 'never clone: import a full copy')
    .addOption(
      new Option(
        '--encrypt <format>',
        "encrypt the instance's disks (QEMU LUKS; default: the flavor's hw:ephemeral_encryption)",
      ).choices(['luks']),
    )
    .action(
      async (o: {
        image: string;
        name: string;
        flavor: string;
        backend?: string;
        uuid?: string;
        forceImport?: boolean;
        encrypt?: 'luks';
      }) => {
        // Usage errors before the driver connects to anything (and long before a journal entry).
        const flavor = parseFlavor(o.flavor);
        if (!isUuid(o.image))
          throw new CliError(
            'INVALID_ARGUMENT',
            `--image ${JSON.stringify(o.image)} is not a Glance image id (a UUID)`,
          );
        if (o.uuid !== undefined && !isUuid(o.uuid))
          throw new CliError('INVALID_ARGUMENT', `--uuid ${JSON.stringify(o.uuid)} is not a UUID`);
        if (o.name.length === 0 || o.name.length > 255 || /[\0-\x1f\x7f]/.test(o.name))
          throw new CliError('INVALID_ARGUMENT', '--name must be 1..255 printable characters');
        await ctx.withDriver(
          async (d) => {
            const json = ctx.json();
            const bar = new ProgressBar('root disk', ctx.io.stderr, !json);
            d.on('progress', (e) => bar.update(e.percent, `${e.phase} ${bytes(e.bytesDone)}/${bytes(e.bytesTotal)}`));
            d.on('step', (e) => {
              if (json) return;
              if (e.status === 'started' && e.step !== 'root-disk') ctx.io.stderr.write(`${e.step}...\n`);
              if (e.step === 'root-disk' && e.status !== 'started') bar.done();
            });
            const r = await d.spawn({
              instance: { uuid: o.uuid ?? randomUUID(), name: o.name },
              image: o.image,
              flavor,
              ...(o.backend ? { backend: o.backend } : {}),
              ...(o.forceImport ? { forceImport: true } : {}),
              ...(o.encrypt ? { encryption: { format: o.encrypt } } : {}),
              ...(ctx.signal ? { signal: ctx.signal } : {}),
            });
            ctx.print(r, () =>
              [
                `${r.instance.name} ${r.instance.uuid} ${r.instance.state} (${r.instance.backend})`,
                `root disk: ${r.rootDisk.method} in ${Math.round(r.rootDisk.durationMs)} ms${r.rootDisk.reason ? ` (${r.rootDisk.reason})` : ''}`,
                `steps: ${Object.entries(r.timings)
                  .map(([k, v]) => `${k} ${Math.round(v!)} ms`)
                  .join(', ')}; total ${Math.round(r.totalMs)} ms`,
                `console: ${r.instance.consolePath}`,
              ].join('\n'),
            );
          },
          o.backend ? { images: { type: o.backend } } : {},
        );
      },
    );
}
