// Boots the test guest image under qemu-system-x86_64 directly (no libvirt, no stack): TCG always,
// KVM too when /dev/kvm is usable; i440fx (`pc`) and `q35`. Checks the marker, the boot counter
// written to the guest's own disk, and a clean ACPI power-off (QEMU exits 0 without -no-reboot,
// after exactly one boot: a reset would boot again and never exit).
import { execFile, spawn } from 'node:child_process';
import {
  constants,
  accessSync,
  copyFileSync,
  mkdtempSync,
  openSync,
  closeSync,
  readFileSync,
  rmSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BOOT_COUNTER_OFFSET,
  MARKER_OFFSET,
  guestImage,
  markerSector,
  readBootCount,
  readMarker,
  sawPoweroff,
  waitForMarker,
  waitForSerial,
} from '@ephemera/testkit';

const tmp = mkdtempSync(join(tmpdir(), 'guest-boot-'));
const MARKER = 'EPHEMERA-GUEST boot-test';
let base = '';
let seq = 0;

function kvmUsable(): boolean {
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
    closeSync(openSync('/dev/kvm', 'r+'));
    return true;
  } catch {
    return false;
  }
}
const accels = kvmUsable() ? (['tcg', 'kvm'] as const) : (['tcg'] as const);
const timings: string[] = [];

/** A private copy of the image (the guest writes its boot counter to its disk). */
function copyOf(src: string): string {
  const dst = join(tmp, `disk-${++seq}.raw`);
  copyFileSync(src, dst);
  return dst;
}

interface Boot {
  code: number | null;
  ms: number;
  log: string;
  logPath: string;
}

function boot(disk: string, accel: string, machine: string, extra: string[] = [], timeoutMs = 60_000): Promise<Boot> {
  const logPath = join(tmp, `serial-${++seq}.log`);
  const args = [
    '-machine',
    `${machine},accel=${accel}`,
    '-m',
    '64',
    '-nographic',
    '-nodefaults',
    '-no-user-config',
    '-serial',
    `file:${logPath}`,
    '-monitor',
    'none',
    '-net',
    'none',
    '-drive',
    `file=${disk},format=raw,if=ide,index=0,media=disk`,
    ...extra,
  ];
  const started = performance.now();
  return new Promise((resolve, reject) => {
    execFile('qemu-system-x86_64', args, { timeout: timeoutMs }, (err, _stdout, stderr) => {
      const ms = performance.now() - started;
      let log = '';
      try {
        log = readFileSync(logPath, 'latin1');
      } catch {
        /* no log */
      }
      if (err && (err as { killed?: boolean }).killed) {
        reject(
          new Error(
            `qemu (${accel}, ${machine}) did not exit within ${timeoutMs} ms; serial: ${JSON.stringify(log.slice(-300))}`,
          ),
        );
        return;
      }
      if (err && typeof err.code !== 'number') {
        reject(new Error(`qemu failed to run: ${String(stderr) || err.message}`));
        return;
      }
      resolve({ code: err ? (err.code as number) : 0, ms, log, logPath });
    });
  });
}

beforeAll(async () => {
  base = await guestImage({ marker: MARKER });
});

afterAll(() => {
  rmSync(tmp, { recursive: true, force: true });
  console.log(`guest boot timings (direct qemu, process start to exit):\n  ${timings.join('\n  ')}`);
});

