// Issue 20, item 6: Node 22 is the floor. The suite runs on Node 22 (and on 24 in the second leg),
// both fetched from npm by `tools/node` (tools/lib/node-npm.mjs); the system Node only starts the
// scripts. The packages' `engines` say so, and tools/lib/deps-fresh.mjs rebuilds an addon that
// was built against another Node's headers than the one running.
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const repo = fileURLToPath(new URL('../../../../', import.meta.url));
const work = mkdtempSync(join(tmpdir(), 'ephemera-node-floor-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<Run> {
  return new Promise((res) => {
    execFile(
      cmd,
      args,
      { cwd: opts.cwd ?? repo, env: opts.env ?? process.env, timeout: 600_000, maxBuffer: 16 << 20 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
        res({ code, stdout: String(stdout), stderr: String(stderr) });
      },
    );
  });
}

const json = (file: string) => JSON.parse(readFileSync(join(repo, file), 'utf8'));
const [major, minor] = process.versions.node.split('.').map(Number);

describe('Node 22 floor', () => {
  it('the suite runs on Node 22.12 or later (tools/node, not the system Node 20)', () => {
    expect(major * 1000 + minor, `running on ${process.version}`).toBeGreaterThanOrEqual(22_012);
  });

  it('the root and every published package require Node >=22.12; @types/node is 22', () => {
    const engines: Record<string, string> = { root: json('package.json').engines?.node };
    for (const d of readdirSync(join(repo, 'packages'))) {
      const pkg = json(`packages/${d}/package.json`);
      if (!pkg.private) engines[pkg.name] = pkg.engines?.node;
    }
    expect(Object.keys(engines).length).toBeGreaterThan(10);
    for (const [name, range] of Object.entries(engines)) {
      expect(range, name).toMatch(/^(>=22\.12|\^22\.(1[2-9]|2\d)\.\d+ \|\| >=24\.\d+)/);
    }
    expect(json('package.json').devDependencies['@types/node']).toMatch(/^\^22\./);
  });

  it('tools/node 22 exec runs the pinned Node 22 with node-gyp pointed at its headers', async () => {
    const r = await run('bash', [
      join(repo, 'tools/node'),
      '22',
      'exec',
      'node',
      '-p',
      '`${process.version} ${process.execPath} ${process.env.npm_config_nodedir}`',
    ]);
    expect(r.code, r.stderr).toBe(0);
    const [version, execPath, nodedir] = r.stdout.trim().split(' ');
    expect(version).toMatch(/^v22\.\d+\.\d+$/);
    expect(execPath).toBe(join(repo, '.cache/node', version.slice(1), 'bin/node'));
    expect(nodedir).toBe(join(repo, '.cache/node', version.slice(1)));
    expect(existsSync(join(nodedir, 'include/node/node_api.h'))).toBe(true);
  });

  it('tools/node refuses a major it has no pinned Node for, with the supported ones, and fetches nothing', async () => {
    const before = readdirSync(join(repo, '.cache/node')).sort();
    const r = await run('bash', [join(repo, 'tools/node'), '21', 'exec', 'node', '-v']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('no Node 21 here: supported majors are 22, 24');
    expect(r.stdout).toBe('');
    expect(readdirSync(join(repo, '.cache/node')).sort()).toEqual(before);
  });

  it('deps-fresh lists an addon built against other Node headers than npm_config_nodedir for rebuild', async () => {
    const dir = join(work, 'checkout');
    const addon = join(dir, 'packages/fake-napi');
    mkdirSync(join(addon, 'build/Release'), { recursive: true });
    mkdirSync(join(dir, 'node_modules'));
    writeFileSync(join(dir, 'package-lock.json'), '{}');
    writeFileSync(join(addon, 'package.json'), JSON.stringify({ name: '@ephemera/fake-napi' }));
    writeFileSync(join(addon, 'binding.gyp'), '{}');
    writeFileSync(join(addon, 'build/Release/fake.node'), '');
    writeFileSync(join(addon, 'build/config.gypi'), '{ "variables": { "nodedir": "/usr" } }\n');
    const script = join(repo, 'tools/lib/deps-fresh.mjs');
    expect((await run(process.execPath, [script, '--record'], { cwd: dir })).code).toBe(0);
    const env = (nodedir: string) => ({ ...process.env, npm_config_nodedir: nodedir });
    const same = await run(process.execPath, [script], { cwd: dir, env: env('/usr') });
    expect(same).toMatchObject({ code: 0, stdout: '' });
    const other = await run(process.execPath, [script], { cwd: dir, env: env('/opt/node22') });
    expect(other).toMatchObject({ code: 2, stdout: '@ephemera/fake-napi\n' });
  });
});
