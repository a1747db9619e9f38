/** Assertions the conformance suite uses, exported for backends' own tests. */
import assert from 'node:assert/strict';
import {
  isImageBackendError,
  type ImageBackendError,
  type ImageBackendErrorCode,
  type UnsupportedOperationError,
} from './errors.js';
import { isUuid } from './disk-ref.js';
import type { Capability, DiskSource, ProgressEvent } from './types.js';

/** Rejects unless `promise` rejects with a contract error of `code`; returns the error. */
export async function expectImageBackendError(
  promise: Promise<unknown>,
  code: ImageBackendErrorCode,
): Promise<ImageBackendError> {
  let result: unknown;
  try {
    result = await promise;
  } catch (err) {
    if (!isImageBackendError(err, code)) {
      const got = isImageBackendError(err) ? `${err.code}: ${err.message}` : String((err as Error)?.stack ?? err);
      assert.fail(`expected ImageBackendError ${code}, got ${got}`);
    }
    return err;
  }
  assert.fail(`expected ImageBackendError ${code}, but it resolved with ${JSON.stringify(result)}`);
}

/** Rejects unless `promise` rejects with `UnsupportedOperationError` naming `capability`. */
export async function expectUnsupported(promise: Promise<unknown>, capability: Capability): Promise<void> {
  const err = await expectImageBackendError(promise, 'UNSUPPORTED_OPERATION');
  assert.equal((err as UnsupportedOperationError).capability, capability, `capability named in ${err.message}`);
}

const HOST_RE = /^(?:[A-Za-z0-9.-]+|[0-9A-Fa-f:.]+)$/;

/** Throws unless `source` is a well-formed `DiskSource` (absolute paths, rbd `pool/image`, hosts, auth pairs). */
export function assertWellFormedDiskSource(source: DiskSource): void {
  assert.equal(typeof source, 'object');
  switch (source.type) {
    case 'file':
      assert.match(source.path, /^\/[^\0]*$/, 'file path is absolute');
      assert.ok(source.format === 'raw' || source.format === 'qcow2', `file format ${source.format}`);
      break;
    case 'block':
      assert.match(source.path, /^\/[^\0]*$/, 'block path is absolute');
      assert.equal(source.format, 'raw');
      break;
    case 'network':
      assert.equal(source.protocol, 'rbd');
      assert.match(source.name, /^[^/@\s]+(\/[^/@\s]+){1,2}$/, 'rbd name is pool/image');
      assert.ok(Array.isArray(source.hosts) && source.hosts.length > 0, 'at least one monitor');
      for (const h of source.hosts) {
        assert.match(h.host, HOST_RE, `monitor host ${h.host} (IPv6 without brackets)`);
        assert.ok(Number.isInteger(h.port) && h.port > 0 && h.port < 65536, `monitor port ${h.port}`);
      }
      if (source.auth !== undefined) {
        assert.match(source.auth.username, /^[A-Za-z0-9_.+-]+$/, 'auth username');
        assert.ok(isUuid(source.auth.secretUuid), 'auth secretUuid is a UUID');
      }
      assert.equal(source.format, 'raw');
      break;
    default:
      assert.fail(`unknown disk source type ${JSON.stringify((source as { type?: unknown }).type)}`);
  }
  if (source.encryption !== undefined) {
    assert.equal(source.encryption.format, 'luks');
    assert.ok(isUuid(source.encryption.secretUuid));
  }
}

export function assertProgress(events: ProgressEvent[]): void {
  assert.ok(events.length > 0, 'at least one progress event');
  let last = -1;
  for (const e of events) {
    assert.ok(e.percent >= 0 && e.percent <= 100, `percent ${e.percent} in 0..100`);
    assert.ok(e.percent >= last, `percent monotonic (${last} -> ${e.percent})`);
    assert.ok(Number.isFinite(e.bytesDone) && e.bytesDone >= 0, 'bytesDone');
    last = e.percent;
  }
  assert.equal(events.at(-1)!.percent, 100, 'last event at 100%');
}
