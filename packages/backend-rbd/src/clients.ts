// Who has a disk open (watchers, exclusive-lock owners) and whether the cluster has fenced them:
// what a host must know before it takes a disk over from another host, and what a Busy error says.
import { BackendUnavailableError, type DiskClient, type DiskOwner } from '@ephemera/image-backend';
import { NAME } from './errors.js';
import type { RbdOps } from './rbd-ops.js';

/** An address without its messenger prefix (`v1:`, `v2:`), as the blocklist and librbd may differ. */
function bare(address: string): string {
  return address.replace(/^v[12]:/, '');
}

/**
 * The cluster's blocklisted addresses (`osd blocklist ls` as a monitor command of this backend's
 * client; `profile rbd` allows it). Undefined when it cannot be read: then no client counts as fenced.
 */
export async function blocklist(ops: RbdOps): Promise<Set<string> | undefined> {
  try {
    const { out } = await ops.cluster.monCommand({ prefix: 'osd blocklist ls', format: 'json' });
    if (!out.trim().startsWith('[')) return undefined;
    // Pacific answers the list and then a second, empty one (`[...][]`): read the addresses only.
    return new Set([...out.matchAll(/"addr":\s*"([^"]+)"/g)].map((m) => bare(m[1]!)));
  } catch {
    return undefined;
  }
}

/**
 * Global ids of the librados clients this process opened through backend-rbd. A process never
 * blocklists one of its own: that would fail every operation of every backend in it for the
 * blocklist's lifetime (ESHUTDOWN). Every RbdOps registers its cluster; other connections on their own.
 */
const ownClients = new Set<number>();

/** Records `cluster` as one of this process's clients (see {@link isOwnClient}); returns it. */
export function registerOwnClient<C extends { instanceId(): number }>(cluster: C): C {
  ownClients.add(cluster.instanceId());
  return cluster;
}

/** Whether a watcher id (`12`) or lock owner (`client.12`) is one of this process's clients. */
export function isOwnClient(client: number | string): boolean {
  const id = typeof client === 'number' ? client : Number(/^client\.(\d+)$/.exec(client)?.[1]);
  return ownClients.has(id);
}

/**
 * Blocklists `address` (`osd blocklist add`, a monitor command on this backend's connection: no
 * `ceph` process), for `expireSeconds` or the cluster's default (an hour).
 */
export async function blocklistAdd(ops: RbdOps, address: string, expireSeconds?: number): Promise<void> {
  const cmd = { prefix: 'osd blocklist', blocklistop: 'add', addr: address };
  // `expire` is a float to the monitor: written with its decimal point (see Cluster.monCommand).
  const text =
    expireSeconds === undefined
      ? JSON.stringify(cmd)
      : `${JSON.stringify(cmd).slice(0, -1)},"expire":${Number.isInteger(expireSeconds) ? `${expireSeconds}.0` : expireSeconds}}`;
  await ops.cluster.monCommand(text);
}

/** The watchers and exclusive-lock owners of image `id`, each marked `blocklisted`. */
export async function diskClients(ops: RbdOps, id: string): Promise<DiskClient[]> {
  const [watchers, locks] = await ops.withImage(id, { readOnly: true }, (img) =>
    Promise.all([img.watchers(), img.lockers()]),
  );
  const fenced = await blocklist(ops);
  const out: DiskClient[] = [];
  for (const w of watchers)
    out.push({
      kind: 'watcher',
      address: w.address,
      client: `client.${w.id}`,
      blocklisted: fenced?.has(bare(w.address)) ?? false,
    });
  for (const l of locks.lockers)
    out.push({
      kind: 'lock-owner',
      address: l.address,
      client: l.client,
      blocklisted: fenced?.has(bare(l.address)) ?? false,
    });
  return out;
}

/**
 * What a Busy error advises. A disk owned by an Ephemera host is most likely held by that host's
 * QEMU: blocklisting it while the host lives would let the next gc delete a running VM's disk, so
 * the advice is to blocklist only when that host is down. An unowned disk keeps the zombie-watch
 * remedy (a watch no live client holds).
 */
export function busyAdvice(owner: DiskOwner | null): string {
  if (owner)
    return (
      `The disk is owned by Ephemera host ${owner.hostId} (instance ${owner.instance}): a watcher is most likely that host's QEMU. ` +
      `Do not blocklist it while host ${owner.hostId} is alive. Only if host ${owner.hostId} is down and no listed client is alive ` +
      `(not listed by the OSD's \`ceph daemon osd.N dump_watchers\`) is it a Ceph zombie watch (tracker 58120): then blocklist the address and ` +
      `\`ceph pg repeer\` the PG of rbd_header.<image id> (see docs/operations.md, "A disk that stays busy" and "Many hosts")`
    );
  return (
    'The disk has no owner record (made before ownership): check no host runs its instance. ' +
    `If no such client is alive (not listed by the OSD's \`ceph daemon osd.N dump_watchers\`), it is a Ceph zombie watch ` +
    `(tracker 58120): blocklist the address, then \`ceph pg repeer\` the PG of rbd_header.<image id> (see docs/operations.md, "A disk that stays busy")`
  );
}

/**
 * Blocklists (`osd blocklist add <address>`, the cluster's default expiry) every watcher and
 * lock owner of image `id` that is not blocklisted yet, except this process's own clients, then
 * reads the blocklist back: resolves to the clients fenced, rejects with BackendUnavailableError
 * when the blocklist cannot be written or does not show them.
 */
export async function fenceClients(ops: RbdOps, id: string): Promise<DiskClient[]> {
  const todo = (await diskClients(ops, id)).filter((c) => !c.blocklisted && !isOwnClient(c.client));
  const addresses = [...new Set(todo.map((c) => bare(c.address)))];
  for (const a of addresses) {
    try {
      await blocklistAdd(ops, a);
    } catch (e) {
      throw new BackendUnavailableError(`${ops.cfg.pool}/${id}: cannot blocklist ${a}: ${errText(e)}`, {
        backend: NAME,
        diskId: id,
        cause: e,
      });
    }
  }
  if (addresses.length === 0) return [];
  const fenced = await blocklist(ops);
  const missing = addresses.filter((a) => !fenced?.has(a));
  if (missing.length)
    throw new BackendUnavailableError(
      `${ops.cfg.pool}/${id}: ${missing.join(', ')} not on the blocklist after \`osd blocklist add\``,
      { backend: NAME, diskId: id },
    );
  return todo.map((c) => ({ ...c, blocklisted: true }));
}

function errText(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).trim().split('\n').slice(-3).join(' ');
}
