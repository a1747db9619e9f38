// LUKS images through qemu-img: the passphrase only ever in a 0600 secret file that is gone
// after the command, never in argv; the bytes on disk are ciphertext.
import { randomBytes } from 'node:crypto';
import { readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { QemuImg, luksCreateOptions, luksImageOpts, withSecretFile } from '@ephemera/qemu-img-wrapper';
import { tempDir, type TempDir } from './helpers.js';

const MiB = 1024 * 1024;
let dir: TempDir;
const argvs: (readonly string[])[] = [];
const q = new QemuImg({ onExec: (a) => argvs.push(a) });
const pass = Buffer.from(randomBytes(32).toString('base64url'));
const marker = Buffer.from('EPHEMERA-LUKS-PLAINTEXT-MARKER-'.repeat(64));

beforeAll(async () => {
  dir = await tempDir('qiw-luks-');
});
afterAll(async () => {
  await dir?.remove();
});

describe('LUKS through secret files', () => {
  test('create + convert -n into a LUKS target: ciphertext on disk, key never in argv, file removed', async () => {
    const src = join(dir.path, 'plain.raw');
    const buf = Buffer.alloc(4 * MiB);
    marker.copy(buf, MiB);
    await writeFile(src, buf);
    const dst = join(dir.path, 'disk.luks');
    const secrets = join(dir.path, 'secrets');
    let seen: { file: string; mode: number } | undefined;
    await withSecretFile(secrets, pass, async (s) => {
      seen = { file: s.file, mode: (await stat(s.file)).mode & 0o777 };
      await q.create(dst, { format: 'luks', size: 4 * MiB, options: luksCreateOptions(s), secrets: [s] });
      await q.convert(src, dst, {
        sourceFormat: 'raw',
        targetFormat: 'luks',
        untrusted: false,
        noCreate: true,
        targetImageOpts: luksImageOpts(dst, s),
        secrets: [s],
      });
    });
    expect(seen?.mode).toBe(0o600);
    expect(await readdir(secrets)).toEqual([]);
    const raw = await readFile(dst);
    expect(raw.subarray(0, 6).toString('latin1')).toBe('LUKS\xba\xbe');
    expect(raw.includes(marker.subarray(0, 64))).toBe(false);
    for (const a of argvs) expect(a.join(' ')).not.toContain(pass.toString());
    // Decrypted with the key, the marker is there.
    const back = join(dir.path, 'back.raw');
    await withSecretFile(secrets, pass, (s) =>
      q.convert(dst, back, {
        sourceFormat: 'luks',
        targetFormat: 'raw',
        untrusted: false,
        sourceImageOpts: luksImageOpts(dst, s),
        secrets: [s],
      }),
    );
    expect((await readFile(back)).includes(marker.subarray(0, 64))).toBe(true);
  });

  test('an encrypted qcow2 overlay over a plain base keeps the base plain and shared', async () => {
    const base = join(dir.path, 'base.raw');
    await writeFile(base, Buffer.alloc(2 * MiB));
    const overlay = join(dir.path, 'o.qcow2');
    await withSecretFile(join(dir.path, 'secrets'), pass, (s) =>
      q.create(overlay, {
        format: 'qcow2',
        backing: { file: base, format: 'raw' },
        options: luksCreateOptions(s, 'encrypt.'),
        secrets: [s],
      }),
    );
    const info = await q.info(overlay, { format: 'qcow2', untrusted: false });
    expect(info.encrypted).toBe(true);
    expect(info.backingFilename).toBe(base);
  });

  test('refuses secret ids and files that would change the object spelling', async () => {
    await expect(
      q.create(join(dir.path, 'x'), { format: 'raw', size: MiB, secrets: [{ id: 's0,file=/etc/shadow', file: '/x' }] }),
    ).rejects.toMatchObject({ kind: 'invalid-argument' });
    await expect(
      q.create(join(dir.path, 'x'), { format: 'raw', size: MiB, secrets: [{ id: 's0', file: '/a,b' }] }),
    ).rejects.toMatchObject({ kind: 'invalid-argument' });
  });
});

describe('PBKDF benchmark flake', () => {
  test('a LUKS create that QEMU fails with "Unable to get accurate CPU usage" is run again', async () => {
    // A stand-in qemu-img that fails its first run the way QEMU does on a busy host.
    const count = join(dir.path, 'runs');
    const bin = join(dir.path, 'flaky-qemu-img');
    await writeFile(
      bin,
      `#!/bin/sh\nn=$(cat "${count}" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "${count}"\nif [ $n -eq 1 ]; then echo "qemu-img: x: Unable to get accurate CPU usage" >&2; exit 1; fi\nexit 0\n`,
      { mode: 0o755 },
    );
    const flaky = new QemuImg({ binary: bin, dieWithParent: false });
    await withSecretFile(join(dir.path, 'secrets'), pass, (s) =>
      flaky.create(join(dir.path, 'f.luks'), {
        format: 'luks',
        size: MiB,
        options: luksCreateOptions(s),
        secrets: [s],
      }),
    );
    expect((await readFile(count, 'utf8')).trim()).toBe('2');
  });

  /** A stand-in qemu-img whose every run fails with the PBKDF flake; `count` holds its run count. */
  async function alwaysFlaky(name: string): Promise<{ flaky: QemuImg; count: string }> {
    const count = join(dir.path, `${name}-runs`);
    const bin = join(dir.path, `${name}-flaky`);
    await writeFile(
      bin,
      `#!/bin/sh\nn=$(cat "${count}" 2>/dev/null || echo 0); echo $((n+1)) > "${count}"\necho "qemu-img: x: Unable to get accurate CPU usage" >&2; exit 1\n`,
      { mode: 0o755 },
    );
    return { flaky: new QemuImg({ binary: bin, dieWithParent: false }), count };
  }

  test('the PBKDF flake is tried 5 times in all, with pauses, then reported with its stderr', async () => {
    const { flaky, count } = await alwaysFlaky('always');
    const t0 = performance.now();
    await expect(
      withSecretFile(join(dir.path, 'secrets'), pass, (s) =>
        flaky.create(join(dir.path, 'g.luks'), {
          format: 'luks',
          size: MiB,
          options: luksCreateOptions(s),
          secrets: [s],
        }),
      ),
    ).rejects.toMatchObject({ kind: 'exit', stderr: expect.stringContaining('Unable to get accurate CPU usage') });
    expect((await readFile(count, 'utf8')).trim()).toBe('5');
    // 100 + 200 + 400 + 800 ms between the runs: a busy spell has time to pass.
    expect(performance.now() - t0).toBeGreaterThanOrEqual(1400);
  });

  test('an abort during a pause between tries ends it at once, as an aborted error, with no further run', async () => {
    const { flaky, count } = await alwaysFlaky('abort');
    const ac = new AbortController();
    const created = withSecretFile(join(dir.path, 'secrets'), pass, (s) =>
      flaky.create(join(dir.path, 'h.luks'), {
        format: 'luks',
        size: MiB,
        options: luksCreateOptions(s),
        secrets: [s],
        signal: ac.signal,
      }),
    );
    created.catch(() => undefined);
    // Abort once the fourth run failed: inside the last pause, 800 ms long.
    for (let i = 0; i < 1000 && (await readFile(count, 'utf8').catch(() => '')).trim() !== '4'; i++)
      await new Promise((r) => setTimeout(r, 5));
    const t0 = performance.now();
    ac.abort();
    await expect(created).rejects.toMatchObject({ kind: 'aborted' });
    // Well before the pause would have ended: the abort cut it short, and no fifth run started.
    expect(performance.now() - t0).toBeLessThan(600);
    expect((await readFile(count, 'utf8')).trim()).toBe('4');
  });

  test('a LUKS convert run again first removes the target the failed run created (as librbd, the stand-in refuses an existing one)', async () => {
    const count = join(dir.path, 'convert-runs');
    const bin = join(dir.path, 'flaky-convert');
    // Run 1 creates its target (the last argument), then fails like QEMU's PBKDF2 benchmark;
    // a later run fails when the target is already there ("File exists").
    await writeFile(
      bin,
      `#!/bin/sh\nfor a; do t=$a; done\nn=$(cat "${count}" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "${count}"\n` +
        `if [ $n -eq 1 ]; then : > "$t"; echo "qemu-img: x: Unable to get accurate CPU usage" >&2; exit 1; fi\n` +
        `if [ -e "$t" ]; then echo "qemu-img: $t: error rbd create: File exists" >&2; exit 1; fi\n: > "$t"\nexit 0\n`,
      { mode: 0o755 },
    );
    const src = join(dir.path, 'plain.raw');
    await writeFile(src, Buffer.alloc(4096));
    const target = join(dir.path, 'converted.luks');
    const flaky = new QemuImg({ binary: bin, dieWithParent: false });
    await withSecretFile(join(dir.path, 'secrets'), pass, (s) =>
      flaky.convert(src, target, {
        untrusted: false,
        sourceFormat: 'raw',
        targetFormat: 'luks',
        targetOptions: luksCreateOptions(s),
        secrets: [s],
      }),
    );
    expect((await readFile(count, 'utf8')).trim()).toBe('2');
  });
});
