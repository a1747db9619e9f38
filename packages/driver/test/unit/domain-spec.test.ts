// The spawn request's domain options and the embedder's customizeDomain hook (pure spec logic;
// the e2e test `e2e/domain-nic.test.ts` boots a VM with a NIC).
import { isDriverError } from '@ephemera/driver';
import { type DomainSpec, domainXml } from '@ephemera/libvirt-xml';
import { describe, expect, it } from 'vitest';
import { type DomainHookContext, customizeDomainSpec } from '../../src/domain-spec.js';

const UUID = '6f1c8a52-3c4b-4d1e-9f6a-2b7c9d0e1f23';
const base = (): DomainSpec => ({
  type: 'qemu',
  name: `instance-${UUID}`,
  uuid: UUID,
  memoryMiB: 64,
  vcpus: 2,
  os: { arch: 'x86_64', machine: 'pc', boot: ['hd'] },
  disks: [{ source: { type: 'file', path: '/x', format: 'qcow2' }, target: { dev: 'vda', bus: 'virtio' } }],
  serialLogPath: '/var/lib/ephemera/instances/x/console.log',
  metadata: { instanceId: UUID },
});
const ctx: DomainHookContext = {
  instance: UUID,
  name: 'web',
  image: '11111111-2222-4333-8444-555555555555',
  flavor: { vcpus: 2, memoryMiB: 64, rootGiB: 1 },
  backend: 'qcow2',
};

function refusal(f: () => unknown): unknown {
  try {
    f();
  } catch (err) {
    return err;
  }
  throw new Error('expected a refusal');
}

describe('customizeDomainSpec', () => {
  it('applies the typed options: interfaces, cpu, machine type, devices', () => {
    const out = customizeDomainSpec(
      base(),
      {
        interfaces: [{ type: 'user', model: 'e1000' }],
        cpu: { mode: 'maximum', topology: { sockets: 1, cores: 2, threads: 1 } },
        machine: 'q35',
        devices: [
          {
            element: 'rng',
            attributes: { model: 'virtio' },
            children: [{ element: 'backend', attributes: { model: 'random' } }],
          },
        ],
      },
      undefined,
      ctx,
    );
    expect(out.interfaces).toEqual([{ type: 'user', model: 'e1000' }]);
    expect(out.cpu?.mode).toBe('maximum');
    expect(out.os).toEqual({ arch: 'x86_64', machine: 'q35', boot: ['hd'] });
    const xml = domainXml(out);
    expect(xml).toContain("<interface type='user'>");
    expect(xml).toContain("<type arch='x86_64' machine='q35'>hvm</type>");
    expect(xml).toContain("<rng model='virtio'>");
  });

  it('runs the hook after the options, with the context, and uses what it returns', () => {
    const seen: [DomainSpec, DomainHookContext][] = [];
    const out = customizeDomainSpec(
      base(),
      { machine: 'q35' },
      (spec, c) => {
        seen.push([spec, c]);
        return { ...spec, interfaces: [...(spec.interfaces ?? []), { type: 'user' }], cpuMode: 'host-model' };
      },
      ctx,
    );
    expect(seen).toHaveLength(1);
    expect(seen[0]![0].os?.machine).toBe('q35');
    expect(seen[0]![1]).toEqual(ctx);
    expect(out.interfaces).toEqual([{ type: 'user' }]);
    expect(domainXml(out)).toContain("<cpu mode='host-model'/>");
  });

  it('hands the hook a frozen spec: mutating it is refused as INVALID_ARGUMENT', () => {
    const err = refusal(() =>
      customizeDomainSpec(
        base(),
        undefined,
        (spec) => {
          (spec.disks as unknown[]).push({});
          return spec;
        },
        ctx,
      ),
    );
    expect(isDriverError(err, 'INVALID_ARGUMENT')).toBe(true);
    expect(String((err as Error).message)).toMatch(/customizeDomain/);
  });

  const changes: [string, (s: DomainSpec) => Partial<DomainSpec>][] = [
    ['name', () => ({ name: 'other' })],
    ['uuid', () => ({ uuid: '00000000-0000-4000-8000-000000000000' })],
    ['disks', (s) => ({ disks: [...s.disks] })],
    ['serialLogPath', () => ({ serialLogPath: '/tmp/elsewhere.log' })],
    ['metadata', (s) => ({ metadata: { ...s.metadata!, flavor: 'x' } })],
    ['memoryMiB', () => ({ memoryMiB: 128 })],
    ['vcpus', () => ({ vcpus: 4 })],
  ];
  it.each(changes)('refuses a hook that changes %s (the driver owns it)', (key, change) => {
    const err = refusal(() => customizeDomainSpec(base(), undefined, (spec) => ({ ...spec, ...change(spec) }), ctx));
    expect(isDriverError(err, 'INVALID_ARGUMENT')).toBe(true);
    expect(String((err as Error).message)).toContain(key);
  });

  it('refuses a hook that returns no spec, and a hook that throws, as INVALID_ARGUMENT', () => {
    expect(
      isDriverError(
        refusal(() => customizeDomainSpec(base(), undefined, () => undefined as never, ctx)),
        'INVALID_ARGUMENT',
      ),
    ).toBe(true);
    const err = refusal(() =>
      customizeDomainSpec(
        base(),
        undefined,
        () => {
          throw new Error('no NIC today');
        },
        ctx,
      ),
    );
    expect(isDriverError(err, 'INVALID_ARGUMENT')).toBe(true);
    expect((err as Error).message).toContain('no NIC today');
  });

  it('refuses options that are not an object and unknown option keys', () => {
    expect(
      isDriverError(
        refusal(() => customizeDomainSpec(base(), 'nic' as never, undefined, ctx)),
        'INVALID_ARGUMENT',
      ),
    ).toBe(true);
    const err = refusal(() => customizeDomainSpec(base(), { interface: [] } as never, undefined, ctx));
    expect(isDriverError(err, 'INVALID_ARGUMENT')).toBe(true);
    expect((err as Error).message).toContain('interface');
  });
});
