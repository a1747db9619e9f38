import { readdirSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { configDefaults, defineConfig } from 'vitest/config';

const root = dirname(fileURLToPath(import.meta.url));

// The second e2e lane: long files that use only host 1 of the shared stack (or a private stack)
// and disturb no shared service. `npm test` runs them in their own vitest process beside the
// 'e2e' project (see tools/test), so the suite's wall time is not the sum of every e2e file.
const e2eLaneB = [
  'e2e/reliability/sigkill.test.ts',
  'e2e/reliability/storage-faults.test.ts',
  'e2e/reliability/hostile.test.ts',
];

// Tests import workspace packages from their TypeScript sources, so a unit test never needs a
// prior build. (Native addons still need their node-gyp build, done by `npm ci`.)
const alias: Record<string, string> = {
  '@ephemera/testkit': join(root, 'tools/testkit/src/index.ts'),
};
for (const name of readdirSync(join(root, 'packages'))) {
  const entry = join(root, 'packages', name, 'src/index.ts');
  if (existsSync(entry)) alias[`@ephemera/${name}`] = entry;
}

export default defineConfig({
  resolve: { alias },
  test: {
    reporters: process.env.VITEST_JSON_REPORT
      ? [
          'default',
          ['json', { outputFile: process.env.VITEST_JSON_REPORT }],
          // What went wrong, in plain text, printed by the summary at the end of `npm test`.
          [
            join(root, 'tools/lib/vitest-digest-reporter.mjs'),
            { outputFile: `${process.env.VITEST_JSON_REPORT}.digest.txt` },
          ],
        ]
      : ['default'],
    projects: [
      {
        extends: true,
        test: {
          name: 'unit',
          // Projects run in this order: unit, then integration, then e2e.
          sequence: { groupOrder: 0 },
          include: [
            'packages/*/test/unit/**/*.test.ts',
            'tools/*/test/unit/**/*.test.ts',
            'examples/*/test/**/*.test.ts',
          ],
          testTimeout: 30_000,
        },
      },
      {
        // Needs the real dev stack (Ceph, Glance, libvirtd): the global setup brings it up
        // (or reuses the running one) and never skips.
        extends: true,
        test: {
          name: 'integration',
          sequence: { groupOrder: 1 },
          include: ['packages/*/test/integration/**/*.test.ts', 'tools/*/test/integration/**/*.test.ts'],
          globalSetup: ['tools/testkit/src/global-setup.ts'],
          testTimeout: 180_000,
          hookTimeout: 300_000,
          retry: 0,
          maxWorkers: 2,
        },
      },
      {
        // Boots real VMs under QEMU through libvirt.
        extends: true,
        test: {
          name: 'e2e',
          sequence: { groupOrder: 2 },
          include: ['e2e/**/*.test.ts'],
          exclude: [...configDefaults.exclude, ...e2eLaneB],
          globalSetup: ['tools/testkit/src/global-setup.ts'],
          testTimeout: 600_000,
          hookTimeout: 600_000,
          retry: 0,
          fileParallelism: false,
        },
      },
      {
        extends: true,
        test: {
          name: 'e2e-b',
          sequence: { groupOrder: 3 },
          include: e2eLaneB,
          globalSetup: ['tools/testkit/src/global-setup.ts'],
          testTimeout: 600_000,
          hookTimeout: 600_000,
          retry: 0,
          fileParallelism: false,
        },
      },
    ],
  },
});
