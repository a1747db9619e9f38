/**
 * The Ceph OSD "zombie watch" (README known failure 11; Ceph tracker 58120, fixed upstream by
 * ceph/ceph#50861, backported to Quincy and Reef, not to Pacific 16.2.x which Debian 12 ships).
 *
 * A client killed while its WATCH op on an RBD header commits: the OSD persists the watch in the
 * object info (what `rbd status`, list_watchers and rbd_remove see), but
 * `PrimaryLogPG::do_osd_op_effects` returns early when the connection's session is already gone,
 * so no in-memory Watch (the one `dump_watchers` lists, that times out and that a blocklist
 * drops) is ever made. The watch stays until the object context is reloaded from disk (PG
 * re-peer, OSD restart): `populate_obc_watchers` then arms its timeout, or drops it at once when
 * its address is blocklisted.
 *
 * Operator remedy (docs/operations.md): blocklist the dead watcher's address, then re-peer the
 * header object's PG: `ceph pg repeer <pgid>`. That needs a second up OSD (the monitor maps the PG
 * to a temporary acting set); on a one-OSD cluster (the dev stack) `ceph osd down <primary>` does
 * the same for every PG of that OSD (the OSD is not stopped: it reasserts itself within a second).
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { StackInfo } from '@ephemera/testkit';
import { rbdLs } from './support.js';

const exec = promisify(execFile);

/** A watcher as `rbd status` lists it. */
export interface RbdWatcher {
  address: string;
  client: number;
  cookie: number;
}

function admin(stack: StackInfo): string[] {
  const u = stack.ceph.users.admin;
  return ['--conf', u.confPath, '--id', u.id];
}

async function run(cmd: string, args: string[]): Promise<string> {
  try {
    return (await exec(cmd, args, { timeout: 60_000 })).stdout;
  } catch (e) {
    const err = e as Error & { stderr?: string };
    throw new Error(
      `${cmd} ${args.filter((a) => !a.includes('/')).join(' ')} failed: ${err.stderr?.trim() || err.message}`,
    );
  }
}

/** Watchers of `pool/image` from the object info (`rbd status`); [] when the image is gone. */
export async function rbdWatchers(stack: StackInfo, pool: string, image: string): Promise<RbdWatcher[]> {
  try {
    return (
      JSON.parse(await run('rbd', [...admin(stack), 'status', '--format', 'json', `${pool}/${image}`])) as {
        watchers: RbdWatcher[];
      }
    ).watchers;
  } catch (e) {
    if (/No such file|ENOENT|error opening image/i.test((e as Error).message)) return [];
    throw e;
  }
}

/** Watches held in the OSD's memory (`ceph daemon osd.N dump_watchers`), as `client.N/cookie`. */
export async function osdWatchers(stack: StackInfo, osd = 0): Promise<Set<string>> {
  const out = JSON.parse(
    await run('ceph', [
      '--conf',
      stack.ceph.users.admin.confPath,
      'daemon',
      `osd.${osd}`,
      'dump_watchers',
      '--format',
      'json',
    ]),
  ) as { entity_name: { type: string; num: number }; cookie: number }[];
  return new Set(out.map((w) => `${w.entity_name.type}.${w.entity_name.num}/${w.cookie}`));
}

/** The image's zombie watchers: listed by `rbd status`, unknown to the OSD's memory. */
export async function zombieWatchers(stack: StackInfo, pool: string, image: string): Promise<RbdWatcher[]> {
  const listed = await rbdWatchers(stack, pool, image);
  if (!listed.length) return [];
  const mem = await osdWatchers(stack);
  return listed.filter((w) => !mem.has(`client.${w.client}/${w.cookie}`));
}

/** What {@link clearZombieWatchers} did. */
export interface ZombieClearing {
  pgid: string;
  /** The operator action that re-peered the PG. */
  action: string;
  ms: number;
}

