// The counting guest (`tools/guest-image --mode count`, issue 19 item 1) under the dev stack's
// libvirtd: after its boot lines it prints `EPHEMERA-COUNT <n>` from 0, one more every ~100 ms
// (PIT-timed), and never powers off. Run as a `qemu` (TCG) domain and, when the stack has KVM, as
// a `kvm` one. The domain is destroyed and undefined afterwards.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  guestImage,
  loadStack,
  readBootCount,
  readCounts,
  readMarker,
  sawPoweroff,
  waitForSerial,
  type StackInfo,
} from '@ephemera/testkit';

const tmp = mkdtempSync(join(tmpdir(), 'guest-count-'));
const tag = randomBytes(3).toString('hex');
const MARKER = 'EPHEMERA-GUEST count-test';
let stack: StackInfo;
const domains: string[] = [];
const timings: string[] = [];

function virsh(...args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('virsh', ['-q', '-c', stack.libvirt.uri, ...args], { timeout: 60_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`virsh ${args.join(' ')}: ${String(stderr).trim() || err.message}`));
      else resolve(String(stdout));
    });
  });
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

beforeAll(() => {
  stack = loadStack();
});

afterAll(async () => {
  for (const name of domains) {
    await virsh('destroy', name).catch(() => undefined);
    await virsh('undefine', name).catch(() => undefined);
  }
  rmSync(tmp, { recursive: true, force: true });
  console.log(`counting guest (first-seen interval of the counter lines, host side):\n  ${timings.join('\n  ')}`);
});

describe('counting guest under libvirt', () => {
  const types = () => [...new Set(['qemu', stack.libvirt.domainType])];

  it('counts from 0 by 1 about every 100 ms and keeps running until destroyed', async () => {
    for (const type of types()) {
      const name = `guest-count-${type}-${tag}`;
      const disk = await guestImage({ marker: MARKER, mode: 'count', out: join(tmp, `${name}.raw`) });
      const serial = join(tmp, `${name}.log`);
      const xml = join(tmp, `${name}.xml`);
      writeFileSync(
        xml,
        `<domain type='${type}'>
  <name>${name}</name>
  <memory unit='MiB'>32</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <features><acpi/></features>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='${disk}'/><target dev='vda' bus='virtio'/></disk>
    <serial type='file'><source path='${serial}' append='on'/><target port='0'/></serial>
    <video><model type='none'/></video><memballoon model='none'/>
  </devices>
</domain>`,
      );
      await virsh('define', xml);
      domains.push(name);
      await virsh('start', name);
      await waitForSerial(serial, (t) => (readCounts(t).length ? true : undefined), 120_000, 'the first counter line');

      // When each counter value first shows up in the log (polled every 10 ms), for ~5 s.
      const seen = new Map<number, number>();
      const t0 = performance.now();
      let text = '';
      while (performance.now() - t0 < 5_000 || seen.size < 30) {
        text = readFileSync(serial, 'latin1');
        const now = performance.now();
        for (const n of readCounts(text)) if (!seen.has(n)) seen.set(n, now);
        if (performance.now() - t0 > 60_000) break;
        await new Promise((r) => setTimeout(r, 10));
      }
      expect((await virsh('domstate', name)).trim()).toBe('running');

      const counts = readCounts(readFileSync(serial, 'latin1'));
      expect(counts.length).toBeGreaterThanOrEqual(30);
      expect(counts).toEqual(counts.map((_, i) => i)); // 0, 1, 2, ...: one guest, never restarted
      expect(readMarker(text)).toBe(MARKER);
      expect(readBootCount(text)).toBe(1);
      expect(sawPoweroff(text)).toBe(false);

      // Intervals between first sightings, leaving out the values already there at the first read.
      const first = Math.min(...seen.keys()) + 1;
      const times = [...seen.entries()]
        .filter(([n]) => n >= first)
        .sort(([a], [b]) => a - b)
        .map(([, t]) => t);
      const gaps = times.slice(1).map((t, i) => t - times[i]);
      const mean = (times[times.length - 1] - times[0]) / (times.length - 1);
      timings.push(
        `${type.padEnd(4)} ${gaps.length} intervals: mean ${mean.toFixed(1)} ms, median ${median(gaps).toFixed(1)} ms, max ${Math.max(...gaps).toFixed(0)} ms`,
      );
      // The guest's clock is the PIT (virtual time); what the host sees jitters with its load.
      expect(mean).toBeGreaterThan(70);
      expect(mean).toBeLessThan(150);
      expect(median(gaps)).toBeGreaterThan(40);
      expect(median(gaps)).toBeLessThan(200);

      await virsh('destroy', name);
      expect((await virsh('domstate', name)).trim()).toBe('shut off');
      await virsh('undefine', name);
      domains.splice(domains.indexOf(name), 1);
    }
  });
});
