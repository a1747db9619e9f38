// The binding against the dev stack's libvirtd (QEMU driver): boots the guest image.
import { randomBytes, randomUUID } from 'node:crypto';
import { stat, writeFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadStack, readMarker, waitForMarker } from '@ephemera/testkit';
import {
  connect,
  DeviceModifyFlags,
  DomainXMLFlags,
  ErrorCode,
  LibvirtError,
  ListDomainsFlags,
  StartFlags,
  type Connection,
  type LifecycleEvent,
} from '@ephemera/libvirt-napi';
import { guestDomainXML, guestFiles, readText, removeDomain, uniqueName, xmlEscape } from './helpers.js';

async function rejection(p: Promise<unknown>): Promise<LibvirtError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(LibvirtError);
    return err as LibvirtError;
  }
  throw new Error('expected a rejection');
}

const stack = loadStack();
let conn: Connection;

beforeAll(async () => {
  conn = await connect(stack.libvirt.uri);
});

afterAll(async () => {
  await conn?.close();
});

describe('stack libvirtd (QEMU driver)', () => {
  it('reports versions, hostname and host/domain capabilities', async () => {
    expect((await conn.libVersion()).major).toBeGreaterThanOrEqual(9);
    const qemu = await conn.hypervisorVersion();
    expect(qemu.major).toBeGreaterThanOrEqual(7);
    expect((await conn.hostname()).length).toBeGreaterThan(0);
    expect(await conn.capabilities()).toContain(`<domain type='${stack.libvirt.domainType}'`);
    const dc = await conn.domainCapabilities({ virtType: stack.libvirt.domainType, arch: 'x86_64' });
    expect(dc).toContain('<domainCapabilities>');
    expect(dc).toContain(`<domain>${stack.libvirt.domainType}</domain>`);
    expect(conn.isAlive()).toBe(true);
  });

  it('defines a domain that boots the guest, sees started, reads the marker, sees stopped at power-off, undefines', async () => {
    const files = await guestFiles('boot');
    const name = uniqueName('boot');
    const events: { ev: LifecycleEvent; at: number }[] = [];
    const onEvent = (ev: LifecycleEvent): void => {
      if (ev.domain.name === name) events.push({ ev, at: performance.now() });
    };
    conn.on('lifecycle', onEvent);
    try {
      const defined = conn.waitForLifecycle((e) => e.domain.name === name && e.event === 'defined', {
        timeoutMs: 10_000,
      });
      const dom = await conn.defineXML(guestDomainXML(name, files));
      expect(await defined).toMatchObject({ event: 'defined', detail: 'added', domain: { name, uuid: dom.uuid() } });
      expect(await dom.state()).toMatchObject({ state: 'shutoff' });
      expect((await conn.lookupByUUID(dom.uuid())).name()).toBe(name);
      expect((await conn.listAllDomains(ListDomainsFlags.PERSISTENT)).map((d) => d.name())).toContain(name);

      const started = conn.waitForLifecycle((e) => e.domain.name === name && e.event === 'started', {
        timeoutMs: 60_000,
      });
      const stopped = conn.waitForLifecycle((e) => e.domain.name === name && e.event === 'stopped', {
        timeoutMs: 120_000,
      });
      const t0 = performance.now();
      await dom.create();
      const createMs = performance.now() - t0;
      expect(await started).toMatchObject({ event: 'started', detail: 'booted' });
      const startedAt = events.find((e) => e.ev.event === 'started')!.at;

      const marker = await waitForMarker(files.serialLog, 60_000);
      expect(marker).toBe(files.marker);

      expect(await stopped).toMatchObject({ event: 'stopped', detail: 'shutdown' });
      const stoppedAt = events.find((e) => e.ev.event === 'stopped')!.at;
      expect(readMarker(await readText(files.serialLog))).toBe(files.marker);
      expect(await dom.state()).toMatchObject({ state: 'shutoff', reason: 'shutdown' });
      expect(await dom.isActive()).toBe(false);

      const undefinedEv = conn.waitForLifecycle((e) => e.domain.name === name && e.event === 'undefined', {
        timeoutMs: 10_000,
      });
      await dom.undefine();
      expect(await undefinedEv).toMatchObject({ detail: 'removed' });
      expect((await rejection(conn.lookupByName(name))).code).toBe(ErrorCode.VIR_ERR_NO_DOMAIN);

      const seq = events.map((e) => `${e.ev.event}/${e.ev.detail}`);
      expect(seq[0]).toBe('defined/added');
      expect(seq).toContain('started/booted');
      expect(seq.indexOf('stopped/shutdown')).toBeGreaterThan(seq.indexOf('started/booted'));
      expect(seq.at(-1)).toBe('undefined/removed');
      console.log(
        `[libvirt-napi] ${stack.libvirt.domainType}: create() ${createMs.toFixed(0)} ms; started event ` +
          `${(startedAt - t0).toFixed(0)} ms after create() was called; stopped event ${(stoppedAt - t0).toFixed(0)} ms`,
      );
    } finally {
      conn.off('lifecycle', onEvent);
      await removeDomain(conn, name);
      await files.cleanup();
    }
  });

  it('starts a transient domain paused: suspend/resume events, state reasons, block resize, live and config device changes', async () => {
    const files = await guestFiles('paused');
    const name = uniqueName('paused');
    try {
      const started = conn.waitForLifecycle((e) => e.domain.name === name && e.event === 'started', {
        timeoutMs: 60_000,
      });
      const dom = await conn.createXML(guestDomainXML(name, files), StartFlags.PAUSED);
      await started;
      expect(await dom.isPersistent()).toBe(false);
      expect(await dom.state()).toMatchObject({ state: 'paused', reason: 'user' });
      expect(await dom.id()).toBeGreaterThan(0);
      const info = await dom.info();
      expect(info).toMatchObject({ state: 'paused', nrVirtCpu: 1, maxMemKiB: 32 * 1024 });

      // Already running: OPERATION_INVALID.
      expect((await rejection(dom.create())).codeName).toBe('VIR_ERR_OPERATION_INVALID');

      // Block resize (bytes) on the running QEMU.
      const before = (await stat(files.disk)).size;
      await dom.blockResize('hda', before * 2);
      expect((await stat(files.disk)).size).toBe(before * 2);
      await expect(dom.blockResize('hda', -1)).rejects.toThrow(RangeError);
      expect((await rejection(dom.blockResize('nosuchdisk', before * 2))).codeName).toBe('VIR_ERR_INVALID_ARG');

      // Live hot-plug of a virtio disk, visible in the live XML.
      const extra = `${files.dir}/extra.raw`;
      await writeFile(extra, Buffer.alloc(1 << 20));
      const diskXML = `<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='${xmlEscape(extra)}'/><target dev='vdb' bus='virtio'/></disk>`;
      await dom.attachDevice(diskXML, DeviceModifyFlags.LIVE);
      expect(await dom.xml()).toContain(extra);

      // Malformed device XML: typed XML error.
      expect((await rejection(dom.attachDevice('<disk', DeviceModifyFlags.LIVE))).codeName).toBe('VIR_ERR_XML_DETAIL');

      const resumed = conn.waitForLifecycle((e) => e.domain.name === name && e.event === 'resumed', {
        timeoutMs: 10_000,
      });
      const suspended = conn.waitForLifecycle((e) => e.domain.name === name && e.event === 'suspended', {
        timeoutMs: 10_000,
      });
      await dom.resume();
      expect(await resumed).toMatchObject({ event: 'resumed', detail: 'unpaused' });
      await dom.suspend();
      expect(await suspended).toMatchObject({ event: 'suspended', detail: 'paused' });
      expect(await dom.state()).toMatchObject({ state: 'paused', reason: 'user' });

      const stopped = conn.waitForLifecycle((e) => e.domain.name === name && e.event === 'stopped', {
        timeoutMs: 30_000,
      });
      await dom.destroy();
      expect(await stopped).toMatchObject({ event: 'stopped', detail: 'destroyed' });
      // Transient: gone once destroyed.
      expect((await rejection(conn.lookupByUUID(dom.uuid()))).codeName).toBe('VIR_ERR_NO_DOMAIN');
    } finally {
      await removeDomain(conn, name);
      await files.cleanup();
    }
  });

  it('attaches and detaches devices in the persistent config of a defined domain', async () => {
    const files = await guestFiles('config');
    const name = uniqueName('config');
    try {
      const dom = await conn.defineXML(guestDomainXML(name, files));
      const extra = `${files.dir}/extra.raw`;
      const diskXML = `<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='${xmlEscape(extra)}'/><target dev='vdb' bus='virtio'/></disk>`;
      await dom.attachDevice(diskXML, DeviceModifyFlags.CONFIG);
      expect(await dom.xml(DomainXMLFlags.INACTIVE)).toContain(extra);
      await dom.detachDevice(diskXML, DeviceModifyFlags.CONFIG);
      expect(await dom.xml(DomainXMLFlags.INACTIVE)).not.toContain(extra);
      // Not running: a live change is OPERATION_INVALID.
      expect((await rejection(dom.attachDevice(diskXML, DeviceModifyFlags.LIVE))).codeName).toBe(
        'VIR_ERR_OPERATION_INVALID',
      );
      await dom.undefine();
    } finally {
      await removeDomain(conn, name);
      await files.cleanup();
    }
  });

  it('rejects bad XML and missing domains with the right typed codes', async () => {
    const malformed = await rejection(conn.defineXML(`<domain type='${stack.libvirt.domainType}'><name>x`));
    expect(malformed.codeName).toBe('VIR_ERR_XML_DETAIL');
    const invalid = await rejection(
      conn.defineXML(`<domain type='${stack.libvirt.domainType}'><name>${uniqueName('bad')}</name></domain>`),
    );
    expect(invalid.code).toBe(ErrorCode.VIR_ERR_XML_ERROR);
    expect(invalid.codeName).toBe('VIR_ERR_XML_ERROR');
    const unknownType = await rejection(
      conn.createXML(`<domain type='nosuchtype'><name>${uniqueName('bad')}</name></domain>`),
    );
    expect(unknownType.code).not.toBe(0);
    const missing = await rejection(conn.lookupByName(uniqueName('missing')));
    expect(missing.codeName).toBe('VIR_ERR_NO_DOMAIN');
    expect(missing.domainName).toBe('VIR_FROM_QEMU');
    expect((await rejection(conn.lookupByUUID(randomUUID()))).codeName).toBe('VIR_ERR_NO_DOMAIN');
  });
});

