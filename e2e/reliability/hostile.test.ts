// Hostile input through the whole driver (issue 11), on the shared stack:
// - malicious images (host-file references, format lies, header bombs; the inspector issue's
//   corpus) through spawn on the RBD and qcow2 backends: refused with a typed error, and no disk
//   ever appears (a watcher lists the pool / instance directory every few ms during the spawn);
// - instance names, flavor names, extra specs and snapshot names with XML and shell
//   metacharacters: the domain libvirt stores has the same element structure as a benign one,
//   the name round-trips as text, and no command the driver starts carries any of it.
import '../../tools/faults/record-processes-now.js';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type Cluster, type IoCtx } from '@ephemera/ceph-rbd-napi';
import { isDriverError } from '@ephemera/driver';
import { loadStack } from '@ephemera/testkit';
import { parseXml, type Node } from '../../packages/libvirt-xml/test/xml-tools.js';
import { recordedProcesses } from '../../tools/faults/record-processes.js';
import {
  NOTHING,
  TINY,
  deleteImage,
  leftovers,
  newUuid,
  printReport,
  testDriver,
  uploadGuest,
  uploadImage,
  type ReportRow,
  type TestDriver,
} from './support.js';

const exec = promisify(execFile);
let t: TestDriver;
let work: string;
let admin: Cluster;
let vms: IoCtx;
let guest: string;
const uploaded: string[] = [];
const rows: ReportRow[] = [];

const qemuImg = (...args: string[]) => exec('qemu-img', args, { timeout: 60_000 });
async function patch(path: string, edits: [number, Uint8Array][]): Promise<void> {
  const b = new Uint8Array(await readFile(path));
  for (const [o, e] of edits) b.set(e, o);
  await writeFile(path, b);
}
const be32 = (n: number) => {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n, false);
  return b;
};
const be64 = (n: bigint) => {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, n, false);
  return b;
};
const text = (s: string) => new TextEncoder().encode(s);

/** The malicious corpus: file, declared Glance disk_format, what it tries. */
async function corpus(): Promise<{ name: string; file: string; format: string }[]> {
  const f = (n: string) => join(work, n);
  const out: { name: string; file: string; format: string }[] = [];
  await qemuImg('create', '-q', '-f', 'qcow2', '-u', '-b', '/etc/passwd', '-F', 'raw', f('backing.qcow2'), '1M');
  out.push({ name: 'qcow2 backing file /etc/passwd', file: f('backing.qcow2'), format: 'qcow2' });
  const dataName = f('d'.repeat(20));
  await qemuImg(
    'create',
    '-q',
    '-f',
    'qcow2',
    '-o',
    `data_file=${dataName},data_file_raw=on`,
    f('datafile.qcow2'),
    '1M',
  );
  const df = Buffer.from(await readFile(f('datafile.qcow2')));
  await patch(f('datafile.qcow2'), [[df.indexOf(dataName), text('/'.repeat(dataName.length - 10) + 'etc/passwd')]]);
  out.push({ name: 'qcow2 external data file /etc/passwd', file: f('datafile.qcow2'), format: 'qcow2' });
  await writeFile(
    f('flat.vmdk'),
    '# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="monolithicFlat"\nRW 8 FLAT "/etc/passwd" 0\n',
  );
  out.push({ name: 'vmdk FLAT extent /etc/passwd', file: f('flat.vmdk'), format: 'vmdk' });
  await qemuImg('create', '-q', '-f', 'vmdk', f('cve.vmdk'), '1M');
  await patch(f('cve.vmdk'), [
    [12, new Uint8Array(8)],
    [
      512,
      text(
        '# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="monolithicFlat"\nRW 8 FLAT "/etc/passwd" 0\n\0',
      ),
    ],
  ]);
  out.push({ name: 'sparse vmdk, embedded FLAT descriptor (CVE-2024-32498)', file: f('cve.vmdk'), format: 'vmdk' });
  await qemuImg('create', '-q', '-f', 'vmdk', f('delta.vmdk'), '1M');
  await patch(f('delta.vmdk'), [
    [
      512,
      text(
        '# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=12345678\ncreateType="monolithicSparse"\nparentFileNameHint="/etc/passwd"\nRW 2048 SPARSE "delta.vmdk"\n\0',
      ),
    ],
  ]);
  out.push({ name: 'vmdk delta with a parent on the host', file: f('delta.vmdk'), format: 'vmdk' });
  await writeFile(f('random.qcow2'), randomBytes(256 * 1024));
  out.push({ name: 'random bytes declared qcow2', file: f('random.qcow2'), format: 'qcow2' });
  for (const [n, off, bytes] of [
    ['l1-bomb.qcow2', 36, be32(0xffffffff)],
    ['unknown-feature.qcow2', 72, be64(1n << 20n)],
  ] as const) {
    await qemuImg('create', '-q', '-f', 'qcow2', f(n), '1M');
    await patch(f(n), [[off, bytes]]);
    out.push({
      name: n === 'l1-bomb.qcow2' ? 'qcow2 L1 table header bomb' : 'qcow2 unknown incompatible feature',
      file: f(n),
      format: 'qcow2',
    });
  }
  await qemuImg('create', '-q', '-f', 'qcow2', f('as-raw.img'), '1M');
  out.push({ name: 'genuine qcow2 declared raw (import path)', file: f('as-raw.img'), format: 'raw' });
  return out;
}

