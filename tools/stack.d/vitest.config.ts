// Stand-alone runner for the dev stack's own tests until the root vitest config includes them
// (`tools/test` is the `npm test` script, so `tools/test/integration/` cannot exist as a folder):
//   npx vitest run --config tools/stack.d/vitest.config.ts
// Same settings as the root `integration` project (global setup brings the stack up).
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

export default defineConfig({
  root,
  resolve: { alias: { '@ephemera/testkit': join(root, 'tools/testkit/src/index.ts') } },
  test: {
    include: ['tools/stack.d/test/**/*.test.ts'],
    globalSetup: ['tools/testkit/src/global-setup.ts'],
    testTimeout: 180_000,
    hookTimeout: 300_000,
    maxWorkers: 2,
  },
});