/**
 * The operator remedy: blocklists each zombie's address, re-peers the PG of the image's header
 * (`ceph pg repeer`, or `ceph osd down <primary>` when the cluster has a single up OSD), and waits
 * until `rbd status` no longer lists them; then removes the blocklist entries.
 */
export async function clearZombieWatchers(
  stack: StackInfo,
  pool: string,
  image: string,
  zombies: RbdWatcher[],
  timeoutMs = 60_000,
): Promise<ZombieClearing> {
  const t0 = performance.now();
  const info = JSON.parse(await run('rbd', [...admin(stack), 'info', '--format', 'json', `${pool}/${image}`])) as {
    id: string;
  };
  const map = JSON.parse(
    await run('ceph', [...admin(stack), 'osd', 'map', pool, `rbd_header.${info.id}`, '--format', 'json']),
  ) as { pgid: string; acting_primary: number };
  for (const z of zombies) await run('ceph', [...admin(stack), 'osd', 'blocklist', 'add', z.address, '600']);
  let action = `ceph pg repeer ${map.pgid}`;
  try {
    await run('ceph', [...admin(stack), 'pg', 'repeer', map.pgid]);
  } catch (e) {
    if (!/not enough up OSDs/.test((e as Error).message)) throw e;
    action = `ceph osd down ${map.acting_primary} (one-OSD cluster: pg repeer needs a second OSD)`;
    await run('ceph', [...admin(stack), 'osd', 'down', String(map.acting_primary)]);
  }
  const left = (ws: RbdWatcher[]) =>
    ws.filter((w) => zombies.some((z) => z.client === w.client && z.cookie === w.cookie));
  const deadline = Date.now() + timeoutMs;
  // `rbd status` reads the object: that loads its context again, and populate_obc_watchers drops
  // the blocklisted watch.
  while (left(await rbdWatchers(stack, pool, image).catch(() => zombies)).length) {
    if (Date.now() > deadline)
      throw new Error(`zombie watch(es) on ${pool}/${image} still listed ${timeoutMs} ms after ${action}`);
    await new Promise((r) => setTimeout(r, 250));
  }
  for (const z of zombies)
    await run('ceph', [...admin(stack), 'osd', 'blocklist', 'rm', z.address]).catch(() => undefined);
  return { pgid: map.pgid, action, ms: Math.round(performance.now() - t0) };
}

/** A zombie watch met and cleared on one image by {@link clearInstanceZombies}. */
export interface ZombieMet {
  /** `pool/image`. */
  image: string;
  /** The zombies, as `client.N address`. */
  watchers: string;
  action: string;
  ms: number;
}

/**
 * Looks for zombie watches (listed by `rbd status`, absent from the OSD's `dump_watchers`) on an
 * instance's RBD images (`<uuid>*` in the vms pool) and on the named images of the images pool
 * (direct-snapshot images), and clears each with the operator remedy. Returns what it met: []
 * when none, so a disk busy for any other reason still fails the caller's assertions.
 */
export async function clearInstanceZombies(
  stack: StackInfo,
  uuid: string,
  imagesPoolNames: readonly string[] = [],
): Promise<ZombieMet[]> {
  const { vms, images } = stack.ceph.pools;
  const candidates = [
    ...(await rbdLs(stack, vms)).filter((n) => n.startsWith(uuid)).map((n) => [vms, n] as const),
    ...(imagesPoolNames.length
      ? (await rbdLs(stack, images)).filter((n) => imagesPoolNames.includes(n)).map((n) => [images, n] as const)
      : []),
  ];
  const met: ZombieMet[] = [];
  for (const [pool, image] of candidates) {
    const z = await zombieWatchers(stack, pool, image);
    if (!z.length) continue;
    const r = await clearZombieWatchers(stack, pool, image, z);
    met.push({
      image: `${pool}/${image}`,
      watchers: z.map((w) => `client.${w.client} ${w.address}`).join(', '),
      action: r.action,
      ms: r.ms,
    });
  }
  return met;
}