/** Runs `fn` while listing the vms pool and the qcow2 instance dir every few ms; returns what appeared for `uuid`. */
async function watching<T>(
  uuid: string,
  fn: () => Promise<T>,
): Promise<{ result: T | undefined; error: unknown; seen: string[] }> {
  const seen = new Set<string>();
  let stop = false;
  const poll = (async () => {
    while (!stop) {
      for (const n of await vms.list().catch(() => [] as string[])) if (n.startsWith(uuid)) seen.add(`rbd:${n}`);
      for (const n of await readdir(t.config.instancesPath).catch(() => [] as string[]))
        if (n.includes(`${uuid}_`)) seen.add(`file:${n}`);
      await new Promise((r) => setTimeout(r, 3));
    }
  })();
  let result: T | undefined;
  let error: unknown;
  try {
    result = await fn();
  } catch (e) {
    error = e;
  }
  stop = true;
  await poll;
  return { result, error, seen: [...seen] };
}

function causeCodes(err: unknown): string[] {
  const out: string[] = [];
  for (let e = err as { code?: unknown; cause?: unknown } | undefined, i = 0; e && i < 8; e = e.cause as typeof e, i++)
    if (e.code !== undefined) out.push(String(e.code));
  return out;
}

beforeAll(async () => {
  work = mkdtempSync('/tmp/eph-rel-hostile-');
  t = await testDriver(loadStack(), { images: { enabled: ['qcow2'] } });
  const u = t.stack.ceph.users.admin;
  admin = await connect({ confPath: u.confPath, clientId: u.id, keyringPath: u.keyringPath, timeoutMs: 20_000 });
  vms = await admin.openIoCtx(t.stack.ceph.pools.vms);
  guest = await uploadGuest(t.glance, 'rel-hostile');
}, 600_000);

afterAll(async () => {
  printReport('hostile input', rows);
  for (const id of uploaded) await deleteImage(t?.glance, id);
  await deleteImage(t?.glance, guest);
  await vms?.close();
  await admin?.close();
  await t?.close();
  rmSync(work, { recursive: true, force: true });
}, 300_000);

