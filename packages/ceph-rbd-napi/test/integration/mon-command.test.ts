// Cluster.monCommand (rados_mon_command): monitor commands on an open connection, with its caps.
import { describe, expect, it } from 'vitest';
import { HandleClosed, InvalidArgument, PermissionDenied } from '@ephemera/ceph-rbd-napi';
import { cephCli } from '@ephemera/testkit';
import { connectAs } from './helpers.js';

describe('Cluster.monCommand', () => {
  it('blocklists with a float expiry as JSON text and lists it (profile rbd); removing needs more than profile rbd', async () => {
    const c = await connectAs('ephemera');
    const addr = `127.0.0.250:0/${process.pid}`;
    try {
      const t0 = Date.now();
      // The monitor takes `expire` only as a float: the text keeps its decimal point.
      const add = await c.monCommand(
        `{"prefix":"osd blocklist","blocklistop":"add","addr":${JSON.stringify(addr)},"expire":30.0}`,
      );
      expect(add.status).toContain(addr);
      const ls = await c.monCommand({ prefix: 'osd blocklist ls', format: 'json' });
      expect(ls.status).toMatch(/^listed \d+ entries$/);
      const entries = JSON.parse(ls.out.slice(0, ls.out.indexOf(']') + 1)) as { addr: string; until: string }[];
      const mine = entries.find((e) => e.addr === addr);
      expect(mine).toBeDefined();
      const left = Date.parse(mine!.until) - t0;
      expect(left).toBeGreaterThan(20_000);
      expect(left).toBeLessThan(40_000);
      // An integer expiry is refused by the monitor (CephFloat), as JSON.stringify would write it.
      await expect(
        c.monCommand({ prefix: 'osd blocklist', blocklistop: 'add', addr, expire: 30 }),
      ).rejects.toBeInstanceOf(InvalidArgument);
      await expect(c.monCommand({ prefix: 'osd blocklist', blocklistop: 'rm', addr })).rejects.toBeInstanceOf(
        PermissionDenied,
      );
    } finally {
      await cephCli('admin', ['ceph', 'osd', 'blocklist', 'rm', addr]).catch(() => undefined);
      await c.close();
    }
    expect(await cephCli('admin', ['ceph', 'osd', 'blocklist', 'ls'])).not.toContain(addr);
  });

  it("refuses what is not a command before sending it, an unknown command with the monitor's EINVAL, and a closed connection", async () => {
    const c = await connectAs('ephemera');
    try {
      for (const bad of ['not json', '{"noprefix":1}', '[]', { prefix: 3 } as never])
        await expect(c.monCommand(bad)).rejects.toBeInstanceOf(InvalidArgument);
      await expect(c.monCommand({ prefix: 'no such command' })).rejects.toBeInstanceOf(InvalidArgument);
      expect((await c.monCommand({ prefix: 'version', format: 'json' })).out).toMatch(/"version"/);
    } finally {
      await c.close();
    }
    await expect(c.monCommand({ prefix: 'version' })).rejects.toBeInstanceOf(HandleClosed);
  });
});
