// Migration and domain jobs against the two-host dev stack (`tools/stack up --hosts 2`): host 1 is
// the stack's libvirtd (A), host 2 its second one (B: own mount namespace, socket, host UUID).
// Migrations are peer-to-peer and tunnelled (no TCP listener; see /work/shared/notes/migration.md).
// The guest fills 64 MiB of its RAM with non-zero data and halts (fillBootSector), so a migration
// limited to 1 MiB/s stays in flight for over a minute and an abort a few seconds in is
// deterministic. Its disk is a local file (same path on both hosts), so the calls pass
// MigrateFlags.UNSAFE.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadStack, stackCommand, waitForSerial, type StackInfo } from '@ephemera/testkit';
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

/**
 * Boot sector (nasm source in the comment): 32-bit protected mode, fill 64 MiB of RAM from 1 MiB
 * with 0x5a5a5a5a, print `FILLED` on COM1, halt. Non-zero pages cost their full 4 KiB in the
 * migration stream (zero pages almost nothing), so once the guest printed FILLED a migration at
 * 1 MiB/s needs more than 60 s, whatever the machine's speed: an abort a few seconds in always
 * finds it in flight. (A guest that keeps rewriting a little RAM is not enough: under TCG the
 * migration converged in about 4 s on a quiet machine.)
 *   cli; xor ax,ax; mov ds,ax; lgdt [gdtr]; mov eax,cr0; or al,1; mov cr0,eax; jmp 0x08:pm
 *   pm: mov ax,0x10; mov ds,ax; mov es,ax; mov edi,0x100000; mov ecx,(64<<20)/4
 *       mov eax,0x5a5a5a5a; cld; rep stosd; (print msg on 0x3f8); .halt: hlt; jmp .halt
 *   msg: db "FILLED",13,10,0; gdt: flat 4 GiB code 0x08 and data 0x10; gdtr: dw 23, dd gdt
 */
const FILL_BOOT_CODE =
  'fa31c08ed80f0116687c0f20c00c010f22c0ea177c080066b810008ed88ec0bf00001000b900000001b85a5a5a5afcf3abbe457c' +
  '000066baf803ac84c07403eeebf8f4ebfd46494c4c45440d0a0090900000000000000000ffff0000009acf00ffff00000092cf00' +
  '1700507c';
/** RAM the fill guest writes (MiB) and the RAM it gets (room for the BIOS below 1 MiB and above the fill). */
const FILLED_MIB = 64;
const GUEST_MIB = 96;

function fillBootSector(): Buffer {
  const disk = Buffer.alloc(1 << 20);
  Buffer.from(FILL_BOOT_CODE, 'hex').copy(disk);
  disk[510] = 0x55;
  disk[511] = 0xaa;
  return disk;
}

function domainXML(name: string, disk: string, serial: string): string {
  return `<domain type='qemu'>
  <name>${xmlEscape(name)}</name>
  <memory unit='MiB'>${GUEST_MIB}</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='${xmlEscape(disk)}'/>
      <target dev='hda' bus='ide'/>
    </disk>
    <serial type='file'><source path='${xmlEscape(serial)}' append='on'/><target port='0'/></serial>
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

const dir = mkdtempSync('/tmp/eph-mig-');
let stack: StackInfo;
let hostB: { uri: string };
let connA: Connection;
let connB: Connection;
const names: string[] = [];

beforeAll(async () => {
  await stackCommand(['up', '--hosts', '2'], { timeoutMs: 300_000 });
  stack = loadStack();
  hostB = { uri: stack.hosts[1]!.libvirtUri };
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
  rmSync(dir, { recursive: true, force: true });
}, 180_000);

/** Defines and starts the fill guest on host A; resolves once it has filled its RAM. */
async function startGuest(tag: string): Promise<Domain> {
  const name = uniqueName(tag);
  names.push(name);
  // Each guest its own disk: QEMU write-locks the image.
  const disk = join(dir, `${name}.raw`);
  writeFileSync(disk, fillBootSector());
  const serial = join(dir, `${name}.log`);
  const dom = await connA.defineXML(domainXML(name, disk, serial));
  await dom.create();
  await waitForSerial(
    serial,
    (t) => (t.includes('FILLED\r\n') ? true : undefined),
    60_000,
    'the guest to fill its RAM',
  );
  return dom;
}

/** After an aborted migration, host B must end up without the domain (its QEMU exits by itself). */
async function expectGoneFromB(name: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  while ((await lookupOrNull(connB, name)) !== null && Date.now() < deadline)
    await new Promise((r) => setTimeout(r, 200));
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
    const migration = dom.migrateToUri(hostB.uri, { destName: `${name}-b` }, flags);
    names.push(`${name}-b`);
    const samples = await pollStats(dom, migration);
    await migration;

    const running = samples.filter((s) => s.type === 'unbounded');
    expect(running.length).toBeGreaterThan(0);
    expect(running[0]!.operation).toBe('migration_out');
    expect(running.at(-1)!.memTotal).toBeGreaterThanOrEqual(GUEST_MIB << 20);
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
    // 1 MiB/s against 64 MiB of non-zero RAM: over a minute in flight, far longer than this test waits.
    const migration = dom.migrateToUri(
      hostB.uri,
      { bandwidth: 1 },
      P2P | MigrateFlags.PERSIST_DEST | MigrateFlags.UNDEFINE_SOURCE,
    );
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
    // Abort only once data is moving (the first second or so is setup on B).
    while (!(stats.dataProcessed! > 0 && stats.memProcessed! > 0) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
      stats = await dom.getJobStats();
    }
    expect(stats).toMatchObject({ type: 'unbounded', operation: 'migration_out' });
    expect(stats.dataProcessed).toBeGreaterThan(0);
    expect(stats.memProcessed).toBeGreaterThan(0);
    // Far from done: most of the filled RAM is still to send.
    expect(stats.memRemaining).toBeGreaterThan((FILLED_MIB / 2) << 20);
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
    const child = spawn(process.execPath, [CHILD, defaultAddonPath(), stack.libvirt.uri, hostB.uri, dom.name()], {
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