describe('malicious images through spawn', () => {
  it('are refused with a typed error before any disk exists (rbd and qcow2 backends)', async () => {
    const images = await corpus();
    const baseBefore = await readdir(t.config.images.qcow2.basePath).catch(() => [] as string[]);
    const refusals: string[] = [];
    for (const img of images) {
      const id = await uploadImage(
        t.glance,
        `rel-evil-${img.name.replace(/[^a-z0-9]+/gi, '-')}`,
        await readFile(img.file),
        img.format,
      );
      uploaded.push(id);
      for (const backend of ['rbd', 'qcow2']) {
        const uuid = newUuid();
        const r = await watching(uuid, () =>
          t.driver.spawn({ instance: uuid, image: id, flavor: TINY, backend, forceImport: img.format === 'raw' }),
        );
        expect(r.error, `${img.name} on ${backend} was accepted`).toBeDefined();
        expect(isDriverError(r.error), String(r.error)).toBe(true);
        const codes = causeCodes(r.error);
        refusals.push(`${img.name} / ${backend}: ${codes.join(' <- ')}`);
        expect(
          codes.some((c) => ['UNSAFE_IMAGE', 'IMAGE_UNUSABLE', 'INVALID_ARGUMENT', 'IMAGE_FORMAT'].includes(c)),
          `${img.name} on ${backend}: ${codes.join(',')}: ${(r.error as Error).message}`,
        ).toBe(true);
        expect(r.seen, `${img.name} on ${backend}: a disk appeared during the spawn`).toEqual([]);
        expect(await leftovers(t, uuid)).toEqual(NOTHING);
      }
    }
    // Nothing entered the qcow2 image cache either.
    expect(await readdir(t.config.images.qcow2.basePath).catch(() => [] as string[])).toEqual(baseBefore);
    console.log(`refusals:\n${refusals.join('\n')}`);
    rows.push({
      fault: 'malicious images through spawn (rbd, qcow2)',
      tries: images.length * 2,
      left: 'nothing (no disk ever appeared)',
      note: `${images.length} images x 2 backends`,
    });
  });
});

