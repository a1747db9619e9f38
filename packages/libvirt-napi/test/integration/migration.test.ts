// Migration and domain jobs against real libvirtds: the stack's (host A) and a private second one
// (host B: own mount namespace, socket, random host UUID, the stack's ceph secret).
// Migrations are peer-to-peer and tunnelled (no TCP listener; see /work/shared/notes/migration.md).
// The guest is a boot sector that rewrites 512 KiB of RAM in a loop, so a migration limited to
// 1 MiB/s stays in flight for several seconds (about 14 s here) and an unlimited one still copies
// dirty pages over several iterations. Its disk is a local file (same path on both hosts), so
// the calls pass MigrateFlags.UNSAFE.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadStack, startPrivateLibvirtd, type PrivateLibvirtd } from '@ephemera/testkit';
import {
  connect,
  isLibvirtError,
  JobStatsFlags,
  LibvirtError,
  MigrateFlags,
  type Connection,
  type Domain,
  type JobStats,
} from '@ephemera/libvirt-napi';
import { defaultAddonPath } from '../../src/native.js';
import { removeDomain, uniqueName, xmlEscape } from './helpers.js';

const CHILD = fileURLToPath(new URL('../fixtures/migrate-child.cjs', import.meta.url));
const P2P = MigrateFlags.LIVE | MigrateFlags.PEER2PEER | MigrateFlags.TUNNELLED | MigrateFlags.UNSAFE;

/** Real-mode boot sector: for (dx = 1;; dx++) fill 0x10000..0x8ffff with dx (rep stosw). */
function dirtyingBootSector(): Buffer {
  const code = [
    0xfa, // cli
    0x31, 0xd2, // xor dx, dx
    0x42, // pass: inc dx
    0xbb, 0x00, 0x10, // mov bx, 0x1000
    0x8e, 0xc3, // seg: mov es, bx
    0x31, 0xff, // xor di, di
    0x89, 0xd0, // mov ax, dx
    0xb9, 0x00, 0x80, // mov cx, 0x8000 (64 KiB)
    0xf3, 0xab, // rep stosw
    0x81, 0xc3, 0x00, 0x10, // add bx, 0x1000
    0x81, 0xfb, 0x00, 0x90, // cmp bx, 0x9000
    0x72, 0xeb, // jb seg
    0xeb, 0xe5, // jmp pass
  ];
  const disk = Buffer.alloc(1 << 20);
  Buffer.from(code).copy(disk);
  disk[510] = 0x55;
  disk[511] = 0xaa;
  return disk;
}

function domainXML(name: string, disk: string): string {
  return `<domain type='qemu'>
  <name>${xmlEscape(name)}</name>
  <memory unit='MiB'>32</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='${xmlEscape(disk)}'/>
      <target dev='hda' bus='ide'/>
    </disk>
    <memballoon model='none'/>
  </devices>
</domain>
`;
}

async function rejection(p: Promise<unknown>): Promise<LibvirtError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(LibvirtError);
    return err as LibvirtError;
  }
  throw new Error('expected a rejection');
}

