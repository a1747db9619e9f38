// scripts/install.cjs, the addon packages' `install` script (issue 20, item 3): a prebuilt binary
// that loads means no compile; without one it compiles, and a failed compile leaves the install
// going with advice instead of aborting it. `node-gyp` is a stand-in on PATH that records its
// calls (npm puts its own node-gyp on the PATH of lifecycle scripts the same way).
import { execFileSync, spawnSync } from 'node:child_process';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const packages = fileURLToPath(new URL('../../../', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'addon-install-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const ADDONS = [
  { name: 'ceph-rbd-napi', file: 'ceph_rbd_napi.node', deps: 'librbd-dev librados-dev' },
  { name: 'libvirt-napi', file: 'ephemera_libvirt.node', deps: 'libvirt-dev pkg-config' },
];

/** An installed copy of the package (what the tarball unpacks to) and a failing stand-in node-gyp. */
function installed(name: string, file: string, withPrebuilt: boolean, label = '') {
  const root = join(dir, `${name}-${withPrebuilt}${label}`);
  const src = join(packages, name);
  mkdirSync(join(root, 'scripts'), { recursive: true });
  for (const f of ['package.json', 'binding.gyp', 'scripts/install.cjs']) copyFileSync(join(src, f), join(root, f));
  if (withPrebuilt) {
    mkdirSync(join(root, 'prebuilds', 'linux-x64'), { recursive: true });
    copyFileSync(join(src, 'build', 'Release', file), join(root, 'prebuilds', 'linux-x64', file));
  }
  const bin = join(root, 'fake-bin');
  mkdirSync(bin);
  const calls = join(root, 'node-gyp.calls');
  writeFileSync(join(bin, 'node-gyp'), `#!/bin/sh\necho "$@" >> '${calls}'\necho 'gyp: no headers here' >&2\nexit 1\n`);
  chmodSync(join(bin, 'node-gyp'), 0o755);
  const run = (env: Record<string, string> = {}) =>
    spawnSync(process.execPath, [join(root, 'scripts', 'install.cjs')], {
      cwd: root,
      encoding: 'utf8',
      timeout: 30_000,
      env: { ...process.env, PATH: `${bin}:${process.env.PATH}`, ...env },
    });
  return { root, calls, run };
}

describe.each(ADDONS)('$name install script', ({ name, file, deps }) => {
  it('uses the prebuilt binary and compiles nothing', () => {
    const pkg = installed(name, file, true);
    const r = pkg.run();
    expect(r.status).toBe(0);
    expect(r.stderr).toContain(`using the prebuilt Node-API binary prebuilds/linux-x64/${file}`);
    expect(existsSync(pkg.calls)).toBe(false);
  });

  it('npm_config_build_from_source=true compiles even with a prebuilt binary', () => {
    const pkg = installed(name, file, true, '-from-source');
    const r = pkg.run({ npm_config_build_from_source: 'true' });
    expect(r.status).toBe(0);
    expect(readFileSync(pkg.calls, 'utf8').trim()).toBe('rebuild');
  });

  it('without a prebuilt binary a failed compile does not abort the install and says what to install', () => {
    const pkg = installed(name, file, false);
    const r = pkg.run();
    expect(readFileSync(pkg.calls, 'utf8').trim()).toBe('rebuild');
    expect(r.status).toBe(0);
    expect(r.stderr).toContain('gyp: no headers here');
    expect(r.stderr).toContain(`${deps} g++ make python3`);
    expect(r.stderr).toContain(`npm rebuild @ephemera/${name}`);
  });
});

it('both addon packages ship the same install script', () => {
  const [a, b] = ADDONS.map((x) => readFileSync(join(packages, x.name, 'scripts', 'install.cjs'), 'utf8'));
  expect(a).toBe(b);
  expect(
    execFileSync(process.execPath, ['--check', join(packages, 'ceph-rbd-napi', 'scripts', 'install.cjs')]).length,
  ).toBe(0);
});
