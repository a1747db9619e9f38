// The stack's compute hosts. Ceph and Glance are shared; each host has its own libvirtd (own mount
// namespace, socket, fixed host_uuid, loopback migration address and ports) and its own Ephemera
// state directory. Host 1 is what the stack has always had (`libvirt/`, service `libvirtd`); host
// N > 1 lives in `host<N>/` (service `libvirtd@N`, logs in `log/host<N>/`).
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { libvirtdPaths } from './libvirtd.mjs';
import { MAX_HOSTS, MIGRATION_PORTS, StackError } from './util.mjs';

/** The service name of host `id`'s libvirtd: `libvirtd` for host 1 (as before), else `libvirtd@<id>`. */
export const hostService = (id) => (id === 1 ? 'libvirtd' : `libvirtd@${id}`);

/** The host a service name means (`libvirtd`, `libvirtd@1` = 1; `libvirtd@N` = N), else undefined. */
export function hostOfService(svc) {
  if (svc === 'libvirtd') return 1;
  const m = /^libvirtd@([1-9][0-9]*)$/.exec(svc ?? '');
  return m ? Number(m[1]) : undefined;
}

/** Host `id`'s libvirtd instance (see libvirtdPaths); host 1 keeps the stack's historic layout. */
export function hostPaths(dir, logDir, id) {
  if (id === 1) return libvirtdPaths(join(dir, 'libvirt'), logDir);
  return libvirtdPaths(join(dir, `host${id}`, 'libvirt'), join(logDir, `host${id}`));
}

/** Host `id`'s Ephemera state directory (host 1: `<dir>/ephemera`, the driver's fromStack() default). */
export const hostStateDir = (dir, id) => (id === 1 ? join(dir, 'ephemera') : join(dir, `host${id}`, 'ephemera'));

/**
 * A new host entry of state.json. Its migration address is 127.0.0.<id+1> (libvirt refuses
 * 127.0.0.1 as "the local machine"; all of 127/8 is loopback) and its ports a slice of the stack's
 * block, so two hosts, and two stacks, never listen on the same address and port.
 */
export function newHost(st, id) {
  const base = st.ports.migration ?? st.ports.monV2 + 32; // stacks from before hosts: the next 32 ports
  const first = base + MIGRATION_PORTS * (id - 1);
  return {
    id,
    hostUuid: randomUUID(),
    migrationAddress: `127.0.0.${id + 1}`,
    migrationPorts: [first, first + MIGRATION_PORTS - 1],
    libvirtNs: [],
  };
}

/** Gives a state.json from before hosts existed its host 1 (keeping its recorded namespaces). */
export function ensureHosts(st) {
  if (!st.hosts) {
    st.hosts = [{ ...newHost(st, 1), libvirtNs: st.libvirtNs ?? [] }];
    delete st.libvirtNs;
  }
  return st.hosts;
}

/**
 * The number of hosts asked for: `--hosts N` (or `--hosts=N`), else `$EPHEMERA_STACK_HOSTS`, else
 * undefined (keep what the stack has; a new stack gets 1).
 */
export function requestedHosts(args, env = process.env) {
  let text;
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--hosts') {
      if (i + 1 >= args.length) throw new StackError('--hosts needs a number');
      text = args[++i];
    } else if (args[i].startsWith('--hosts=')) text = args[i].slice('--hosts='.length);
    else throw new StackError(`up: unknown argument ${JSON.stringify(args[i])} (usage: up [--hosts N])`);
  }
  const from = text !== undefined ? '--hosts' : 'EPHEMERA_STACK_HOSTS';
  text ??= env.EPHEMERA_STACK_HOSTS || undefined;
  if (text === undefined) return undefined;
  if (!/^[1-9][0-9]*$/.test(text) || Number(text) > MAX_HOSTS) {
    throw new StackError(`${from}: expected a number of hosts from 1 to ${MAX_HOSTS}, got ${JSON.stringify(text)}`);
  }
  return Number(text);
}
