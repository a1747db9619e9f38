// `tools/release version` is `changeset version`: the release plan it applies, computed by
// changesets' own planner from .changeset/*.md and the package.json files (no git needed).
// The backends are optional peer dependencies of the driver (issue 20, item 4); changesets bumps
// the dependents of a peer dependency by a major by default, which would make every backend fix a
// new major driver. The config only updates peer dependents whose range no longer matches.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';

interface ReleasePlan {
  changesets: { releases: { name: string; type: string }[] }[];
  releases: { name: string; type: string; newVersion: string }[];
}

const repo = fileURLToPath(new URL('../../../../', import.meta.url));
// The planner's parts are dependencies of @changesets/cli (resolved from there, wherever npm put
// them; ESM only since changesets 3, which dropped @changesets/get-release-plan).
const cliRequire = createRequire(createRequire(`${repo}package.json`).resolve('@changesets/cli/package.json'));
const fromCli = (id: string) => import(pathToFileURL(cliRequire.resolve(id)).href);

/** What `changeset version` applies: the same steps as `changeset status`, without git. */
async function getReleasePlan(cwd: string): Promise<ReleasePlan> {
  const { getPackages } = await fromCli('@manypkg/get-packages');
  const { readConfig } = await fromCli('@changesets/config');
  const { readPreState } = await fromCli('@changesets/pre');
  const { readChangesets } = await fromCli('@changesets/read');
  const { assembleReleasePlan } = await fromCli('@changesets/assemble-release-plan');
  const packages = await getPackages(cwd);
  const { config, errors } = await readConfig(packages.rootDir, packages);
  if (errors != null) throw new Error(`.changeset/config.json: ${errors.join('; ')}`);
  const changesets = await readChangesets(packages.rootDir);
  return assembleReleasePlan(changesets, packages, config, await readPreState(packages.rootDir));
}
const RANK: Record<string, number> = { none: 0, patch: 1, minor: 2, major: 3 };

describe('versioning with changesets', () => {
  it("a backend's release does not force a major release of the driver (optional peers)", async () => {
    const plan = await getReleasePlan(repo);
    const asked = plan.changesets
      .flatMap((c) => c.releases)
      .filter((r) => r.name === '@ephemera/driver')
      .reduce((m, r) => Math.max(m, RANK[r.type] ?? 0), RANK.patch);
    const driver = plan.releases.find((r) => r.name === '@ephemera/driver');
    expect(RANK[driver?.type ?? 'none']).toBeLessThanOrEqual(asked);
  });

  it("the backends' planned versions satisfy the driver's peer ranges", async () => {
    const semver = cliRequire('semver') as { satisfies(v: string, range: string): boolean };
    const plan = await getReleasePlan(repo);
    const peers = JSON.parse(readFileSync(`${repo}packages/driver/package.json`, 'utf8')).peerDependencies;
    const planned = plan.releases.filter((r) => r.name in peers);
    for (const r of planned)
      expect(semver.satisfies(r.newVersion, peers[r.name]), `${r.name}@${r.newVersion}`).toBe(true);
    expect(Object.keys(peers).sort()).toEqual([
      '@ephemera/backend-lvm',
      '@ephemera/backend-qcow2',
      '@ephemera/backend-rbd',
    ]);
  });
});
