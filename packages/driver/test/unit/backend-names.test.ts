import { describe, expect, it } from 'vitest';
import {
  BACKEND_NAMES,
  BOOTABLE_BACKENDS,
  BUILTIN_BACKENDS,
  CONFIG_SCHEMA,
  ConfigError,
  isBootableBackend,
  loadConfig,
} from '@ephemera/driver';

// The built-in backend names are listed once; everything that names backends derives from them.
describe('backend names', () => {
  it('the plugin table, the images.type enum and images.enabled all follow BACKEND_NAMES', () => {
    expect([...BACKEND_NAMES].sort()).toEqual(Object.keys(BUILTIN_BACKENDS).sort());
    for (const n of BACKEND_NAMES) expect(BUILTIN_BACKENDS[n]!.name).toBe(n);
    expect(CONFIG_SCHEMA.find((s) => s.key === 'images.type')?.values).toEqual([...BOOTABLE_BACKENDS]);
    expect(
      loadConfig({ env: {}, overrides: { images: { enabled: [...BACKEND_NAMES] } } }).config.images.enabled,
    ).toEqual([...BACKEND_NAMES]);
    expect(() => loadConfig({ env: {}, overrides: { images: { enabled: ['zfs'] } } })).toThrow(ConfigError);
    expect(() => loadConfig({ env: {}, overrides: { images: { enabled: ['zfs'] } } })).toThrow(
      `known: ${BACKEND_NAMES.join(', ')}`,
    );
  });

  it('isBootableBackend accepts the bootable names only', () => {
    for (const n of BOOTABLE_BACKENDS) expect(isBootableBackend(n)).toBe(true);
    expect(isBootableBackend('memory')).toBe(false);
    expect(isBootableBackend('zfs')).toBe(false);
  });
});
