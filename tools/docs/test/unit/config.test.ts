import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CONFIG_SCHEMA } from '@ephemera/driver';
import { renderConfigReference, withReference, type OptionDoc } from '../../lib/config-doc.js';
import { ROOT, read } from '../../lib/files.js';

const UPDATE = process.env.EPHEMERA_UPDATE_DOCS === '1';
const PAGE = 'docs/configuration.md';

describe('docs/configuration.md is generated from the driver config schema', () => {
  // Compile-time check that the driver's schema has the shape the generator reads.
  const schema: readonly OptionDoc[] = CONFIG_SCHEMA;

  it('the reference section equals what the generator makes of CONFIG_SCHEMA', () => {
    const page = read(PAGE);
    const want = withReference(page, renderConfigReference(schema));
    if (UPDATE && want !== page) {
      writeFileSync(join(ROOT, PAGE), want);
      return;
    }
    expect(page, `run EPHEMERA_UPDATE_DOCS=1 npx vitest run --project unit tools/docs/ to regenerate ${PAGE}`).toBe(
      want,
    );
  });

  it('documents every option, with its env variable, and the Nova options the issue names', () => {
    const page = read(PAGE);
    for (const o of schema) {
      expect(page).toContain(`#### \`${o.key}\``);
      expect(page).toContain(`\`${o.env}\``);
    }
    for (const nova of [
      'images_type',
      'images_rbd_pool',
      'rbd_user',
      'rbd_secret_uuid',
      'images_volume_group',
      'use_cow_images',
      'force_raw_images',
    ]) {
      expect(
        schema.some((o) => o.nova?.endsWith(` ${nova}`)),
        nova,
      ).toBe(true);
    }
  });

  it('renders defaults, lists, enums and bounds', () => {
    const out = renderConfigReference([
      { key: 'a', type: 'path', description: 'A.', default: '${stateDir}/x', env: 'EPHEMERA_A' },
      { key: 'b.c', type: 'string[]', description: 'C.', default: [], env: 'EPHEMERA_B_C', nova: '[x] y|z' },
      { key: 'b.d', type: 'enum', values: ['p', 'q'], description: 'D.', default: 'p', env: 'EPHEMERA_B_D' },
      {
        key: 'b.e',
        type: 'integer',
        min: 1,
        max: 9,
        description: 'E.',
        default: undefined,
        env: 'EPHEMERA_B_E',
        secret: true,
      },
    ]);
    expect(out).toContain(
      '### Driver\n\n#### `a`\n\nA.\n\n- type: path\n- default: `${stateDir}/x`\n- environment: `EPHEMERA_A`\n- Nova: none\n',
    );
    expect(out).toContain('### `b`');
    expect(out).toContain('- default: empty list');
    expect(out).toContain('- type: one of `p`, `q`');
    expect(out).toContain('- type: integer, 1..9\n- default: unset');
    expect(out).toContain('- secret: never printed or logged');
    expect(out).toContain('| `[x] y\\|z` | `b.c` | empty list |');
  });
});