describe('guest image boots under QEMU from its own disk (SeaBIOS)', () => {
  for (const accel of accels) {
    for (const machine of ['pc', 'q35']) {
      it(`${accel} / ${machine}: prints its marker, counts the boot on its disk and powers off`, async () => {
        const disk = copyOf(base);
        const r = await boot(disk, accel, machine);
        timings.push(`${accel.padEnd(3)} ${machine.padEnd(3)} ${(r.ms / 1000).toFixed(2)} s`);
        expect(r.code).toBe(0);
        expect(readMarker(r.log)).toBe(MARKER);
        expect(readBootCount(r.log)).toBe(1);
        expect(sawPoweroff(r.log)).toBe(true);
        expect(r.log).not.toMatch(/EPHEMERA-ERROR/);
        // exactly one boot: no reset happened (QEMU ran without -no-reboot)
        expect(r.log.match(/EPHEMERA-BOOT\r\n/g)).toHaveLength(1);
        // the counter was written to the disk itself
        expect(readFileSync(disk).readUInt16LE(BOOT_COUNTER_OFFSET)).toBe(1);
      });
    }
  }

  it('prints the new marker after sector 1 of a copy is overwritten, and the original is unchanged', async () => {
    const disk = copyOf(base);
    const fd = openSync(disk, 'r+');
    try {
      writeSync(fd, markerSector('EPHEMERA-GUEST rewritten copy'), 0, 512, MARKER_OFFSET);
    } finally {
      closeSync(fd);
    }
    const r = await boot(disk, 'tcg', 'pc', ['-no-reboot']);
    expect(r.code).toBe(0);
    expect(readMarker(r.log)).toBe('EPHEMERA-GUEST rewritten copy');
    const original = await boot(copyOf(base), 'tcg', 'pc', ['-no-reboot']);
    expect(readMarker(original.log)).toBe(MARKER);
  });

  it('counts boots across reboots of the same disk', async () => {
    const disk = copyOf(base);
    for (let n = 1; n <= 3; n++) {
      const r = await boot(disk, 'tcg', 'pc', ['-no-reboot']);
      expect(r.code, `boot ${n}: qemu exit code; serial log: ${JSON.stringify(r.log)}`).toBe(0);
      expect(readBootCount(r.log), `boot ${n}: serial log: ${JSON.stringify(r.log)}`).toBe(n);
    }
    expect(readFileSync(disk).readUInt16LE(BOOT_COUNTER_OFFSET)).toBe(3);
  });

  it('boots a qcow2 build and a 256 MiB random-filled build', async () => {
    const qcow2 = copyOf(await guestImage({ marker: MARKER, format: 'qcow2' }));
    const logPath = join(tmp, 'qcow2.log');
    const r1 = await new Promise<number>((resolve, reject) => {
      execFile(
        'qemu-system-x86_64',
        [
          '-machine',
          'pc,accel=tcg',
          '-m',
          '64',
          '-nographic',
          '-nodefaults',
          '-serial',
          `file:${logPath}`,
          '-monitor',
          'none',
          '-drive',
          `file=${qcow2},format=qcow2,if=ide`,
        ],
        { timeout: 60_000 },
        (err) => (err && typeof err.code !== 'number' ? reject(err) : resolve(err ? Number(err.code) : 0)),
      );
    });
    expect(r1).toBe(0);
    expect(await waitForMarker(logPath, 1000)).toBe(MARKER);
    const big = await guestImage({ marker: MARKER, size: 256 * 1024 * 1024, fill: 'random' });
    // boot through a throwaway overlay: the cached file must stay pristine
    const r2 = await boot(big, 'tcg', 'pc', ['-snapshot']);
    expect(r2.code).toBe(0);
    expect(readMarker(r2.log)).toBe(MARKER);
    expect(readFileSync(big).subarray(0, 4096).readUInt16LE(BOOT_COUNTER_OFFSET)).toBe(0);
  });

  it('reports EPHEMERA-ERROR no-acpi instead of hanging when the machine has no ACPI', async () => {
    const logPath = join(tmp, 'no-acpi.log');
    const qemu = spawn(
      'qemu-system-x86_64',
      [
        '-machine',
        'pc,accel=tcg,acpi=off',
        '-m',
        '64',
        '-nographic',
        '-nodefaults',
        '-serial',
        `file:${logPath}`,
        '-monitor',
        'none',
        '-drive',
        `file=${copyOf(base)},format=raw,if=ide`,
      ],
      { stdio: 'ignore' },
    );
    try {
      await expect(
        waitForSerial(logPath, (t) => (sawPoweroff(t) ? true : undefined), 30_000, 'power-off'),
      ).rejects.toThrow(/the guest reported "EPHEMERA-ERROR no-acpi"/);
      expect(readMarker(readFileSync(logPath, 'latin1'))).toBe(MARKER);
    } finally {
      qemu.kill('SIGKILL');
      await new Promise((r) => (qemu.exitCode !== null || qemu.signalCode !== null ? r(null) : qemu.once('exit', r)));
    }
  });

  it('waitForMarker fails with the log tail when the marker never comes', async () => {
    const path = join(tmp, 'never.log');
    await expect(waitForMarker(path, 300)).rejects.toThrow(/timed out after 300 ms/);
  });
});
