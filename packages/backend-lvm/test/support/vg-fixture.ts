import { execFile } from 'node:child_process';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const exec = promisify(execFile);
const env = { ...process.env, LVM_SUPPRESS_FD_WARNINGS: '1', LC_ALL: 'C' };

/** A real volume group on a loop device over a sparse file in a temp dir. */
export interface TestVg {
  vg: string;
  /** The PV: `/dev/loopN`. */
  pv: string;
  /** The sparse backing file. */
  file: string;
  dir: string;
  deviceMapper: boolean;
  /** Loop devices over the PV (LV mappings) currently attached. */
  mappingLoops(): Promise<string[]>;
  /** Detaches every mapping over the PV, removes VG, PV, loop and files. Safe to call twice. */
  destroy(): Promise<void>;
}

async function loops(): Promise<{ name: string; 'back-file': string; offset: number; sizelimit: number }[]> {
  const { stdout } = await exec('losetup', ['--json', '--list'], { timeout: 30_000 });
  if (!stdout.trim()) return [];
  return (JSON.parse(stdout) as { loopdevices: never[] }).loopdevices;
}

async function hasDm(): Promise<boolean> {
  // The control node may exist without a driver (libdevmapper creates it): opening it tells.
  try {
    const fh = await open('/dev/mapper/control', 'r');
    await fh.close();
    return true;
  } catch {
    return false;
  }
}

/** Builds a VG of `sizeMiB` MiB with extent size `extentMiB` MiB. */
export async function createTestVg(options: { sizeMiB?: number; extentMiB?: number } = {}): Promise<TestVg> {
  const dir = await mkdtemp(join(tmpdir(), 'ephemera-lvm-'));
  const file = join(dir, 'pv.img');
  const fh = await open(file, 'w');
  await fh.truncate((options.sizeMiB ?? 256) * 1024 * 1024);
  await fh.close();
  const vg = `ephtest${process.pid}${Math.random().toString(36).slice(2, 8)}`;
  const dm = await hasDm();
  const lvmArgs = dm ? [] : ['--driverloaded', 'n'];
  let pv = '';
  let destroyed = false;

  const mappingLoops = async (): Promise<string[]> =>
    pv
      ? (await loops())
          .filter((l) => l['back-file'] === pv || (l['back-file'] === file && l.name !== pv))
          .map((l) => l.name)
      : [];

  const destroy = async (): Promise<void> => {
    if (destroyed) return;
    destroyed = true;
    const errors: unknown[] = [];
    const attempt = async (fn: () => Promise<unknown>) => {
      try {
        await fn();
      } catch (e) {
        errors.push(e);
      }
    };
    await attempt(async () => {
      for (const l of await mappingLoops()) await attempt(() => exec('losetup', ['-d', l]));
    });
    if (pv) {
      await attempt(() => exec('vgremove', [...lvmArgs, '--devices', pv, '-f', '-y', vg], { env, timeout: 60_000 }));
      await attempt(() => exec('pvremove', [...lvmArgs, '--devices', pv, '-y', pv], { env, timeout: 60_000 }));
      await attempt(() => exec('losetup', ['-d', pv]));
    }
    await rm(dir, { recursive: true, force: true });
    if (errors.length) throw new AggregateError(errors, 'test VG teardown failed');
  };

  try {
    pv = (await exec('losetup', ['--find', '--show', file], { timeout: 30_000 })).stdout.trim();
    await exec('pvcreate', [...lvmArgs, '--devices', pv, '-y', pv], { env, timeout: 60_000 });
    await exec('vgcreate', [...lvmArgs, '--devices', pv, '-s', `${options.extentMiB ?? 4}m`, vg, pv], {
      env,
      timeout: 60_000,
    });
  } catch (e) {
    await destroy().catch(() => undefined);
    throw e;
  }
  return { vg, pv, file, dir, deviceMapper: dm, mappingLoops, destroy };
}