/** Polls getJobStats() every 20 ms until `done` settles; returns every sample. */
async function pollStats(dom: Domain, done: Promise<unknown>): Promise<JobStats[]> {
  let finished = false;
  void done.then(
    () => (finished = true),
    () => (finished = true),
  );
  const samples: JobStats[] = [];
  while (!finished) {
    try {
      samples.push(await dom.getJobStats());
    } catch (err) {
      // At its very end a migration with UNDEFINE_SOURCE removes the domain here.
      if (!isLibvirtError(err, 'VIR_ERR_OPERATION_INVALID') && !isLibvirtError(err, 'VIR_ERR_NO_DOMAIN')) throw err;
      await done.catch(() => {});
      break;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return samples;
}

async function lookupOrNull(conn: Connection, name: string): Promise<Domain | null> {
  try {
    return await conn.lookupByName(name);
  } catch (err) {
    if (isLibvirtError(err, 'VIR_ERR_NO_DOMAIN')) return null;
    throw err;
  }
}

const stack = loadStack();
// Short path: the private libvirtd's socket lives under it (unix socket paths are limited).
const dir = mkdtempSync('/tmp/eph-mig-');
let hostB: PrivateLibvirtd | undefined;
let connA: Connection;
let connB: Connection;
const names: string[] = [];

beforeAll(async () => {
  hostB = await startPrivateLibvirtd(join(dir, 'b'));
  connA = await connect(stack.libvirt.uri);
  connB = await connect(hostB.uri);
}, 180_000);

afterAll(async () => {
  for (const name of names) {
    if (connA) await removeDomain(connA, name).catch(() => {});
    if (connB) await removeDomain(connB, name).catch(() => {});
  }
  await connA?.close();
  await connB?.close();
  await hostB?.stop().catch(() => {});
  rmSync(dir, { recursive: true, force: true });
}, 180_000);

/** Defines and starts the dirtying guest on host A. */
async function startGuest(tag: string): Promise<Domain> {
  const name = uniqueName(tag);
  names.push(name);
  // Each guest its own disk: QEMU write-locks the image.
  const disk = join(dir, `${name}.raw`);
  writeFileSync(disk, dirtyingBootSector());
  const dom = await connA.defineXML(domainXML(name, disk));
  await dom.create();
  return dom;
}

/** After an aborted migration, host B must end up without the domain (its QEMU exits by itself). */
async function expectGoneFromB(name: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  while ((await lookupOrNull(connB, name)) !== null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
  expect(await lookupOrNull(connB, name)).toBeNull();
}

describe('domain jobs on the stack libvirtd', () => {
  it('getJobStats on a running domain with no job is type none; abortJob(Flags) then rejects with VIR_ERR_OPERATION_INVALID', async () => {
    const dom = await startGuest('nojob');
    const stats = await dom.getJobStats();
    expect(stats.type).toBe('none');
    expect(stats.typeCode).toBe(0);
    const err = await rejection(dom.abortJob());
    expect(err.codeName).toBe('VIR_ERR_OPERATION_INVALID');
    expect((await rejection(dom.abortJobFlags(0))).codeName).toBe('VIR_ERR_OPERATION_INVALID');
    expect((await dom.state()).state).toBe('running');
  });

  it('migration tuning: max downtime and speed round-trip on a running domain', async () => {
    const dom = await startGuest('tune');
    await dom.migrateSetMaxDowntime(123);
    expect(await dom.migrateGetMaxDowntime()).toBe(123);
    await dom.migrateSetMaxSpeed(7);
    expect(await dom.migrateGetMaxSpeed()).toBe(7);
  });
});

describe('live migration to a second libvirtd', () => {
  it('migrates p2p+tunnelled, persistent on B and undefined on A, with progress from getJobStats while in flight', async () => {
    const dom = await startGuest('move');
    const name = dom.name();
    const flags = P2P | MigrateFlags.PERSIST_DEST | MigrateFlags.UNDEFINE_SOURCE;
    // destName shows the typed params reach libvirt.
    const migration = dom.migrateToUri(hostB!.uri, { destName: `${name}-b` }, flags);
    names.push(`${name}-b`);
    const samples = await pollStats(dom, migration);
    await migration;

    const running = samples.filter((s) => s.type === 'unbounded');
    expect(running.length).toBeGreaterThan(0);
    expect(running[0]!.operation).toBe('migration_out');
    expect(running.at(-1)!.memTotal).toBeGreaterThanOrEqual(32 << 20);
    expect(running.at(-1)!.timeElapsed).toBeGreaterThanOrEqual(0);

    expect(await lookupOrNull(connA, name)).toBeNull();
    expect(await lookupOrNull(connB, name)).toBeNull();
    const onB = await connB.lookupByName(`${name}-b`);
    expect(onB.uuid()).toBe(dom.uuid());
    expect((await onB.state()).state).toBe('running');
    expect(await onB.isPersistent()).toBe(true);
    const completed = await onB.getJobStats(JobStatsFlags.COMPLETED);
    expect(completed.type).toBe('completed');
    expect(completed.downtime).toBeGreaterThanOrEqual(0);
    expect(completed.memProcessed).toBeGreaterThan(0);
    expect(typeof completed.raw.memory_processed).toBe('bigint');
  }, 120_000);

  it('abortJob cancels an in-flight migration: migrateToUri rejects with VIR_ERR_OPERATION_ABORTED, the guest keeps running on A', async () => {
    const dom = await startGuest('abort');
    const name = dom.name();
    // 1 MiB/s against a guest rewriting 512 KiB in a tight loop: seconds in flight.
    const migration = dom.migrateToUri(hostB!.uri, { bandwidth: 1 }, P2P | MigrateFlags.PERSIST_DEST | MigrateFlags.UNDEFINE_SOURCE);
    const outcome = migration.then(
      () => null,
      (err: unknown) => err,
    );
    let stats = await dom.getJobStats();
    const deadline = Date.now() + 30_000;
    while (stats.type !== 'unbounded' && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
      stats = await dom.getJobStats();
    }
    expect(stats.type).toBe('unbounded');
    // Abort only once memory is moving (the first second or so is setup on B).
    while (!(stats.memProcessed! > 0) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
      stats = await dom.getJobStats();
    }
    expect(stats).toMatchObject({ type: 'unbounded', operation: 'migration_out' });
    expect(stats.memProcessed).toBeGreaterThan(0);
    // The speed can be changed while the migration runs.
    await dom.migrateSetMaxSpeed(2);
    expect(await dom.migrateGetMaxSpeed()).toBe(2);
    await dom.abortJob();
    const err = await outcome;
    expect(err).toBeInstanceOf(LibvirtError);
    expect((err as LibvirtError).codeName).toBe('VIR_ERR_OPERATION_ABORTED');

    expect((await dom.state()).state).toBe('running');
    expect(await dom.isPersistent()).toBe(true);
    expect((await dom.getJobStats()).type).toBe('none');
    await expectGoneFromB(name);
  }, 120_000);

  it('with a single pool worker, getJobStats and abortJob still answer while a migration is in flight', async () => {
    const dom = await startGuest('onethread');
    const child = spawn(process.execPath, [CHILD, defaultAddonPath(), stack.libvirt.uri, hostB!.uri, dom.name()], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, LIBVIRT_NAPI_THREADS: '1' },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 45_000);
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    clearTimeout(timer);
    if (code !== 0) {
      // The child was killed (blocked behind the migration) or failed: stop the migration it left.
      await dom.abortJob().catch(() => {});
    }
    expect({ code, stderr }).toEqual({ code: 0, stderr: '' });
    const result = JSON.parse(stdout.trim()) as { types: number[]; abort: string; result: unknown };
    expect(result.types.at(-1)).toBe(2);
    expect(result.abort).toBe('ok');
    expect(result.result).toBe(78);
    expect((await dom.state()).state).toBe('running');
    await expectGoneFromB(dom.name());
  }, 120_000);
});
