import { describe, expect, it } from 'vitest';
import type { DiskSource } from '@ephemera/image-backend';
import { MemoryBackend } from '@ephemera/image-backend';
import { type DiskSourceSpec, diskXml } from '@ephemera/libvirt-xml';
import { attr, find, parseXml } from '../xml-tools.js';

// Compile time (tsc --noEmit over test/): every DiskSource a backend returns is a DiskSourceSpec.
const toSpec = (s: DiskSource): DiskSourceSpec => s;

describe('a backend diskSource() feeds the XML generator as is', () => {
  it('file disk from the reference backend, and rbd/block shapes of the contract', async () => {
    const b = new MemoryBackend();
    const disk = { instance: '6f1c8a52-3c4b-4d1e-9f6a-2b7c9d0e1f23', name: 'disk' };
    await b.createBlank(disk, 1 << 20, { format: 'qcow2' });
    const file = parseXml(diskXml({ source: toSpec(await b.diskSource(disk)), target: { dev: 'vda', bus: 'virtio' } }));
    expect(attr(find(file, 'driver'), 'type')).toBe('qcow2');
    expect(attr(find(file, 'source'), 'file')).toBe('/memory/memory/6f1c8a52-3c4b-4d1e-9f6a-2b7c9d0e1f23_disk');

    const rbd: DiskSource = {
      type: 'network',
      protocol: 'rbd',
      name: 'vms/x_disk',
      hosts: [{ host: 'fd00::5', port: 3300 }],
      auth: { username: 'ephemera', secretUuid: '8e70ab7a-6a5f-46ba-bb10-b691cc1fb11f' },
      format: 'raw',
    };
    const net = parseXml(diskXml({ source: toSpec(rbd), target: { dev: 'vda' } }));
    expect(attr(find(net, 'host'), 'name')).toBe('fd00::5');
    const block: DiskSource = { type: 'block', path: '/dev/loop1', format: 'raw' };
    expect(attr(find(parseXml(diskXml({ source: toSpec(block), target: { dev: 'vdb' } })), 'source'), 'dev')).toBe(
      '/dev/loop1',
    );
  });
});
