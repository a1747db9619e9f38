// Stand-alone runner for the guest image tests until the root vitest config can include them
// (`tools/test` is the `npm test` script, so `tools/test/unit/` cannot exist as a folder):
//   npx vitest run --config tools/guest/vitest.config.ts
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

export default defineConfig({
  root,
  resolve: {
    alias: {
      // index.ts also re-exports stack.ts (owned by tools/stack); until that exists, guest.ts alone
      '@ephemera/testkit': existsSync(join(root, 'tools/testkit/src/stack.ts'))
        ? join(root, 'tools/testkit/src/index.ts')
        : join(root, 'tools/testkit/src/guest.ts'),
    },
  },
  test: {
    include: ['tools/guest/test/**/*.test.ts'],
    testTimeout: 180_000,
    hookTimeout: 300_000,
    fileParallelism: false,
  },
});
