import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
// #region registration
import 'reflect-metadata';
import { Container } from 'inversify';
import {
  BACKEND_REGISTRY,
  BackendRegistry,
  IMAGE_BACKEND,
  MemoryBackend,
  pluginNamed,
  type ImageBackend,
} from '@ephemera/image-backend';
import { DirectoryBackend } from '../src/index.js';

/** Binds the directory backend as a plugin next to others, as a host (the driver) does. */
function compose(directory: string): Container {
  const container = new Container();
  // One binding per plugin, under the shared token, constrained by name: it serves both the
  // named lookup (select one) and the unnamed discovery of every plugin.
  container
    .bind<ImageBackend>(IMAGE_BACKEND)
    .toConstantValue(new DirectoryBackend({ directory }))
    .when(pluginNamed('directory'));
  container
    .bind<ImageBackend>(IMAGE_BACKEND)
    .toConstantValue(new MemoryBackend({ name: 'memory' }))
    .when(pluginNamed('memory'));
  // The registry checks every plugin once: apiVersion window, capabilities, methods, unique names.
  container
    .bind(BACKEND_REGISTRY)
    .toDynamicValue((ctx) => new BackendRegistry(ctx.getAll<ImageBackend>(IMAGE_BACKEND)))
    .inSingletonScope();
  return container;
}
// #endregion registration

let directory: string;
beforeAll(async () => {
  directory = await mkdtemp(join(tmpdir(), 'ephemera-dir-registration-'));
});
afterAll(async () => {
  await rm(directory, { recursive: true, force: true });
});

describe('the directory backend as a plugin', () => {
  it('is discovered by the registry and selectable by name through the DI tokens', () => {
    const container = compose(directory);
    const registry = container.get<BackendRegistry>(BACKEND_REGISTRY);
    expect(registry.names().sort()).toEqual(['directory', 'memory']);
    // The configured order of choice: the first one registered wins.
    expect(registry.select(['rbd', 'directory', 'memory']).name).toBe('directory');
    const named = container.get<ImageBackend>(IMAGE_BACKEND, { name: 'directory' });
    expect(named).toBeInstanceOf(DirectoryBackend);
    expect(registry.get('directory')).toBe(named);
  });

  it('declares the contract version it was built against, inside the host window', () => {
    const backend = new DirectoryBackend({ directory });
    const registry = new BackendRegistry([backend]);
    expect(backend.apiVersion).toBeGreaterThanOrEqual(registry.window.min);
    expect(backend.apiVersion).toBeLessThanOrEqual(registry.window.max);
  });

  it('is refused by a host whose contract moved on with a breaking change', () => {
    const backend = new DirectoryBackend({ directory });
    // A host at the next version with age 0 no longer accepts plugins built for this one.
    expect(() => new BackendRegistry([backend], { apiVersion: backend.apiVersion + 1, apiAge: 0 })).toThrow(
      /'directory' declares contract apiVersion 1, but this registry accepts versions 2\.\.2/,
    );
    // ...while a backward-compatible bump (age + 1) still loads it.
    expect(new BackendRegistry([backend], { apiVersion: backend.apiVersion + 1, apiAge: 1 }).names()).toEqual([
      'directory',
    ]);
  });

  it('refuses a second plugin with the same name', () => {
    expect(
      () => new BackendRegistry([new DirectoryBackend({ directory }), new MemoryBackend({ name: 'directory' })]),
    ).toThrow(/two image backends are registered as 'directory'/);
  });
});
