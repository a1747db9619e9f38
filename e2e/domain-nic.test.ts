// Domain customisation (issue 20.5): a spawn with a QEMU user-mode NIC from the request and an
// RNG device from the embedder's customizeDomain hook, seen in the running domain's live XML; a
// device libvirt's schema refuses fails the spawn at define and leaves nothing behind.
import { execFile } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import { promisify } from 'node:util';
import type { DomainHookContext } from '@ephemera/driver';
import { isDriverError } from '@ephemera/driver';
import { waitForMarker } from '@ephemera/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TINY, deleteImage, newUuid, testDriver, uploadGuest, virshDomains, type TestDriver } from './support.js';

const exec = promisify(execFile);

describe('domain customisation end to end', () => {
  let t: TestDriver;
  let imageId: string | undefined;
  const uuid = newUuid();
  const bad = newUuid();
  const marker = `nic-e2e-${uuid.slice(0, 8)}`;
  const hookCalls: DomainHookContext[] = [];

  beforeAll(async () => {
    t = await testDriver(
      { images: { type: 'qcow2' } },
      {
        customizeDomain: (spec, ctx) => {
          hookCalls.push(ctx);
          return {
            ...spec,
            devices: [
              ...(spec.devices ?? []),
              {
                element: 'rng',
                attributes: { model: 'virtio' },
                children: [{ element: 'backend', attributes: { model: 'random' }, text: '/dev/urandom' }],
              },
            ],
          };
        },
      },
    );
    // The counting guest keeps running, so the live XML and QEMU's monitor can be read.
    imageId = await uploadGuest(t.glance, marker, { mode: 'count' });
  });
  afterAll(async () => {
    for (const u of [uuid, bad]) await t?.driver.destroy(u).catch(() => undefined);
    await deleteImage(t?.glance, imageId);
    await t?.close();
  });

  it("spawns with a user-mode NIC and the hook's device: both are in the running domain's live XML", async () => {
    const mac = '52:54:00:2e:e2:01';
    const r = await t.driver.spawn({
      instance: { uuid, name: 'nic-e2e' },
      image: imageId!,
      flavor: TINY,
      domain: { interfaces: [{ type: 'user', model: 'e1000', mac }] },
    });
    expect(r.instance.state).toBe('running');
    expect(await waitForMarker(t.driver.consolePath(uuid), 120_000)).toBe(marker);
    const live = await (await t.driver.libvirt.lookupByUUID(uuid)).xml();
    // Only the running domain's XML carries its id.
    expect(live).toMatch(/^<domain type='\w+' id='\d+'/);
    const iface = /<interface type='user'>[\s\S]*?<\/interface>/.exec(live)?.[0];
    expect(iface, live).toBeDefined();
    expect(iface).toContain(`<mac address='${mac}'/>`);
    expect(iface).toContain("<model type='e1000'/>");
    // The running QEMU has the user-mode netdev and the e1000 on it, not just the definition.
    const { stdout: net } = await exec(
      'virsh',
      ['-c', t.stack.libvirt.uri, 'qemu-monitor-command', t.driver.domainName(uuid), '--hmp', 'info network'],
      { timeout: 60_000 },
    );
    expect(net).toMatch(/e1000.*macaddr=52:54:00:2e:e2:01/);
    expect(net).toMatch(/type=user/);
    expect(live).toMatch(/<rng model='virtio'>\s*<backend model='random'>\/dev\/urandom<\/backend>/);
    expect(hookCalls.map((c) => [c.instance, c.name, c.image, c.backend])).toContainEqual([
      uuid,
      'nic-e2e',
      imageId,
      'qcow2',
    ]);
    await t.driver.destroy(uuid);
    expect(await virshDomains(t.stack)).not.toContain(t.driver.domainName(uuid));
  });

  it("a device libvirt's schema refuses fails the spawn at define; nothing is left behind", async () => {
    const err = await t.driver
      .spawn({
        instance: bad,
        image: imageId!,
        flavor: TINY,
        domain: { devices: [{ element: 'watchdog', attributes: { model: 'no-such-watchdog' } }] },
      })
      .catch((e: unknown) => e);
    expect(isDriverError(err, 'SPAWN_FAILED'), String(err)).toBe(true);
    expect((err as Error).message).toMatch(/watchdog|schema|XML/i);
    expect(await t.driver.backends.get('qcow2').list({ instance: bad })).toEqual([]);
    expect(await virshDomains(t.stack)).not.toContain(t.driver.domainName(bad));
    const left = (await readdir(t.driver.config.instancesPath)).filter((n) => n.startsWith(bad));
    expect(left).toEqual([]);
    expect(await t.driver.journal.entries()).toEqual([]);
  });
});