describe('secrets', () => {
  it('defines a ceph secret, sets its value, looks it up by usage and undefines it; the value never shows', async () => {
    const usage = `client.${uniqueName('secret')} secret`;
    const value = randomBytes(28);
    const b64 = value.toString('base64');
    const secret = await conn.defineSecret(
      `<secret ephemeral='no' private='yes'><usage type='ceph'><name>${xmlEscape(usage)}</name></usage></secret>`,
    );
    try {
      expect(secret.usageType()).toBe('ceph');
      expect(secret.usageID()).toBe(usage);
      await secret.setValue(value);
      const found = await conn.lookupSecretByUsage('ceph', usage);
      expect(found.uuid()).toBe(secret.uuid());
      expect((await conn.lookupSecretByUUID(secret.uuid())).usageID()).toBe(usage);
      expect((await conn.listAllSecrets()).map((s) => s.uuid())).toContain(secret.uuid());
      const xml = await found.xml();
      expect(xml).toContain(usage);
      for (const text of [xml, JSON.stringify(found), JSON.stringify(secret)]) {
        expect(text).not.toContain(b64);
        expect(text).not.toContain(value.toString('hex'));
      }
    } finally {
      await secret.undefine();
    }
    const missing = await rejection(conn.lookupSecretByUsage('ceph', usage));
    expect(missing.code).toBe(ErrorCode.VIR_ERR_NO_SECRET);
    // Setting a value on a deleted secret fails without echoing the value.
    const err = await rejection(secret.setValue(value));
    expect(err.codeName).toBe('VIR_ERR_NO_SECRET');
    expect(err.message).not.toContain(b64);
    // libvirtd's own log never gets it either.
    expect(await readText(`${stack.dir}/libvirt/libvirtd.log`)).not.toContain(b64);
  });

  it('finds the stack ceph secret by UUID', async () => {
    const s = await conn.lookupSecretByUUID(stack.libvirt.cephSecretUuid);
    expect(s.usageType()).toBe('ceph');
    expect(s.usageID()).toBe('client.ephemera secret');
  });
});
