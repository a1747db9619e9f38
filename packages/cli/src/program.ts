/** The `ephemera` command (commander 14). */
import { execFile, spawn } from 'node:child_process';
import { join, resolve } from 'node:path';
import { Command, CommanderError, Option } from 'commander';
import {
  BOOTABLE_BACKENDS,
  CONFIG_SCHEMA,
  configReference,
  createDriver,
  glanceClient,
  loadConfig,
  redactConfig,
  uploadImage,
  type ConfigInput,
  type Driver,
  type DriverConfig,
  type InstanceInfo,
  type PendingOperation,
} from '@ephemera/driver';
import { isUuid } from '@ephemera/image-backend';
import { EXIT, exitCodeFor } from './exit-codes.js';
import { addBootCommand } from './boot.js';
import { addMigrateCommand } from './migrate.js';
import { addAdoptCommand, addEvacuateCommand, formatGc } from './many-hosts.js';
import { cacheGc, type GcFlags } from './cache.js';
import { ProgressBar, bytes } from './progress.js';

import {
  CliError,
  type CliIo,
  EXAMPLES,
  type GlanceImageLike,
  type GlobalOpts,
  cliVersion,
  repoRoot,
  stackJson,
} from './context.js';

export { type CliIo, repoRoot } from './context.js';

/** Options of {@link run} and {@link buildProgram}. */
export interface RunOptions {
  /** Aborts the running operation (`bin.ts` wires SIGINT/SIGTERM to it); a spawn rolls back. */
  signal?: AbortSignal;
}

