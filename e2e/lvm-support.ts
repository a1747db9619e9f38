/** A throwaway LVM volume group on a loop device over a sparse file (the dev stack has none). */
import { execFile } from 'node:child_process';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { detectDeviceMapper } from '@ephemera/backend-lvm';

const exec = promisify(execFile);
const env = { ...process.env, LVM_SUPPRESS_FD_WARNINGS: '1', LC_ALL: 'C' };

export interface TestVg {
  vg: string;
  pv: string;
  file: string;
  /** Loop devices over the PV or its file other than the PV itself (LV mappings). */
  mappings(): Promise<string[]>;
  /** LV names in the VG. */
  lvs(): Promise<string[]>;
  destroy(): Promise<void>;
}

async function loops(): Promise<{ name: string; 'back-file': string }[]> {
  const { stdout } = await exec('losetup', ['--json', '--list'], { timeout: 30_000 });
  return stdout.trim()
    ? (JSON.parse(stdout) as { loopdevices: { name: string; 'back-file': string }[] }).loopdevices
    : [];
}

export async function createTestVg(sizeMiB = 256): Promise<TestVg> {
  const dir = await mkdtemp(join(tmpdir(), 'ephemera-e2e-lvm-'));
  const file = join(dir, 'pv.img');
  const fh = await open(file, 'w');
  await fh.truncate(sizeMiB * 1024 * 1024);
  await fh.close();
  const vg = `ephe2e${process.pid}${Math.random().toString(36).slice(2, 7)}`;
  const dm = await detectDeviceMapper();
  const lvmArgs = dm ? [] : ['--driverloaded', 'n'];
  let pv = '';
  const mappings = async (): Promise<string[]> =>
    pv
      ? (await loops())
          .filter((l) => (l['back-file'] === pv || l['back-file'] === file) && l.name !== pv)
          .map((l) => l.name)
      : [];
  const lvs = async (): Promise<string[]> => {
    const { stdout } = await exec('lvs', [...lvmArgs, '--devices', pv, '--reportformat', 'json', '-o', 'lv_name', vg], {
      env,
      timeout: 60_000,
    });
    return (JSON.parse(stdout).report[0].lv as { lv_name: string }[]).map((l) => l.lv_name);
  };
  let destroyed = false;
  const destroy = async (): Promise<void> => {
    if (destroyed) return;
    destroyed = true;
    for (const l of await mappings()) await exec('losetup', ['-d', l]).catch(() => undefined);
    if (pv) {
      await exec('vgremove', [...lvmArgs, '--devices', pv, '-f', '-y', vg], { env, timeout: 60_000 }).catch(
        () => undefined,
      );
      await exec('pvremove', [...lvmArgs, '--devices', pv, '-y', pv], { env, timeout: 60_000 }).catch(() => undefined);
      await exec('losetup', ['-d', pv]).catch(() => undefined);
    }
    await rm(dir, { recursive: true, force: true });
  };
  try {
    pv = (await exec('losetup', ['--find', '--show', file], { timeout: 30_000 })).stdout.trim();
    await exec('pvcreate', [...lvmArgs, '--devices', pv, '-y', pv], { env, timeout: 60_000 });
    await exec('vgcreate', [...lvmArgs, '--devices', pv, '-s', '4m', vg, pv], { env, timeout: 60_000 });
  } catch (e) {
    await destroy();
    throw e;
  }
  return { vg, pv, file, mappings, lvs, destroy };
}
