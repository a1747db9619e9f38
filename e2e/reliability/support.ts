/**
 * Helpers of the reliability tests (issue 11): a PRIVATE dev stack in a temp dir (so services can
 * be stopped without disturbing the shared stack other tests use), a driver on any stack, guest
 * images in a stack's Glance, and leftover checks against the real components (RBD pools,
 * libvirt domains and secrets, instance files, the journal).
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  createDriver,
  fromStack,
  loadConfig,
  type ConfigInput,
  type Driver,
  type DriverConfig,
} from '@ephemera/driver';
import { GlanceClient } from '@ephemera/glance';
import { guestImage, loadStack, stackCommand, until, type StackInfo } from '@ephemera/testkit';
import { newUuid, rbdLs, virshDomains, virshSecrets } from '../support.js';

/** A small flavor for the test guest (root disk = the image's size). */
export const TINY = { name: 'rel.tiny', vcpus: 1, memoryMiB: 64, rootGiB: 0 } as const;

/** A private stack (its own mon, mgr, OSD, Glance, libvirtd) in a temp dir. */
export interface PrivateStack {
  dir: string;
  info: StackInfo;
  /** `tools/stack <args>` on this stack (e.g. `['stop', 'osd']`). */
  run(args: string[]): Promise<string>;
  /** `tools/stack down` and removes the directory (never throws). */
  down(): Promise<void>;
}

/** Brings up a private stack (short path: libvirt's socket path must stay under 108 bytes). */
export async function privateStack(): Promise<PrivateStack> {
  const dir = mkdtempSync('/tmp/eph-rel-');
  const run = (args: string[]) => stackCommand(args, { dir, timeoutMs: 300_000 });
  const down = async (): Promise<void> => {
    if (existsSync(dir))
      await run(['down']).catch((e) => console.error(`private stack down failed: ${(e as Error).message}`));
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await run(['up']);
    return { dir, info: loadStack(dir), run, down };
  } catch (e) {
    await down();
    throw e;
  }
}

/** A driver with its own state dir on `stack` (TCG domains: no KVM start cost). */
export interface TestDriver {
  driver: Driver;
  config: DriverConfig;
  stack: StackInfo;
  stateDir: string;
  glance: GlanceClient;
  /** Closes the driver and removes its state dir (unless `keepState`). */
  close(opts?: { keepState?: boolean }): Promise<void>;
}

/**
 * A driver configuration on `stack` with `overrides`. `directSnapshot: false` leaves out the
 * direct-snapshot user, so snapshots are uploaded (qemu-img convert + Glance upload).
 */
export function driverConfig(
  stack: StackInfo,
  stateDir: string,
  overrides: ConfigInput = {},
  opts: { directSnapshot?: boolean } = {},
): DriverConfig {
  const o = overrides as { libvirt?: object; log?: object };
  const base = fromStack(stack) as { images: { rbd: Record<string, unknown> } };
  if (opts.directSnapshot === false)
    for (const k of ['snapshotUser', 'snapshotCephConf', 'snapshotKeyring']) delete base.images.rbd[k];
  const merge = (a: Record<string, unknown>, b: Record<string, unknown>): Record<string, unknown> => {
    const out: Record<string, unknown> = { ...a };
    for (const [k, v] of Object.entries(b)) {
      out[k] =
        v && typeof v === 'object' && !Array.isArray(v) && out[k] && typeof out[k] === 'object'
          ? merge(out[k] as Record<string, unknown>, v as Record<string, unknown>)
          : v;
    }
    return out;
  };
  return loadConfig({
    env: {},
    overrides: merge(base as Record<string, unknown>, {
      stateDir,
      ...overrides,
      libvirt: { virtType: 'qemu', ...(o.libvirt ?? {}) },
      log: { level: process.env.EPHEMERA_E2E_LOG ?? 'warn', ...(o.log ?? {}) },
    }),
  }).config;
}

export async function testDriver(
  stack: StackInfo,
  overrides: ConfigInput = {},
  opts: { reconcile?: boolean; directSnapshot?: boolean; stateDir?: string } = {},
): Promise<TestDriver> {
  const stateDir = opts.stateDir ?? (await mkdtemp(join(tmpdir(), 'ephemera-rel-')));
  const config = driverConfig(
    stack,
    stateDir,
    overrides,
    opts.directSnapshot === undefined ? {} : { directSnapshot: opts.directSnapshot },
  );
  const driver = await createDriver({ config, reconcile: opts.reconcile ?? true });
  const glance = new GlanceClient({ url: stack.glance.url });
  return {
    driver,
    config,
    stack,
    stateDir,
    glance,
    async close(opts: { keepState?: boolean } = {}) {
      await driver.close();
      if (!opts.keepState) await rm(stateDir, { recursive: true, force: true });
    },
  };
}