/** Builds the program; `run()` executes it. */
export function buildProgram(io: CliIo, state: { exitCode: number } = { exitCode: 0 }, opts: RunOptions = {}): Command {
  const program = new Command('ephemera');
  const out = (s: string): void => void io.stdout.write(s.endsWith('\n') ? s : `${s}\n`);
  const err = (s: string): void => void io.stderr.write(s.endsWith('\n') ? s : `${s}\n`);

  program
    .description('Boot VMs from copy-on-write clones of Glance images (the Ephemera hypervisor driver).')
    .option('-c, --config <file>', 'JSON configuration file (default $EPHEMERA_CONFIG)')
    .option('--no-stack', "ignore the dev stack's stack.json defaults")
    .option('--state-dir <dir>', 'driver state directory (journal, instance records, consoles)')
    .option('--json', 'machine-readable output (one JSON document on stdout)')
    .addOption(
      new Option(
        '--log-level <level>',
        "driver log level (pino, on stderr; default $EPHEMERA_LOG_LEVEL, the file's log.level, else warn)",
      ).choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']),
    )
    .version(cliVersion(), '-V, --version', 'print the version of ephemera')
    .showHelpAfterError('(run with --help for usage)')
    .addHelpText('after', EXAMPLES)
    .exitOverride()
    .configureOutput({ writeOut: (s) => io.stdout.write(s), writeErr: (s) => io.stderr.write(s) });

  const globals = (): GlobalOpts => program.opts<GlobalOpts>();
  const config = (extra: ConfigInput = {}): DriverConfig => {
    const g = globals();
    const stack = g.stack ? stackJson(io.env) : undefined;
    // The CLI is quieter than the driver's default, but only as a default: EPHEMERA_LOG_LEVEL and
    // the file's log.level win over it, --log-level over everything.
    const overrides: ConfigInput = { ...(g.logLevel ? { log: { level: g.logLevel } } : {}), ...extra };
    if (g.stateDir) overrides.stateDir = g.stateDir;
    return loadConfig({
      ...(g.config ? { file: g.config } : {}),
      env: io.env,
      ...(stack ? { stack } : {}),
      defaults: { log: { level: 'warn' } },
      overrides,
    }).config;
  };
  const print = (json: unknown, text: () => string): void => {
    if (globals().json) out(JSON.stringify(json, null, 2));
    else out(text());
  };
  // Commands that change state reconcile first (docs/operations.md: reconcile runs when the driver
  // starts), so a crashed run's leftovers do not get in their way; read-only ones (list, show,
  // console, explain, gc without --delete) change nothing and show unfinished operations instead.
  const withDriver = async <T>(
    fn: (d: Driver) => Promise<T>,
    extra: ConfigInput = {},
    reconcile = true,
  ): Promise<T> => {
    const d = await createDriver({ config: config(extra), reconcile: false });
    try {
      if (reconcile) {
        const done = (await d.reconcile()).filter((a) => a.action !== 'skipped');
        for (const a of done)
          err(
            `reconcile: ${a.op} ${a.instance} of a process that is gone: ${a.action}${a.removed.length ? ` (${a.removed.join(', ')})` : ''}${a.error ? ` - ${a.error}` : ''}`,
          );
      }
      return await fn(d);
    } finally {
      await d.close();
    }
  };

  // ------------------------------------------------------------ stack
  const stack = program.command('stack').description('the dev stack (tools/stack): up, down, status');
  for (const [sub, what] of [
    ['up', 'bring the dev stack up (idempotent)'],
    ['down', 'take the dev stack down'],
    ['status', "show the dev stack's services"],
  ] as const) {
    stack
      .command(sub)
      .description(what)
      .action(async () => {
        const root = repoRoot(io.env);
        if (!root)
          throw new CliError('INVALID_CONFIG', 'tools/stack not found: run from a checkout or set EPHEMERA_REPO');
        if (globals().json) {
          const text = await new Promise<string>((res, rej) =>
            execFile(
              'bash',
              [join(root, 'tools', 'stack'), sub],
              { timeout: 900_000, maxBuffer: 16 << 20, env: { ...process.env, ...io.env } as NodeJS.ProcessEnv },
              (e, so, se) =>
                e && sub !== 'status'
                  ? rej(new CliError('FAILURE', `tools/stack ${sub}: ${String(se).trim() || e.message}`))
                  : res(String(so)),
            ),
          );
          const info = stackJson(io.env);
          out(
            JSON.stringify(
              {
                command: sub,
                healthy: /healthy/.test(text),
                output: text.trim(),
                stack: sub === 'down' ? null : (info ?? null),
              },
              null,
              2,
            ),
          );
          return;
        }
        const code = await new Promise<number>((res) => {
          const child = spawn('bash', [join(root, 'tools', 'stack'), sub], {
            stdio: ['ignore', 'pipe', 'pipe'],
            env: { ...process.env, ...io.env } as NodeJS.ProcessEnv,
          });
          child.stdout.on('data', (b) => io.stdout.write(b));
          child.stderr.on('data', (b) => io.stderr.write(b));
          child.on('close', (c) => res(c ?? 1));
        });
        if (code !== 0) throw new CliError('FAILURE', `tools/stack ${sub} exited with ${code}`);
      });
  }

  // ------------------------------------------------------------ image
  const image = program.command('image').description('Glance images: upload, list, show, explain');
  image
    .command('upload <file>')
    .description('upload a raw or qcow2 image file (format detected, progress bar)')
    .option('--name <name>', 'image name (default: the file name)')
    .addOption(new Option('--format <format>', 'expected disk format').choices(['raw', 'qcow2']))
    .action(async (file: string, o: { name?: string; format?: 'raw' | 'qcow2' }) => {
      const glance = glanceClient(config());
      const bar = new ProgressBar('upload', io.stderr, !globals().json);
      const img = await uploadImage(glance, resolve(file), {
        ...(o.name ? { name: o.name } : {}),
        ...(o.format ? { format: o.format } : {}),
        onProgress: (e) => bar.update(e.percent, `${bytes(e.bytesDone)}/${bytes(e.bytesTotal)}`),
      });
      bar.done();
      print(img, () => `${img.id}  ${img.name}  ${img.disk_format}  ${bytes(img.size ?? undefined)}  ${img.status}`);
    });
  image
    .command('list')
    .description('list images')
    .action(async () => {
      const glance = glanceClient(config());
      const all: GlanceImageLike[] = [];
      for await (const i of glance.listImages()) all.push(i);
      print(
        all,
        () =>
          all
            .map(
              (i) =>
                `${i.id}  ${(i.name ?? '').padEnd(24)} ${String(i.disk_format).padEnd(6)} ${bytes(i.size ?? undefined).padStart(10)}  ${i.status}`,
            )
            .join('\n') || '(no images)',
      );
    });
  image
    .command('show <id>')
    .description('show an image record (with its locations)')
    .action(async (id: string) => {
      const glance = glanceClient(config());
      const img = await glance.getImage(id).catch((e: unknown) => {
        throw (e as { status?: number }).status === 404 ? new CliError('IMAGE_NOT_FOUND', `image ${id} not found`) : e;
      });
      print(img, () =>
        [
          `id:          ${img.id}`,
          `name:        ${img.name}`,
          `status:      ${img.status}`,
          `format:      ${img.disk_format}/${img.container_format}`,
          `size:        ${bytes(img.size ?? undefined)} (virtual ${bytes(img.virtual_size ?? undefined)})`,
          `hash:        ${img.os_hash_algo ?? '-'} ${img.os_hash_value ? `${img.os_hash_value.slice(0, 16)}...` : ''}`,
          ...(img.locations ?? []).map((l) => `location:    ${l.url}`),
        ].join('\n'),
      );
    });
  image
    .command('explain <id>')
    .description(
      "print the resolver's plan for this node: the chosen option, alternatives and every declined option with its reason",
    )
    .addOption(new Option('--backend <backend>', 'target backend (default images.type)').choices(BOOTABLE_BACKENDS))
    .action(async (id: string, o: { backend?: string }) => {
      await withDriver(
        async (d) => {
          if (!globals().json) {
            out(await d.explain(id, o.backend));
            return;
          }
          const plan = await d.plan(id, o.backend);
          const { image: img, ...rest } = plan;
          out(
            JSON.stringify(
              { ...rest, image: { id: img.id, name: img.name, disk_format: img.disk_format, size: img.size } },
              null,
              2,
            ),
          );
        },
        {},
        false,
      );
    });

  // ------------------------------------------------------------ instances
  addBootCommand(program, {
    io,
    json: () => globals().json === true,
    withDriver: (fn, extra) => withDriver(fn, extra),
    print,
    ...(opts.signal ? { signal: opts.signal } : {}),
  });
  program
    .command('list')
    .description('list instances with their state')
    .action(async () => {
      await withDriver(
        async (d) => {
          const instances = await d.list();
          const ops = await d.operations();
          const opOf = (uuid: string): PendingOperation | undefined => ops.find((p) => p.instance === uuid);
          // Instances with a record, then those whose spawn is in flight or was interrupted (no
          // record yet): otherwise a VM a killed `boot` left running is listed nowhere.
          type Row = (
            | InstanceInfo
            | (Pick<PendingOperation, 'name' | 'imageId' | 'backend' | 'state'> & { uuid: string })
          ) & { operation?: PendingOperation };
          const rows: Row[] = instances.map((i) => {
            const op = opOf(i.uuid);
            return op ? { ...i, operation: op } : i;
          });
          for (const p of ops) {
            if (
              p.op !== 'spawn' ||
              instances.some((i) => i.uuid === p.instance) ||
              rows.some((r) => r.uuid === p.instance)
            )
              continue;
            rows.push({
              uuid: p.instance,
              name: p.name ?? p.instance,
              state: p.state,
              ...(p.imageId ? { imageId: p.imageId } : {}),
              ...(p.backend ? { backend: p.backend } : {}),
              operation: p,
            });
          }
          const opText = (p: PendingOperation): string =>
            p.status === 'in-progress'
              ? `${p.op} in progress (pid ${p.pid})`
              : `${p.op} ${p.status} (pid ${p.pid} is gone): run \`ephemera reconcile\``;
          print(
            rows,
            () =>
              rows
                .map((i) => {
                  const head = `${i.uuid}  ${(i.name ?? '').padEnd(20)} ${i.state.padEnd(8)} ${(i.backend ?? '?').padEnd(6)}`;
                  const tail =
                    'rootDisk' in i ? `root ${i.rootDisk.method}  image ${i.imageId}` : `image ${i.imageId ?? '?'}`;
                  return `${head} ${tail}${i.operation ? `  [${opText(i.operation)}]` : ''}`;
                })
                .join('\n') || '(no instances)',
          );
        },
        {},
        false,
      );
    });
  program
    .command('show <instance>')
    .description('show one instance (name or UUID)')
    .action(async (ref: string) => {
      await withDriver(
        async (d) => {
          const i = await d.get(ref);
          print(i, () => JSON.stringify(i, null, 2));
        },
        {},
        false,
      );
    });
  program
    .command('console <instance>')
    .description("print the instance's serial console log (COM1)")
    .option('-f, --follow', 'keep printing until the instance stops')
    .action(async (ref: string, o: { follow?: boolean }) => {
      await withDriver(
        async (d) => {
          let text = await d.console(ref);
          if (o.follow && !globals().json) {
            let shown = 0;
            for (;;) {
              io.stdout.write(text.slice(shown));
              shown = text.length;
              if ((await d.get(ref)).state !== 'running') break;
              await new Promise((r) => setTimeout(r, 200));
              text = await d.console(ref);
            }
            io.stdout.write((await d.console(ref)).slice(shown));
            return;
          }
          if (globals().json) out(JSON.stringify({ instance: ref, console: text }));
          else io.stdout.write(text);
        },
        {},
        false,
      );
    });
  program
    .command('destroy <instance...>')
    .description('power off and delete instances (domain, disks, files)')
    .action(async (refs: string[]) => {
      await withDriver(async (d) => {
        const results: { instance: string; removed: string[]; durationMs: number }[] = [];
        for (const ref of refs) results.push({ instance: ref, ...(await d.destroy(ref)) });
        print(results, () =>
          results
            .map((r) => `destroyed ${r.instance} in ${Math.round(r.durationMs)} ms (${r.removed.length} resources)`)
            .join('\n'),
        );
      });
    });
  for (const [cmd, desc] of [
    ['start', 'power an instance on'],
    ['stop', 'power an instance off (ACPI, then forced)'],
    ['reboot', 'reboot an instance (hard)'],
  ] as const) {
    program
      .command(`${cmd} <instance>`)
      .description(desc)
      .action(async (ref: string) => {
        await withDriver(async (d) => {
          if (cmd === 'start') await d.powerOn(ref);
          else if (cmd === 'stop') await d.powerOff(ref);
          else await d.reboot(ref);
          const i = await d.get(ref);
          print({ instance: i.uuid, state: i.state }, () => `${i.name} ${i.state}`);
        });
      });
  }
  addMigrateCommand(program, {
    io,
    json: () => globals().json === true,
    stack: () => (globals().stack ? stackJson(io.env) : undefined),
    config,
    withDriver: (fn, extra) => withDriver(fn, extra),
    print,
    ...(opts.signal ? { signal: opts.signal } : {}),
  });
  program
    .command('resize <instance> <rootGiB>')
    .description('grow the root disk')
    .action(async (ref: string, size: string) => {
      if (!/^\d+$/.test(size)) throw new CliError('INVALID_ARGUMENT', 'rootGiB must be a positive integer');
      await withDriver(async (d) => {
        const r = await d.resizeRootDisk(ref, Number(size));
        print({ instance: ref, ...r }, () => `${ref}: root disk ${bytes(r.sizeBytes)}`);
      });
    });
  program
    .command('snapshot <instance> <image-name>')
    .description('snapshot the root disk into a new Glance image (direct RBD snapshot where possible)')
    .action(async (ref: string, name: string) => {
      await withDriver(async (d) => {
        const r = await d.snapshot(ref, name);
        print(
          r,
          () =>
            `image ${r.imageId} (${r.method}${r.location ? `, ${r.location}` : ''}) in ${Math.round(r.durationMs)} ms`,
        );
      });
    });
  program
    .command('gc')
    .argument('[instances...]', 'only disks of these instance UUIDs')
    .description(
      "find this host's disks that belong to no instance (no domain, no record, no operation in progress); other hosts' disks are never removed",
    )
    .option('--delete', 'remove them')
    .option('--include-unowned', 'with --delete: also orphan disks without an owner (made before ownership)')
    .option('--all-hosts', "also list other hosts' disks (read-only)")
    .option(
      '--cache',
      'instead: remove golden images whose Glance image is gone or changed, or unused (never with clones)',
    )
    .option('--unused <seconds>', 'with --cache: unused time (default images.rbd.goldenUnusedSeconds)')
    .option('--dry-run', 'with --cache: only report')
    .action(async (instances: string[], o: GcFlags) => {
      if (o.cache) return withDriver((d) => cacheGc(d, o, print), {}, false);
      for (const i of instances)
        if (!isUuid(i)) throw new CliError('INVALID_ARGUMENT', `not an instance UUID: ${JSON.stringify(i)}`);
      await withDriver(
        async (d) => {
          const r = await d.gc({
            remove: !!o.delete,
            includeUnowned: !!o.includeUnowned,
            allHosts: !!o.allHosts,
            ...(instances.length ? { instances } : {}),
          });
          print(r, () => formatGc(r, !!o.delete, !!o.includeUnowned));
          // Disks of unfinished operations are not orphans: say where they are.
          if (!o.delete && !globals().json) {
            const stale = (await d.operations()).filter((p) => p.status !== 'in-progress');
            if (stale.length)
              err(
                `${stale.length} unfinished operation(s) of processes that are gone hold disks: run \`ephemera reconcile\` (or gc --delete)`,
              );
          }
        },
        {},
        !!o.delete,
      );
    });
  addAdoptCommand(program, (fn) => withDriver(fn), print);
  addEvacuateCommand(program, {
    withDriver: (fn) => withDriver(fn),
    print,
    stack: () => (globals().stack ? stackJson(io.env) : undefined),
    ...(opts.signal ? { signal: opts.signal } : {}),
  });
  program
    .command('reconcile')
    .description('finish operations a crashed driver left in the journal (roll back spawns, complete destroys)')
    .action(async () => {
      await withDriver(
        async (d) => {
          const r = await d.reconcile();
          print(r, () =>
            r.length === 0
              ? 'journal is clean'
              : r
                  .map(
                    (a) =>
                      `${a.op} ${a.instance}: ${a.action}${a.removed.length ? ` (${a.removed.join(', ')})` : ''}${a.error ? ` - ${a.error}` : ''}`,
                  )
                  .join('\n'),
          );
          if (r.some((a) => a.action === 'failed')) state.exitCode = EXIT.PARTIAL;
        },
        {},
        false,
      );
    });
  program
    .command('config')
    .description('print the effective configuration (secrets redacted), or the reference of every option')
    .option('--reference', 'print every option as a Markdown table (docs/configuration.md)')
    .option('--schema', 'print the option schema as JSON')
    .action(async (o: { reference?: boolean; schema?: boolean }) => {
      if (o.reference) return void out(configReference());
      if (o.schema) return void out(JSON.stringify(CONFIG_SCHEMA, null, 2));
      const c = redactConfig(config());
      out(JSON.stringify(c, null, 2));
    });
  return program;
}

