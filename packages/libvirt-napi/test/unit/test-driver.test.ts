// The binding against libvirt's built-in test driver (test:///default): no daemon involved.
// test:///default state is shared by all connections of a process, so every test uses its own
// domain names and removes what it creates.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  connect,
  type Connection,
  DomainXMLFlags,
  ErrorCode,
  isLibvirtError,
  LibvirtError,
  libvirtVersion,
  ListDomainsFlags,
  type LifecycleEvent,
} from '@ephemera/libvirt-napi';

const URI = 'test:///default';

function domainXML(name: string, uuid = randomUUID()): string {
  return `<domain type='test'><name>${name}</name><uuid>${uuid}</uuid><memory unit='MiB'>64</memory><vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os></domain>`;
}

function uniqueName(tag: string): string {
  return `lvnapi-${tag}-${randomUUID().slice(0, 8)}`;
}

async function rejection(p: Promise<unknown>): Promise<LibvirtError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(LibvirtError);
    return err as LibvirtError;
  }
  throw new Error('expected a rejection');
}

/** Collects lifecycle events for one domain name. */
function recorder(conn: Connection, name: string): { events: LifecycleEvent[]; stop(): void } {
  const events: LifecycleEvent[] = [];
  const on = (ev: LifecycleEvent): void => {
    if (ev.domain.name === name) events.push(ev);
  };
  conn.on('lifecycle', on);
  return { events, stop: () => conn.off('lifecycle', on) };
}

let conn: Connection;

beforeAll(async () => {
  conn = await connect(URI);
});

afterAll(async () => {
  await conn?.close();
});

describe('connection', () => {
  it('reports versions, hostname and capabilities', async () => {
    expect(libvirtVersion().major).toBeGreaterThanOrEqual(9);
    const v = await conn.libVersion();
    expect(v.number).toBe(libvirtVersion().number);
    expect((await conn.hypervisorVersion()).number).toBeGreaterThan(0);
    expect((await conn.hostname()).length).toBeGreaterThan(0);
    const caps = await conn.capabilities();
    expect(caps).toContain('<capabilities>');
    expect(caps).toContain('<guest>');
    expect(conn.isAlive()).toBe(true);
    expect(conn.uri).toBe(URI);
  });

  it('rejects an unknown driver with a LibvirtError', async () => {
    const err = await rejection(connect('nosuchdriver:///x'));
    expect(err.code).not.toBe(ErrorCode.VIR_ERR_OK);
    expect(err.message.length).toBeGreaterThan(0);
  });

  it('reports an unsupported call with VIR_ERR_NO_SUPPORT', async () => {
    // The test driver has no domain capabilities.
    const err = await rejection(conn.domainCapabilities());
    expect(err.codeName).toBe('VIR_ERR_NO_SUPPORT');
  });

  it('rejects every call after close() with VIR_ERR_INVALID_CONN, and close() is idempotent', async () => {
    const c = await connect(URI);
    expect(c.closed).toBe(false);
    await c.close();
    expect(c.closed).toBe(true);
    expect(c.isAlive()).toBe(false);
    const err = await rejection(c.hostname());
    expect(err.code).toBe(ErrorCode.VIR_ERR_INVALID_CONN);
    expect(err.message).toBe('connection is closed');
    await c.close();
  });

  it('refuses writes on a read-only connection', async () => {
    const ro = await connect(URI, { readOnly: true });
    try {
      expect(ro.readOnly).toBe(true);
      expect((await ro.listAllDomains()).length).toBeGreaterThan(0);
      const err = await rejection(ro.defineXML(domainXML(uniqueName('ro'))));
      expect(err.codeName).toBe('VIR_ERR_OPERATION_DENIED');
    } finally {
      await ro.close();
    }
  });

  it('runs many calls concurrently off the JS thread', async () => {
    const t0 = performance.now();
    const results = await Promise.all(Array.from({ length: 64 }, () => conn.lookupByName('test')));
    expect(new Set(results.map((d) => d.uuid())).size).toBe(1);
    expect(performance.now() - t0).toBeLessThan(5000);
  });
});

