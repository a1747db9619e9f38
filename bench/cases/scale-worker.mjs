#!/usr/bin/env node
// One host's driver for case 9 (clones from two hosts at once), in a process of its own:
//   node bench/cases/scale-worker.mjs '<json>'   { host: 1|2, hostId, stateDir, source }
// `source` is a SourceImage without its open() (the parent's rbd location only: a clone needs no
// bytes). Prints {"ready":true}, then answers one JSON line per stdin line:
//   {"op":"clones","names":[...]}  createFromImage of every name at once; per-clone ms, wall ms
//   {"op":"remove","names":[...]}  removes those disks (untimed)
// Ends (closing the driver) at end of input. Progress to stderr.
import { createInterface } from 'node:readline';
import { loadStack, log } from '../lib/util.mjs';

const job = JSON.parse(process.argv[2]);
const stack = loadStack();
const host = stack.hosts[job.host - 1];
const drv = await import('@ephemera/driver');
const config = drv.loadConfig({
  stack,
  env: {},
  overrides: {
    stateDir: job.stateDir,
    host: { id: job.hostId },
    libvirt: { uri: host.libvirtUri },
    log: { level: 'warn' },
  },
}).config;
const driver = await drv.createDriver({ config, reconcile: false });
const backend = driver.backends.get('rbd');
const source = {
  ...job.source,
  async open() {
    throw new Error('case 9 clones only: the source has no bytes');
  },
};
const disk = (name) => ({ instance: name, name: 'disk' });
const reply = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);

async function clones(names) {
  const t0 = performance.now();
  const ms = await Promise.all(
    names.map(async (n) => {
      const t = performance.now();
      const r = await backend.createFromImage(disk(n), source, {});
      if (r.method !== 'cloned') throw new Error(`expected a clone, got ${r.method} (${r.reason})`);
      return performance.now() - t;
    }),
  );
  return { ms, wallMs: performance.now() - t0, startedAt: t0 + performance.timeOrigin };
}

try {
  reply({ ready: true });
  for await (const line of createInterface({ input: process.stdin })) {
    if (!line.trim()) continue;
    const cmd = JSON.parse(line);
    try {
      if (cmd.op === 'clones') reply(await clones(cmd.names));
      else if (cmd.op === 'remove') {
        for (const n of cmd.names) await backend.remove(disk(n)).catch((e) => log(`[host ${job.host}] ${e.message}`));
        reply({ removed: cmd.names.length });
      } else reply({ error: `unknown op ${cmd.op}` });
    } catch (err) {
      reply({ error: String(err.message ?? err) });
    }
  }
} finally {
  await driver.close();
}