/** Runs the command line; resolves to the exit code (never calls process.exit). */
export async function run(
  argv: string[],
  io: CliIo = { stdout: process.stdout, stderr: process.stderr, env: process.env },
  opts: RunOptions = {},
): Promise<number> {
  const state = { exitCode: EXIT.OK as number };
  const program = buildProgram(io, state, opts);
  const wantsJson = argv.includes('--json');
  try {
    await program.parseAsync(argv, { from: 'user' });
    return state.exitCode;
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.code === 'commander.helpDisplayed' || e.code === 'commander.help' || e.code === 'commander.version')
        return EXIT.OK;
      const code = exitCodeFor(e);
      if (wantsJson) io.stdout.write(`${JSON.stringify({ error: { code: e.code, message: e.message } })}\n`);
      return code === EXIT.FAILURE ? EXIT.USAGE : code;
    }
    // Stopped by a signal: 128 + its number (the reason says which), like a shell reports it.
    const interrupted = opts.signal?.aborted ? (opts.signal.reason as { exitCode?: unknown })?.exitCode : undefined;
    const code = typeof interrupted === 'number' ? interrupted : exitCodeFor(e);
    const errCode = (e as { code?: string }).code ?? 'FAILURE';
    const message = e instanceof Error ? e.message : String(e);
    if (wantsJson) io.stdout.write(`${JSON.stringify({ error: { code: errCode, message } })}\n`);
    else io.stderr.write(`ephemera: ${message}\n`);
    return code;
  }
}
