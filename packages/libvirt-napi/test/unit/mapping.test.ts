import { describe, expect, it } from 'vitest';
import {
  DOMAIN_STATE_REASONS,
  DOMAIN_STATES,
  domainStateInfo,
  ErrorCode,
  ErrorDomain,
  ErrorLevel,
  isLibvirtError,
  LIFECYCLE_EVENTS,
  lifecycleEvent,
  LibvirtError,
  parseVersion,
} from '@ephemera/libvirt-napi';

describe('domain state mapping', () => {
  it('maps libvirt state and reason numbers to names', () => {
    expect(domainStateInfo(1, 1)).toEqual({ state: 'running', reason: 'booted', stateCode: 1, reasonCode: 1 });
    expect(domainStateInfo(5, 2)).toMatchObject({ state: 'shutoff', reason: 'destroyed' });
    expect(domainStateInfo(5, 1)).toMatchObject({ state: 'shutoff', reason: 'shutdown' });
    expect(domainStateInfo(3, 1)).toMatchObject({ state: 'paused', reason: 'user' });
    expect(domainStateInfo(6, 1)).toMatchObject({ state: 'crashed', reason: 'panicked' });
    expect(domainStateInfo(7, 0)).toMatchObject({ state: 'pmsuspended', reason: 'unknown' });
  });

  it('maps numbers newer than the binding to nostate/unknown and keeps the codes', () => {
    expect(domainStateInfo(42, 3)).toEqual({ state: 'nostate', reason: 'unknown', stateCode: 42, reasonCode: 3 });
    expect(domainStateInfo(1, 99)).toMatchObject({ state: 'running', reason: 'unknown', reasonCode: 99 });
  });

  it('has every libvirt 9.0 state with an unknown reason at index 0', () => {
    expect(DOMAIN_STATES).toHaveLength(8);
    for (const s of DOMAIN_STATES) expect(DOMAIN_STATE_REASONS[s][0]).toBe('unknown');
  });
});

describe('lifecycle event mapping', () => {
  const domain = { name: 'vm', uuid: '00000000-0000-0000-0000-000000000001' };

  it('maps event types and details', () => {
    expect(lifecycleEvent(domain, 2, 0)).toEqual({
      domain,
      event: 'started',
      detail: 'booted',
      eventCode: 2,
      detailCode: 0,
    });
    expect(lifecycleEvent(domain, 5, 0)).toMatchObject({ event: 'stopped', detail: 'shutdown' });
    expect(lifecycleEvent(domain, 5, 1)).toMatchObject({ event: 'stopped', detail: 'destroyed' });
    expect(lifecycleEvent(domain, 5, 5)).toMatchObject({ event: 'stopped', detail: 'failed' });
    expect(lifecycleEvent(domain, 8, 0)).toMatchObject({ event: 'crashed', detail: 'panicked' });
    expect(lifecycleEvent(domain, 0, 0)).toMatchObject({ event: 'defined', detail: 'added' });
    expect(lifecycleEvent(domain, 1, 0)).toMatchObject({ event: 'undefined', detail: 'removed' });
  });

  it('drops unknown event types and maps unknown details to unknown', () => {
    expect(lifecycleEvent(domain, LIFECYCLE_EVENTS.length, 0)).toBeUndefined();
    expect(lifecycleEvent(domain, 2, 77)).toMatchObject({ event: 'started', detail: 'unknown', detailCode: 77 });
  });
});

describe('LibvirtError', () => {
  it('carries code, domain, level, message and their names', () => {
    const err = new LibvirtError({
      code: ErrorCode.VIR_ERR_NO_DOMAIN,
      domain: ErrorDomain.VIR_FROM_QEMU,
      level: ErrorLevel.VIR_ERR_ERROR,
      message: "Domain not found: no domain with matching name 'x'",
    });
    expect(err).toBeInstanceOf(Error);
    expect(err.name).toBe('LibvirtError');
    expect(err.code).toBe(42);
    expect(err.codeName).toBe('VIR_ERR_NO_DOMAIN');
    expect(err.domainName).toBe('VIR_FROM_QEMU');
    expect(err.level).toBe(2);
    expect(err.message).toContain('Domain not found');
    expect(isLibvirtError(err)).toBe(true);
    expect(isLibvirtError(err, 'VIR_ERR_NO_DOMAIN')).toBe(true);
    expect(isLibvirtError(err, ErrorCode.VIR_ERR_NO_DOMAIN)).toBe(true);
    expect(isLibvirtError(err, 'VIR_ERR_OPERATION_INVALID')).toBe(false);
    expect(isLibvirtError(new Error('x'))).toBe(false);
  });

  it('names codes newer than the binding', () => {
    const err = new LibvirtError({ code: 5000, domain: 900, level: 2, message: 'm' });
    expect(err.codeName).toBe('VIR_ERR_UNKNOWN_5000');
    expect(err.domainName).toBe('VIR_FROM_UNKNOWN_900');
  });

  it('has libvirt 9.0 numbers for the codes callers switch on', () => {
    expect(ErrorCode.VIR_ERR_XML_ERROR).toBe(27);
    expect(ErrorCode.VIR_ERR_XML_DETAIL).toBe(35);
    expect(ErrorCode.VIR_ERR_OPERATION_INVALID).toBe(55);
    expect(ErrorCode.VIR_ERR_NO_SECRET).toBe(66);
    expect(ErrorCode.VIR_ERR_INVALID_CONN).toBe(6);
  });
});

describe('parseVersion', () => {
  it('decodes libvirt version numbers', () => {
    expect(parseVersion(9000000)).toEqual({ major: 9, minor: 0, release: 0, number: 9000000 });
    expect(parseVersion(7002001)).toEqual({ major: 7, minor: 2, release: 1, number: 7002001 });
  });
});