describe('domains', () => {
  it('lists, and looks up by name and by UUID', async () => {
    const all = await conn.listAllDomains();
    const test = all.find((d) => d.name() === 'test');
    expect(test).toBeDefined();
    const byName = await conn.lookupByName('test');
    expect(byName.uuid()).toBe(test!.uuid());
    const byUUID = await conn.lookupByUUID(test!.uuid());
    expect(byUUID.name()).toBe('test');
    const active = await conn.listAllDomains(ListDomainsFlags.ACTIVE);
    for (const d of active) expect(await d.isActive()).toBe(true);
  });

  it('missing domains reject with VIR_ERR_NO_DOMAIN', async () => {
    const e1 = await rejection(conn.lookupByName(uniqueName('missing')));
    expect(e1.code).toBe(ErrorCode.VIR_ERR_NO_DOMAIN);
    expect(e1.codeName).toBe('VIR_ERR_NO_DOMAIN');
    expect(e1.level).toBe(2);
    expect(isLibvirtError(e1, 'VIR_ERR_NO_DOMAIN')).toBe(true);
    const e2 = await rejection(conn.lookupByUUID(randomUUID()));
    expect(e2.codeName).toBe('VIR_ERR_NO_DOMAIN');
  });

  it('XML errors reject with VIR_ERR_XML_DETAIL (malformed) and VIR_ERR_XML_ERROR (invalid)', async () => {
    const malformed = await rejection(conn.defineXML('<domain type="test"><name>x'));
    expect(malformed.codeName).toBe('VIR_ERR_XML_DETAIL');
    const invalid = await rejection(conn.defineXML(`<domain type='test'><name>${uniqueName('x')}</name></domain>`));
    expect(invalid.codeName).toBe('VIR_ERR_XML_ERROR');
    expect(invalid.message).toContain('XML error');
  });

  it('runs the full lifecycle and emits typed events with reasons', async () => {
    const name = uniqueName('life');
    const rec = recorder(conn, name);
    const dom = await conn.defineXML(domainXML(name));
    try {
      expect(dom.name()).toBe(name);
      expect(await dom.isPersistent()).toBe(true);
      expect(await dom.state()).toMatchObject({ state: 'shutoff' });
      expect(await dom.id()).toBe(-1);
      const notRunning = await rejection(dom.destroy());
      expect(notRunning.codeName).toBe('VIR_ERR_OPERATION_INVALID');
      expect(notRunning.message).toContain('not running');

      const started = conn.waitForLifecycle((e) => e.domain.name === name && e.event === 'started', {
        timeoutMs: 5000,
      });
      await dom.create();
      expect(await started).toMatchObject({ event: 'started', detail: 'booted', domain: { name, uuid: dom.uuid() } });
      expect(await dom.state()).toMatchObject({ state: 'running', reason: 'booted' });
      expect(await dom.id()).toBeGreaterThan(0);
      const info = await dom.info();
      expect(info).toMatchObject({ state: 'running', nrVirtCpu: 1, maxMemKiB: 65536 });
      expect(typeof info.cpuTimeNs).toBe('bigint');

      await dom.suspend();
      expect(await dom.state()).toMatchObject({ state: 'paused', reason: 'user' });
      await dom.resume();
      expect(await dom.state()).toMatchObject({ state: 'running', reason: 'unpaused' });

      const stopped = conn.waitForLifecycle((e) => e.domain.name === name && e.event === 'stopped', {
        timeoutMs: 5000,
      });
      await dom.destroy();
      expect(await stopped).toMatchObject({ event: 'stopped', detail: 'destroyed' });
      expect(await dom.state()).toMatchObject({ state: 'shutoff', reason: 'destroyed' });

      await dom.create();
      await dom.shutdown();
      expect(await dom.state()).toMatchObject({ state: 'shutoff', reason: 'shutdown' });

      const xml = await dom.xml(DomainXMLFlags.INACTIVE);
      expect(xml).toContain(`<name>${name}</name>`);
      expect(xml).toContain(dom.uuid());
    } finally {
      const undefinedEv = conn.waitForLifecycle((e) => e.domain.name === name && e.event === 'undefined', {
        timeoutMs: 5000,
      });
      await dom.undefine();
      await undefinedEv;
      rec.stop();
    }
    expect(rec.events.map((e) => `${e.event}/${e.detail}`)).toEqual([
      'defined/added',
      'started/booted',
      'suspended/paused',
      'resumed/unpaused',
      'stopped/destroyed',
      'started/booted',
      'stopped/shutdown',
      'undefined/removed',
    ]);
    expect((await rejection(conn.lookupByName(name))).codeName).toBe('VIR_ERR_NO_DOMAIN');
  });

  it('creates transient domains that vanish when destroyed', async () => {
    const name = uniqueName('transient');
    const started = conn.waitForLifecycle((e) => e.domain.name === name && e.event === 'started', { timeoutMs: 5000 });
    const dom = await conn.createXML(domainXML(name));
    await started;
    expect(await dom.isPersistent()).toBe(false);
    expect(await dom.isActive()).toBe(true);
    const listed = await conn.listAllDomains(ListDomainsFlags.TRANSIENT);
    expect(listed.map((d) => d.name())).toContain(name);
    await dom.destroy();
    expect((await rejection(conn.lookupByName(name))).codeName).toBe('VIR_ERR_NO_DOMAIN');
  });

  it('20 concurrent lifecycle waits: no listener-leak warning, and the bound returns once they settle', async () => {
    const warnings: Error[] = [];
    const onWarning = (w: Error): void => {
      if (w.name === 'MaxListenersExceededWarning') warnings.push(w);
    };
    process.on('warning', onWarning);
    const before = conn.getMaxListeners();
    try {
      const names = Array.from({ length: 20 }, (_, i) => uniqueName(`waiters-${i}`));
      const waits = names.map((name) =>
        conn.waitForLifecycle((e) => e.domain.name === name && e.event === 'started', { timeoutMs: 5000 }),
      );
      expect(conn.getMaxListeners()).toBe(before + 20);
      const doms = await Promise.all(names.map((name) => conn.createXML(domainXML(name))));
      await Promise.all(waits);
      await Promise.all(doms.map((d) => d.destroy()));
      // A timed-out wait gives its place back too.
      await expect(conn.waitForLifecycle(() => false, { timeoutMs: 10 })).rejects.toThrow(/within 10 ms/);
      await new Promise((r) => setImmediate(r));
      expect(warnings).toEqual([]);
      expect(conn.getMaxListeners()).toBe(before);
      expect(conn.listenerCount('lifecycle')).toBe(0);
    } finally {
      process.off('warning', onWarning);
    }
  });

  it('delivers events to every open connection', async () => {
    const other = await connect(URI);
    try {
      const name = uniqueName('fanout');
      const seen = other.waitForLifecycle((e) => e.domain.name === name && e.event === 'defined', { timeoutMs: 5000 });
      const dom = await conn.defineXML(domainXML(name));
      expect(await seen).toMatchObject({ event: 'defined', detail: 'added' });
      await dom.undefine();
    } finally {
      await other.close();
    }
  });

  it('stops delivering events after close()', async () => {
    const other = await connect(URI);
    const got: LifecycleEvent[] = [];
    other.on('lifecycle', (e) => got.push(e));
    await other.close();
    const name = uniqueName('closed');
    const seen = conn.waitForLifecycle((e) => e.domain.name === name && e.event === 'undefined', { timeoutMs: 5000 });
    const dom = await conn.defineXML(domainXML(name));
    await dom.undefine();
    await seen;
    expect(got.filter((e) => e.domain.name === name)).toEqual([]);
  });

  it('reboots a running domain', async () => {
    const name = uniqueName('reboot');
    const dom = await conn.createXML(domainXML(name));
    try {
      await dom.reboot();
      expect(await dom.state()).toMatchObject({ state: 'running' });
    } finally {
      await dom.destroy();
    }
  });

  it('rejects domain calls with VIR_ERR_INVALID_CONN once their connection is closed', async () => {
    const c = await connect(URI);
    const dom = await c.lookupByName('test');
    await c.close();
    expect(dom.name()).toBe('test');
    const err = await rejection(dom.state());
    expect(err.codeName).toBe('VIR_ERR_INVALID_CONN');
    expect((await rejection(dom.destroy())).codeName).toBe('VIR_ERR_INVALID_CONN');
  });

  it('validates arguments before calling libvirt', async () => {
    const dom = await conn.lookupByName('test');
    await expect(dom.blockResize('vda', 1.5)).rejects.toThrow(RangeError);
    await expect(dom.blockResize('vda', -1n)).rejects.toThrow(RangeError);
    // @ts-expect-error wrong type on purpose
    await expect(conn.lookupSecretByUsage('bogus', 'x')).rejects.toThrow(TypeError);
    // @ts-expect-error wrong type on purpose
    await expect(conn.lookupByName(42)).rejects.toThrow(TypeError);
  });

  it('reports an exception thrown by a listener as an uncaught exception', async () => {
    const name = uniqueName('throw');
    const boom = new Error('listener boom');
    const uncaught = new Promise<unknown>((resolve) => {
      const listeners = process.listeners('uncaughtException');
      process.removeAllListeners('uncaughtException');
      process.once('uncaughtException', (err) => {
        for (const l of listeners) process.on('uncaughtException', l);
        resolve(err);
      });
    });
    // Throw once: later events of this domain (e.g. `undefined` from the clean-up below) must not
    // raise a second, unhandled exception after the one-shot handler above is gone.
    let thrown = false;
    const throwing = (ev: LifecycleEvent): void => {
      if (ev.domain.name === name && !thrown) {
        thrown = true;
        throw boom;
      }
    };
    conn.on('lifecycle', throwing);
    try {
      const dom = await conn.defineXML(domainXML(name));
      expect(await uncaught).toBe(boom);
      await dom.undefine();
    } finally {
      conn.off('lifecycle', throwing);
    }
  });

  it('waitForLifecycle honours timeouts and abort signals', async () => {
    await expect(conn.waitForLifecycle(() => false, { timeoutMs: 20 })).rejects.toThrow(/within 20 ms/);
    const ac = new AbortController();
    const p = conn.waitForLifecycle(() => false, { signal: ac.signal });
    ac.abort(new Error('stop waiting'));
    await expect(p).rejects.toThrow('stop waiting');
    expect(conn.listenerCount('lifecycle')).toBe(0);
  });
});
