import 'reflect-metadata';
import { Container, inject, injectable, multiInject } from 'inversify';
import { describe, expect, it } from 'vitest';
import {
  BACKEND_REGISTRY,
  BackendRegistry,
  type ImageBackend,
  IMAGE_BACKEND,
  IMAGE_BACKEND_API_AGE,
  IMAGE_BACKEND_API_VERSION,
  IncompatiblePluginError,
  MemoryBackend,
  UnknownBackendError,
  apiWindow,
  assertCompatiblePlugin,
  isImageBackendError,
  pluginNamed,
  requireCapability,
} from '@ephemera/image-backend';

describe('contract versioning', () => {
  it('accepts the window [CURRENT - AGE, CURRENT]', () => {
    expect(apiWindow()).toEqual({
      min: IMAGE_BACKEND_API_VERSION - IMAGE_BACKEND_API_AGE,
      max: IMAGE_BACKEND_API_VERSION,
    });
    expect(apiWindow(5, 2)).toEqual({ min: 3, max: 5 });
  });

  it('accepts plugins inside the window and rejects older and newer ones with a clear error', () => {
    const opts = { apiVersion: 5, apiAge: 2 };
    for (const v of [3, 4, 5]) {
      expect(new BackendRegistry([new MemoryBackend({ name: `m${v}`, apiVersion: v })], opts).names()).toEqual([
        `m${v}`,
      ]);
    }
    for (const [v, hint] of [
      [2, /too old/],
      [6, /newer than this host/],
    ] as const) {
      let err: unknown;
      try {
        new BackendRegistry([new MemoryBackend({ name: 'old-or-new', apiVersion: v })], opts);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(IncompatiblePluginError);
      const e = err as IncompatiblePluginError;
      expect(e.code).toBe('INCOMPATIBLE_PLUGIN');
      expect(e.plugin).toBe('old-or-new');
      expect(e.pluginApiVersion).toBe(v);
      expect([e.minApiVersion, e.maxApiVersion]).toEqual([3, 5]);
      expect(e.message).toContain("'old-or-new'");
      expect(e.message).toContain(`apiVersion ${v}`);
      expect(e.message).toContain('3..5');
      expect(e.message).toMatch(hint);
    }
  });

  it('rejects malformed plugins naming what is wrong', () => {
    const good = new MemoryBackend({ name: 'x' });
    const cases: [unknown, RegExp][] = [
      [null, /not an object/],
      [{ ...good, name: '' }, /missing name/],
      [Object.assign(Object.create(MemoryBackend.prototype), { ...good, apiVersion: '1' }), /integer/],
      [
        Object.assign(Object.create(MemoryBackend.prototype), { ...good, capabilities: undefined }),
        /missing capabilities/,
      ],
      [
        Object.assign(Object.create(MemoryBackend.prototype), {
          ...good,
          capabilities: { ...good.capabilities, thin: 'yes' },
        }),
        /'thin' is not a boolean/,
      ],
      [
        Object.assign(Object.create(MemoryBackend.prototype), {
          ...good,
          capabilities: { ...good.capabilities, snapshot: false },
        }),
        /'rollback' requires 'snapshot'/,
      ],
      [Object.assign(Object.create(MemoryBackend.prototype), { ...good, diskFormats: [] }), /diskFormats/],
      [{ ...good }, /missing method exists\(\)/],
    ];
    for (const [plugin, re] of cases) {
      expect(() => assertCompatiblePlugin(plugin), String(re)).toThrow(re);
      expect(() => assertCompatiblePlugin(plugin)).toThrow(IncompatiblePluginError);
    }
  });
});

describe('BackendRegistry', () => {
  it('selects by name and lists what is registered', () => {
    const a = new MemoryBackend({ name: 'rbd' });
    const b = new MemoryBackend({ name: 'qcow2' });
    const reg = new BackendRegistry([a, b]);
    expect(reg.names()).toEqual(['rbd', 'qcow2']);
    expect(reg.get('qcow2')).toBe(b);
    expect(reg.has('lvm')).toBe(false);
    expect(reg.select(['lvm', 'qcow2', 'rbd'])).toBe(b);
    expect(reg.select('rbd')).toBe(a);
    expect(reg.all()).toEqual([a, b]);
  });

  it('throws UnknownBackendError listing the registered names', () => {
    const reg = new BackendRegistry([new MemoryBackend({ name: 'rbd' })]);
    expect(() => reg.get('lvm')).toThrow(UnknownBackendError);
    expect(() => reg.get('lvm')).toThrow("no image backend named 'lvm' (registered: rbd)");
    expect(() => reg.select(['a', 'b'])).toThrow(/'a \| b'/);
    expect(() => new BackendRegistry([]).get('x')).toThrow(/registered: none/);
  });

  it('rejects two plugins with the same name', () => {
    let err: unknown;
    try {
      new BackendRegistry([new MemoryBackend({ name: 'rbd' }), new MemoryBackend({ name: 'rbd' })]);
    } catch (e) {
      err = e;
    }
    expect(isImageBackendError(err, 'DUPLICATE_BACKEND')).toBe(true);
  });

  it('closes every backend and reports the first failure', async () => {
    const closed: string[] = [];
    const mk = (name: string, fail = false) =>
      Object.assign(new MemoryBackend({ name }), {
        close: async () => {
          closed.push(name);
          if (fail) throw new Error(`close ${name}`);
        },
      });
    const reg = new BackendRegistry([mk('a', true), mk('b'), new MemoryBackend({ name: 'c' })]);
    await expect(reg.close()).rejects.toThrow('close a');
    expect(closed).toEqual(['a', 'b']);
  });

  it('requireCapability throws UnsupportedOperationError naming the capability', () => {
    const b = new MemoryBackend({ name: 'thick', capabilities: { thin: false } });
    expect(() => requireCapability(b, 'thin', 'probe')).toThrow("probe: backend 'thick' does not support 'thin'");
    expect(() => requireCapability(b, 'clone', 'probe')).not.toThrow();
  });
});

// How the driver wires plugins with inversify: each backend is bound to IMAGE_BACKEND under its
// name (named bindings select one); the registry discovers all of them with @multiInject.
@injectable()
class RbdPlugin extends MemoryBackend {
  constructor() {
    super({ name: 'rbd' });
  }
}
@injectable()
class Qcow2Plugin extends MemoryBackend {
  constructor() {
    super({ name: 'qcow2', capabilities: { clone: false } });
  }
}
@injectable()
class InjectedRegistry extends BackendRegistry {
  constructor(@multiInject(IMAGE_BACKEND) backends: ImageBackend[]) {
    super(backends);
  }
}
@injectable()
class Consumer {
  constructor(@inject(BACKEND_REGISTRY) readonly registry: BackendRegistry) {}
}

describe('inversify wiring (named bindings + multiInject discovery)', () => {
  function container(extra?: (c: Container) => void): Container {
    const c = new Container();
    c.bind<ImageBackend>(IMAGE_BACKEND).to(RbdPlugin).inSingletonScope().when(pluginNamed('rbd'));
    c.bind<ImageBackend>(IMAGE_BACKEND).to(Qcow2Plugin).inSingletonScope().when(pluginNamed('qcow2'));
    c.bind(BACKEND_REGISTRY).to(InjectedRegistry).inSingletonScope();
    c.bind(Consumer).toSelf();
    extra?.(c);
    return c;
  }

  it('discovers every bound backend and selects one by name', () => {
    const c = container();
    const { registry } = c.get(Consumer);
    expect(registry.names().sort()).toEqual(['qcow2', 'rbd']);
    const named = c.get<ImageBackend>(IMAGE_BACKEND, { name: 'qcow2' });
    expect(named.name).toBe('qcow2');
    expect(registry.get('qcow2')).toBe(named); // singletons: the same instance both ways
    expect(registry.get('rbd').capabilities.clone).toBe(true);
    expect(
      c
        .getAll<ImageBackend>(IMAGE_BACKEND)
        .map((b) => b.name)
        .sort(),
    ).toEqual(['qcow2', 'rbd']);
    expect(() => c.get<ImageBackend>(IMAGE_BACKEND, { name: 'lvm' })).toThrow();
  });

  it('a plain whenNamed binding is invisible to unnamed multiInject (why pluginNamed exists)', () => {
    const c = new Container();
    c.bind<ImageBackend>(IMAGE_BACKEND).to(RbdPlugin).whenNamed('rbd');
    expect(c.get<ImageBackend>(IMAGE_BACKEND, { name: 'rbd' }).name).toBe('rbd');
    expect(c.getAll<ImageBackend>(IMAGE_BACKEND, { optional: true })).toEqual([]);
  });

  it('refuses a plugin built for another contract version when the registry is resolved', () => {
    @injectable()
    class FuturePlugin extends MemoryBackend {
      constructor() {
        super({ name: 'future', apiVersion: IMAGE_BACKEND_API_VERSION + 1 });
      }
    }
    const c = container((c) => c.bind<ImageBackend>(IMAGE_BACKEND).to(FuturePlugin).when(pluginNamed('future')));
    expect(() => c.get(Consumer)).toThrow(/'future' declares contract apiVersion 2/);
  });

  it('plugin symbols are global (Symbol.for), so separately built packages agree', () => {
    expect(IMAGE_BACKEND).toBe(Symbol.for('ephemera.ImageBackend'));
    expect(BACKEND_REGISTRY).toBe(Symbol.for('ephemera.BackendRegistry'));
  });
});
