/** The ownership part of the conformance suite (issue 18): every backend records, reads, hands over and lists owners. */
import assert from 'node:assert/strict';
import { expectImageBackendError } from './conformance-asserts.js';
import { isDiskOwner, type DiskOwner, type OwnerStamp } from './owner.js';
import { sourceImageFromBytes } from './source-image.js';
import type { DiskRef, ImageBackend, SourceImage } from './types.js';

/** What the owner tests need from the suite around them. */
export interface OwnerTestContext {
  test: (name: string, fn: () => Promise<void>) => void;
  backend: () => ImageBackend;
  newDisk: (name?: string) => DiskRef;
  content: (seed: number) => Uint8Array;
  cloneableImage: (() => ((content: Uint8Array) => Promise<SourceImage>) | undefined) | undefined;
  blankBytes: number;
}

const A: OwnerStamp = { hostId: 'conformance-host-a', version: '1.2.3' };
const B: OwnerStamp = { hostId: 'conformance-host-b', version: '1.2.4' };

function owned(b: ImageBackend): Required<Pick<ImageBackend, 'getOwner' | 'setOwner'>> {
  assert.equal(typeof b.getOwner, 'function', 'the backend records owners (getOwner)');
  assert.equal(typeof b.setOwner, 'function', 'the backend hands disks over (setOwner)');
  return { getOwner: b.getOwner!.bind(b), setOwner: b.setOwner!.bind(b) };
}

function assertOwner(got: DiskOwner | null | undefined, disk: DiskRef, stamp: OwnerStamp, why: string): void {
  assert.ok(isDiskOwner(got), `${why}: a well-formed owner record, got ${JSON.stringify(got)}`);
  assert.equal(got.hostId, stamp.hostId, `${why}: host`);
  assert.equal(got.version, stamp.version, `${why}: version`);
  assert.equal(got.instance, disk.instance.toLowerCase(), `${why}: instance`);
  assert.equal(got.disk, disk.name, `${why}: disk name`);
}

/** Registers the owner tests. */
export function describeOwnerConformance(c: OwnerTestContext): void {
  c.test('records the owner given at create (blank, import, clone): getOwner and list carry it', async () => {
    const b = c.backend();
    const { getOwner } = owned(b);
    const before = Date.now() - 1000;
    const blank = c.newDisk('disk.eph0');
    await b.createBlank(blank, c.blankBytes, { owner: A });
    const imported = c.newDisk();
    await b.createFromImage(imported, sourceImageFromBytes(c.content(11)), { owner: A });
    const made: DiskRef[] = [blank, imported];
    const make = c.cloneableImage?.();
    if (b.capabilities.clone && make) {
      const cloned = c.newDisk();
      const r = await b.createFromImage(cloned, await make(c.content(12)), { owner: B });
      assert.equal(r.method, 'cloned', `expected a clone: ${r.reason}`);
      assertOwner(await getOwner(cloned), cloned, B, 'clone');
    }
    for (const d of made) {
      const o = await getOwner(d);
      assertOwner(o, d, A, `${d.name}`);
      const t = Date.parse(o!.createdAt);
      assert.ok(t >= before && t <= Date.now() + 1000, `createdAt ${o!.createdAt} is the creation time`);
      const listed = await b.list({ instance: d.instance });
      assert.equal(listed.length, 1);
      assert.deepEqual(listed[0]!.owner, o, 'list carries the same owner');
      assert.deepEqual((await b.info(d)).owner, o, 'info carries the same owner');
    }
    const all = await b.list();
    for (const d of made)
      assert.equal(all.find((x) => x.disk.instance === d.instance.toLowerCase())?.owner?.hostId, A.hostId);
  });

  c.test('a disk created without owner reads back as unowned (null), in getOwner and list', async () => {
    const b = c.backend();
    const { getOwner } = owned(b);
    const d = c.newDisk();
    await b.createBlank(d, c.blankBytes);
    assert.equal(await getOwner(d), null);
    assert.equal((await b.list({ instance: d.instance }))[0]!.owner, null);
  });

  c.test('setOwner hands a disk over (host and version change, creation kept) and adopts an unowned one', async () => {
    const b = c.backend();
    const { getOwner, setOwner } = owned(b);
    const d = c.newDisk();
    await b.createBlank(d, c.blankBytes, { owner: A });
    const first = (await getOwner(d))!;
    const moved = await setOwner(d, B);
    assertOwner(moved, d, B, 'setOwner result');
    assert.equal(moved.createdAt, first.createdAt, 'creation time kept');
    assert.deepEqual(await getOwner(d), moved);
    assert.deepEqual((await b.list({ instance: d.instance }))[0]!.owner, moved);
    // back again: a second handover works the same way
    assertOwner(await setOwner(d, A), d, A, 'handed back');
    const bare = c.newDisk();
    await b.createBlank(bare, c.blankBytes);
    assertOwner(await setOwner(bare, B), bare, B, 'adopted');
    assertOwner(await getOwner(bare), bare, B, 'adopted, read back');
  });

  c.test('owner errors: bad stamps are InvalidArgument and change nothing; missing disks NotFound', async () => {
    const b = c.backend();
    const { getOwner, setOwner } = owned(b);
    const d = c.newDisk();
    await b.createBlank(d, c.blankBytes, { owner: A });
    const bad = [
      { hostId: 'has space', version: '1' },
      { hostId: 'a;rm', version: '1' },
      { hostId: '', version: '1' },
      { hostId: 'x'.repeat(65), version: '1' },
      { hostId: 'ok', version: '' },
      { hostId: 'ok', version: 'v 1' },
    ] as OwnerStamp[];
    for (const s of bad) {
      await expectImageBackendError(setOwner(d, s), 'INVALID_ARGUMENT');
      const other = c.newDisk();
      await expectImageBackendError(b.createBlank(other, c.blankBytes, { owner: s }), 'INVALID_ARGUMENT');
      assert.equal(await b.exists(other), false, 'a create with a bad owner leaves nothing');
    }
    assertOwner(await getOwner(d), d, A, 'unchanged');
    const missing = c.newDisk();
    await expectImageBackendError(getOwner(missing), 'NOT_FOUND');
    await expectImageBackendError(setOwner(missing, B), 'NOT_FOUND');
    assert.equal(await b.exists(missing), false);
  });
}
