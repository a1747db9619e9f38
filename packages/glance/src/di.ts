/** inversify wiring: tokens and a container module with the shipped handlers. */
import 'reflect-metadata';
import { ContainerModule } from 'inversify';
import { GlanceClient, type GlanceClientOptions } from './client.js';
import {
  FileHandler,
  GlanceDownloadHandler,
  HttpDownloadHandler,
  RbdCloneHandler,
  RbdCopyHandler,
  type RbdProbe,
} from './resolver/handlers.js';
import { ImageResolver, type ResolverGlance } from './resolver/resolver.js';
import type { ImageHandler } from './resolver/types.js';

/** Service identifiers. Bind more {@link ImageHandler}s to `ImageHandler` to plug in a backend's own. */
export const GLANCE_TYPES = {
  /** The {@link GlanceClient}. */
  GlanceClient: Symbol.for('@ephemera/glance:GlanceClient'),
  /** Multi-bound: every {@link ImageHandler}. */
  ImageHandler: Symbol.for('@ephemera/glance:ImageHandler'),
  /** The {@link RbdProbe} used by the RBD handlers. */
  RbdProbe: Symbol.for('@ephemera/glance:RbdProbe'),
  /** The {@link ImageResolver}. */
  ImageResolver: Symbol.for('@ephemera/glance:ImageResolver'),
} as const;

/** Options of {@link glanceModule}. */
export interface GlanceModuleOptions {
  /** A client, or options to build one. */
  client: GlanceClient | GlanceClientOptions;
  /** The real snapshot probe (librbd in the driver, {@link RbdCliProbe} elsewhere). */
  rbdProbe: RbdProbe;
  /** Which shipped handlers to bind. Default all five. */
  handlers?: Array<'rbd-clone' | 'rbd-copy' | 'http-download' | 'file' | 'glance-download'>;
}

/**
 * A container module binding the client, the probe, the shipped handlers (multi-bound to
 * `GLANCE_TYPES.ImageHandler`) and a resolver built from *all* handlers bound at resolution time,
 * so other modules can add their own: `bind(GLANCE_TYPES.ImageHandler).toConstantValue(myHandler)`.
 */
export function glanceModule(opts: GlanceModuleOptions): ContainerModule {
  const wanted = new Set(opts.handlers ?? ['rbd-clone', 'rbd-copy', 'http-download', 'file', 'glance-download']);
  return new ContainerModule(({ bind }) => {
    const client = opts.client instanceof GlanceClient ? opts.client : new GlanceClient(opts.client);
    bind<GlanceClient>(GLANCE_TYPES.GlanceClient).toConstantValue(client);
    bind<RbdProbe>(GLANCE_TYPES.RbdProbe).toConstantValue(opts.rbdProbe);
    const H = GLANCE_TYPES.ImageHandler;
    if (wanted.has('rbd-clone'))
      bind<ImageHandler>(H)
        .toResolvedValue((p: RbdProbe) => new RbdCloneHandler(p), [GLANCE_TYPES.RbdProbe])
        .inSingletonScope();
    if (wanted.has('rbd-copy'))
      bind<ImageHandler>(H)
        .toResolvedValue((p: RbdProbe) => new RbdCopyHandler(p), [GLANCE_TYPES.RbdProbe])
        .inSingletonScope();
    if (wanted.has('http-download')) bind<ImageHandler>(H).toConstantValue(new HttpDownloadHandler());
    if (wanted.has('file')) bind<ImageHandler>(H).toConstantValue(new FileHandler());
    if (wanted.has('glance-download')) bind<ImageHandler>(H).toConstantValue(new GlanceDownloadHandler());
    bind<ImageResolver>(GLANCE_TYPES.ImageResolver)
      .toResolvedValue(
        (glance: ResolverGlance, handlers: ImageHandler[]) => new ImageResolver(glance, handlers),
        [GLANCE_TYPES.GlanceClient, { serviceIdentifier: H, isMultiple: true }],
      )
      .inSingletonScope();
  });
}