/** Uploads a file (or bytes) to `glance` as a new image; resolves to its id once active. */
export async function uploadImage(
  glance: GlanceClient,
  name: string,
  data: Uint8Array,
  format: string,
): Promise<string> {
  const img = await glance.createImage({ name, disk_format: format, container_format: 'bare' });
  await glance.upload(img.id, data);
  await glance.waitForStatus(img.id, ['active'], { timeoutMs: 120_000 });
  return img.id;
}

/** Uploads the bootable guest image (marker `marker`); resolves to the image id. */
export async function uploadGuest(
  glance: GlanceClient,
  marker: string,
  opts: { format?: 'raw' | 'qcow2'; size?: number; fill?: 'zero' | 'random' } = {},
): Promise<string> {
  const format = opts.format ?? 'raw';
  const path = await guestImage({
    marker,
    format,
    ...(opts.size ? { size: opts.size } : {}),
    ...(opts.fill ? { fill: opts.fill } : {}),
  });
  return uploadImage(glance, `rel-${marker}`, await readFile(path), format);
}

/** Deletes a Glance image, ignoring a missing one. */
export async function deleteImage(glance: GlanceClient | undefined, id: string | undefined): Promise<void> {
  if (!glance || !id) return;
  await glance.deleteImage(id).catch(() => undefined);
}

// The same helpers as the other e2e files use.
export { newUuid, rbdLs, virshDomains, virshSecrets };

/** What an instance left behind on the real components (all empty = nothing). */
export interface Leftovers {
  rbd: string[];
  domains: string[];
  files: string[];
  journal: string[];
}

/** Everything of `uuid` that still exists: RBD images in `vms`, domains, instance files, journal entries. */
export async function leftovers(t: TestDriver, uuid: string): Promise<Leftovers> {
  const u = uuid.toLowerCase();
  return {
    rbd: (await rbdLs(t.stack, t.stack.ceph.pools.vms)).filter((n) => n.startsWith(u)),
    domains: (await virshDomains(t.stack)).filter((d) => d.includes(u)),
    files: (await readdir(t.config.instancesPath).catch(() => [] as string[])).filter((n) => n.startsWith(u)),
    journal: (await t.driver.journal.entries())
      .filter((e) => e.instance === u)
      .map((e) => `${e.op}:${e.end ?? 'open'}`),
  };
}

/** No leftovers at all. */
export const NOTHING: Leftovers = { rbd: [], domains: [], files: [], journal: [] };

/** Summarises leftovers for the report ("nothing" or the list). */
export function describeLeftovers(l: Leftovers): string {
  const parts = Object.entries(l)
    .filter(([, v]) => (v as string[]).length)
    .map(([k, v]) => `${k}: ${(v as string[]).join(',')}`);
  return parts.length ? parts.join('; ') : 'nothing';
}

/** Measures how long a promise takes to settle; resolves with the value or the error. */
export async function timed<T>(p: Promise<T>): Promise<{ ms: number; value?: T; error?: unknown }> {
  const t0 = performance.now();
  try {
    const value = await p;
    return { ms: performance.now() - t0, value };
  } catch (error) {
    return { ms: performance.now() - t0, error };
  }
}

/** Polls `fn` every `everyMs` until it returns true; rejects after `timeoutMs` (testkit's `until`, finer and longer by default). */
export async function waitUntil(
  what: string,
  fn: () => boolean | Promise<boolean>,
  timeoutMs = 60_000,
  everyMs = 20,
): Promise<void> {
  return until(what, fn, timeoutMs, everyMs);
}

/** One row of the closing report (printed by each file's afterAll). */
export interface ReportRow {
  fault: string;
  tries: number;
  left: string;
  note?: string;
}

/** Prints the rows as a Markdown table (the closing note collects them). */
export function printReport(title: string, rows: ReportRow[]): void {
  const lines = [`\n### ${title}`, '| fault / input | tries | left behind | note |', '| --- | --- | --- | --- |'];
  for (const r of rows) lines.push(`| ${r.fault} | ${r.tries} | ${r.left} | ${r.note ?? ''} |`);
  console.log(lines.join('\n'));
}
