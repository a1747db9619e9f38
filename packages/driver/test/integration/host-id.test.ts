// Every log line the driver writes names its host (issue 18 item 1): many hosts log about disks
// of one shared pool, so a line without the host cannot be attributed. Real libvirtd and Ceph.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDriver, createLogger } from '@ephemera/driver';
import { stackConfig, stateUnder } from './support.js';

let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'eph-host-id-'));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('host id in the logs', () => {
  it('every line the driver logs carries host: <host.id>', async () => {
    const config = stackConfig({ ...stateUnder(dir), host: { id: 'log-host-7' }, log: { level: 'debug' } });
    const file = join(dir, 'driver.log');
    const driver = await createDriver({ config, logger: createLogger('debug', file) });
    await driver.gc();
    await driver.close();
    const lines = (await readFile(file, 'utf8'))
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    // the configuration, Ceph and libvirt connections at least
    expect(lines.length).toBeGreaterThanOrEqual(3);
    for (const l of lines) expect(l.host, JSON.stringify(l)).toBe('log-host-7');
  });
});