describe('hostile names and metadata', () => {
  const FIXED = [
    "</name><devices><disk type='file' device='disk'><source file='/etc/shadow'/><target dev='vdz'/></disk></devices><name>x",
    `x' onload='alert(1)' a="b`,
    '"; rm -rf / #',
    '$(touch /tmp/ephemera-pwned) `id` | tee /tmp/ephemera-pwned2 & echo',
    '--help -o backing_file=/etc/passwd -f qcow2',
    ']]><!-- <![CDATA[ &amp; &#x41; &lt; &bogus; %param;',
    '../../../../etc/passwd',
    '名前 \u202e evil \ud83d\ude00',
  ];
  const GENERATED = fc.sample(
    fc
      .string({
        unit: fc.constantFrom(...'<>&\'"`$;|\\/(){}[]*?!#~%=: -_.aZ09\u00e9\u4e2d'.split('')),
        minLength: 1,
        maxLength: 60,
      })
      .filter((s) => s.trim().length > 0),
    { numRuns: 6, seed: 20261124 },
  );

  /** Element structure (names and attribute names, not text or values) of a domain. */
  function shape(n: Node): unknown {
    return [n.name, n.attrs.map(([k]) => k).sort(), n.children.map(shape)];
  }
  function textOf(n: Node, path: string[]): string | undefined {
    let cur: Node | undefined = n;
    for (const p of path) cur = cur?.children.find((c) => c.name === p || c.name.endsWith(`:${p}`));
    return cur?.text;
  }
  async function dump(uuid: string): Promise<Node> {
    const { stdout } = await exec(
      'virsh',
      ['-c', t.stack.libvirt.uri, 'dumpxml', '--inactive', t.driver.domainName(uuid)],
      { timeout: 60_000 },
    );
    return parseXml(stdout);
  }
  /** The domain shape with uuid-specific values normalised (they differ per instance). */
  async function spawnAndDump(
    name: string,
    flavorName: string,
    extraSpecs?: Record<string, string>,
  ): Promise<{ uuid: string; dom: Node }> {
    const uuid = newUuid();
    await t.driver.spawn({
      instance: { uuid, name },
      image: guest,
      flavor: { ...TINY, name: flavorName, ...(extraSpecs ? { extraSpecs } : {}) },
    });
    return { uuid, dom: await dump(uuid) };
  }

  it('cannot change the generated XML or any command line', async () => {
    const ref = await spawnAndDump('benign', 'rel.tiny');
    const refShape = JSON.stringify(shape(ref.dom));
    await t.driver.destroy(ref.uuid);
    const names = [...FIXED, ...GENERATED];
    recordedProcesses(true);
    for (const [i, name] of names.entries()) {
      const { uuid, dom } = await spawnAndDump(name, name.slice(0, 255));
      expect(JSON.stringify(shape(dom)), `the structure changed for name ${JSON.stringify(name)}`).toBe(refShape);
      expect(textOf(dom, ['name'])).toBe(t.driver.domainName(uuid));
      expect(textOf(dom, ['metadata', 'instance', 'name'])).toBe(name);
      expect((await t.driver.get(uuid)).name).toBe(name);
      if (i < 3) {
        const snap = await t.driver.snapshot(uuid, name);
        uploaded.push(snap.imageId);
        expect((await t.glance.getImage(snap.imageId)).name).toBe(name);
      }
      await t.driver.destroy(uuid);
      expect(await leftovers(t, uuid)).toEqual(NOTHING);
    }
    const procs = recordedProcesses(true);
    const fragments = names.flatMap((n) => n.split(/\s+/)).filter((f) => f.length >= 6 && !/^[A-Za-z0-9._-]+$/.test(f));
    for (const p of procs) {
      expect(p.shell, `${p.file} ran through a shell`).toBe(false);
      const line = [p.file, ...p.args].join(' ');
      for (const f of fragments)
        expect(line.includes(f), `argv of ${p.file} carries ${JSON.stringify(f)}: ${line}`).toBe(false);
    }
    await expect(readFile('/tmp/ephemera-pwned')).rejects.toThrow();
    // Control characters and lone surrogates are refused before anything is created.
    for (const bad of ['a\nb', 'tab\there', 'nul\0', 'x'.repeat(256)]) {
      const uuid = newUuid();
      const r = await watching(uuid, () =>
        t.driver.spawn({ instance: { uuid, name: bad }, image: guest, flavor: TINY }),
      );
      expect(isDriverError(r.error, 'INVALID_ARGUMENT'), String(r.error)).toBe(true);
      expect(r.seen).toEqual([]);
    }
    rows.push({
      fault: 'hostile instance/flavor/snapshot names (XML + shell metachars)',
      tries: names.length,
      left: 'nothing',
      note: `${procs.length} commands recorded, none carries them; XML structure unchanged`,
    });
  });

  it('hostile flavor metadata (extra specs, flavor name with a lone surrogate) is refused or inert', async () => {
    const cases: [string, Record<string, string> | undefined, string][] = [
      ['extra spec value with XML', { 'quota:disk_total_iops_sec': "100</total_iops_sec><x a='" }, 'rel.tiny'],
      ['extra spec value with shell', { 'quota:disk_total_bytes_sec': '1; reboot' }, 'rel.tiny'],
      ['extra spec key with XML', { 'quota:disk_<x/>_iops_sec': '5' }, 'rel.tiny'],
      ['flavor name with a lone surrogate', undefined, 'bad\ud800'],
    ];
    const outcomes: string[] = [];
    for (const [what, extraSpecs, flavorName] of cases) {
      const uuid = newUuid();
      const r = await watching(uuid, () =>
        t.driver.spawn({
          instance: { uuid, name: 'hostile-flavor' },
          image: guest,
          flavor: { ...TINY, name: flavorName, ...(extraSpecs ? { extraSpecs } : {}) },
        }),
      );
      if (r.error) {
        expect(isDriverError(r.error), String(r.error)).toBe(true);
        outcomes.push(
          `${what}: refused ${causeCodes(r.error).join(' <- ')}${r.seen.length ? ` (after creating ${r.seen.join(', ')})` : ' before any disk'}`,
        );
      } else {
        const dom = await dump(uuid);
        const xml = JSON.stringify(dom);
        expect(xml).not.toContain('<x');
        outcomes.push(`${what}: accepted, XML inert`);
        await t.driver.destroy(uuid);
      }
      expect(await leftovers(t, uuid)).toEqual(NOTHING);
    }
    console.log(`hostile flavor metadata:\n${outcomes.join('\n')}`);
    rows.push({
      fault: 'hostile flavor metadata (extra specs, lone surrogate)',
      tries: cases.length,
      left: 'nothing',
      note: outcomes.join('; '),
    });
  });
});
