import { readFile } from 'node:fs/promises';
import {
  InvalidRbdLocationError,
  parseRbdLocation,
  type NetworkHost,
  type RbdLocationParts,
} from '@ephemera/image-backend';

/** The parts of a Glance rbd store location `rbd://<fsid>/<pool>/<image>/<snapshot>`. */
export type RbdUrl = RbdLocationParts;

/**
 * The four-part location `rbd://<fsid>/<pool>/<image>/<snapshot>` the backend could clone from,
 * read by `@ephemera/image-backend`'s `parseRbdLocation` (the parser glance's resolver uses too),
 * or `undefined` for any other location: another scheme, the legacy one-part `rbd://<image>`
 * (no cluster, pool or snapshot), or one that parser refuses. The backend ignores those.
 */
export function parseRbdUrl(url: string): RbdUrl | undefined {
  try {
    const p = parseRbdLocation(url);
    return p.kind === 'rbd' ? { fsid: p.fsid, pool: p.pool, image: p.image, snapshot: p.snapshot } : undefined;
  } catch (err) {
    if (err instanceof InvalidRbdLocationError) return undefined;
    throw err;
  }
}

/** Formats `rbd://<fsid>/<pool>/<image>/<snapshot>` (image-backend's `formatRbdLocation`). */
export { formatRbdLocation as formatRbdUrl } from '@ephemera/image-backend';

/** The msgr v1 port monitors listen on by default. */
export const DEFAULT_MON_PORT = 6789;

function splitHostPort(addr: string): NetworkHost | undefined {
  let host: string;
  let port = DEFAULT_MON_PORT;
  const a = addr.trim().replace(/\/\d+$/, ''); // drop a nonce suffix (`1.2.3.4:6789/0`)
  if (!a) return undefined;
  const v6 = /^\[([0-9A-Fa-f:.]+)\](?::(\d+))?$/.exec(a);
  if (v6) {
    host = v6[1]!;
    if (v6[2]) port = Number(v6[2]);
  } else if ((a.match(/:/g) ?? []).length > 1) {
    host = a; // a bare IPv6 literal without a port
  } else {
    const [h, p] = a.split(':');
    host = h!;
    if (p !== undefined) port = Number(p);
  }
  if (!host || !/^[A-Za-z0-9.:-]+$/.test(host) || !Number.isInteger(port) || port <= 0 || port > 65535)
    return undefined;
  return { host, port };
}

/**
 * The msgr v1 address of every monitor in a `mon_host` value, in order, without duplicates:
 * `[v2:10.0.0.1:3300,v1:10.0.0.1:6789],[v2:...]`, `10.0.0.1:6789,10.0.0.2`, `v1:[::1]:6789`...
 * A monitor listed only with a v2 address gets its v1 address on the default port 6789 (what
 * QEMU's librbd needs for `<host>` is just a monitor to bootstrap from: either works with
 * librbd >= Nautilus, but libvirt's `<host>` has no protocol, so v1 is the safe choice).
 * IPv6 addresses are returned without brackets.
 */
export function parseMonHost(monHost: string): NetworkHost[] {
  const out: NetworkHost[] = [];
  const seen = new Set<string>();
  const add = (h: NetworkHost | undefined): void => {
    if (!h) return;
    const key = `${h.host}|${h.port}`;
    if (seen.has(key)) return;
    seen.add(key);
    out.push(h);
  };
  // Split into monitors: bracketed address vectors or plain comma/space separated entries.
  const monitors: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of monHost.trim()) {
    if (ch === '[') depth++;
    if (ch === ']') depth--;
    if (depth === 0 && (ch === ',' || ch === ' ' || ch === ';' || ch === '\t')) {
      if (cur.trim()) monitors.push(cur.trim());
      cur = '';
      continue;
    }
    cur += ch;
  }
  if (cur.trim()) monitors.push(cur.trim());
  for (const mon of monitors) {
    // An address vector `[v2:a:3300,v1:a:6789]` (distinguish from an IPv6 literal `[::1]:6789`).
    const vec = /^\[(v[12]:.*)\]$/.exec(mon);
    const addrs = vec ? splitTopLevel(vec[1]!) : [mon];
    const v1 = addrs.find((a) => a.startsWith('v1:'));
    const plain = addrs.find((a) => !/^v[12]:/.test(a));
    if (v1) add(splitHostPort(v1.slice(3)));
    else if (plain) add(splitHostPort(plain));
    else {
      const v2 = addrs.find((a) => a.startsWith('v2:'));
      const h = v2 ? splitHostPort(v2.slice(3)) : undefined;
      if (h) add({ host: h.host, port: DEFAULT_MON_PORT });
    }
  }
  return out;
}

function splitTopLevel(s: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of s) {
    if (ch === '[') depth++;
    if (ch === ']') depth--;
    if (ch === ',' && depth === 0) {
      out.push(cur.trim());
      cur = '';
      continue;
    }
    cur += ch;
  }
  if (cur.trim()) out.push(cur.trim());
  return out;
}

/**
 * Reads `mon_host` (or `mon host`, `mon_addr`) from a ceph.conf's `[global]` section (or
 * outside any section). Returns `undefined` when absent.
 */
export async function readMonHost(confPath: string): Promise<string | undefined> {
  const text = await readFile(confPath, 'utf8');
  let section = 'global';
  for (const rawLine of text.split('\n')) {
    const line = rawLine.replace(/[#;].*$/, '').trim();
    if (!line) continue;
    const sec = /^\[(.+)\]$/.exec(line);
    if (sec) {
      section = sec[1]!.trim().toLowerCase();
      continue;
    }
    if (section !== 'global' && section !== 'client') continue;
    const kv = /^([^=]+)=(.*)$/.exec(line);
    if (!kv) continue;
    const key = kv[1]!
      .trim()
      .toLowerCase()
      .replace(/[\s-]+/g, '_');
    if (key === 'mon_host' || key === 'mon_addr') return kv[2]!.trim();
  }
  return undefined;
}
