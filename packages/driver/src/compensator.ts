/**
 * The compensator: undoes what a journaled operation created, one undo per journal resource kind
 * (a table keyed by kind, so a new kind is one entry), in reverse order of the intents.
 */
import { rm } from 'node:fs/promises';
import { inject, injectable } from 'inversify';
import { GLANCE_TYPES, isGlanceError, type GlanceClient } from '@ephemera/glance';
import {
  BACKEND_REGISTRY,
  KEY_PROVIDER,
  isImageBackendError,
  sleep,
  type BackendRegistry,
  type KeyProvider,
} from '@ephemera/image-backend';
import { isLibvirtError, type Domain } from '@ephemera/libvirt-napi';
import { undefineSecret } from './ceph.js';
import type { DriverConfig } from './config.js';
import type { JournalResource } from './journal.js';
import { LibvirtSession } from './libvirt-session.js';
import type { Logger } from './logger.js';
import { DRIVER_TYPES } from './tokens.js';
import { DRIVER_VERSION, errMessage, requireBackend } from './util.js';

/** How an undo runs. */
export interface UndoOptions {
  /** The operation's process died (reconcile): work it handed to others may still land. */
  orphaned: boolean;
  /** Let a domain start that libvirtd is still running finish before destroying it. */
  settle: boolean;
}

type ResourceKind = JournalResource['kind'];
type Undo<K extends ResourceKind> = (
  instance: string,
  r: Extract<JournalResource, { kind: K }>,
  o: UndoOptions,
) => Promise<string | undefined>;

@injectable()
export class Compensator {
  /** One undo per resource kind: returns what it removed, or undefined when nothing was there. */
  readonly #undo: { [K in ResourceKind]: Undo<K> } = {
    domain: async (instance, r, o) => {
      const dom = await this.session.domain(r.uuid);
      if (!dom) return undefined;
      if (o.settle) await this.#settleStart(dom, instance);
      if (await dom.isActive()) {
        await dom.destroy().catch((err) => {
          if (!isLibvirtError(err, 'VIR_ERR_OPERATION_INVALID')) throw err;
        });
      }
      await dom.undefine().catch((err) => {
        if (!isLibvirtError(err, 'VIR_ERR_NO_DOMAIN')) throw err;
      });
      return `domain ${r.name}`;
    },
    disk: async (instance, r) => {
      const b = requireBackend(this.backends, r.backend);
      // Same instance UUID on another host (or a disk handed over since): not ours to remove.
      const owner = await b.getOwner?.({ instance, name: r.name }).catch(() => null);
      if (owner && owner.hostId !== this.config.host.id) {
        this.log.warn({ instance, disk: r.name, owner: owner.hostId }, 'disk belongs to another host: left alone');
        return undefined;
      }
      const gone = await b.remove({ instance, name: r.name }, { busyTimeoutMs: this.config.timeouts.diskBusyMs });
      return gone ? `disk ${r.backend}:${r.name}` : undefined;
    },
    secret: async (_instance, r) => {
      if (!r.created) return undefined;
      if (await this.session.secretInUse(r.uuid)) return undefined;
      return (await undefineSecret(await this.session.connection(), r.uuid)) ? `secret ${r.uuid}` : undefined;
    },
    key: async (instance, r) => {
      if (r.provider !== this.keys.name) {
        this.log.warn({ instance, provider: r.provider }, `key ${r.id} is in another key provider: left alone`);
        return undefined;
      }
      return (await this.keys.deleteKey(r.id)) ? `key ${r.provider}:${r.id}` : undefined;
    },
    file: async (_instance, r) => {
      await rm(r.path, { recursive: true, force: true });
      return `files ${r.path}`;
    },
    'glance-image': async (_instance, r) => {
      try {
        await this.#glanceUploadSettled(r.id);
        await this.glance.deleteImage(r.id);
        return `glance image ${r.id}`;
      } catch (err) {
        if (isGlanceError(err, 'GLANCE_NOT_FOUND')) return undefined;
        throw err;
      }
    },
    'direct-snapshot': async (instance, r, o) => {
      const b = requireBackend(this.backends, r.backend);
      if (!b.removeDirectSnapshot) {
        this.log.warn(
          { instance, resource: r },
          `backend ${r.backend} cannot undo a direct snapshot: check its storage for ${r.imageId}`,
        );
        return undefined;
      }
      // Orphaned (reconcile): the killed process's snapshot creation may still complete (the
      // RBD backend waits for it, bounded; known failure 12 in e2e/reliability/README.md).
      const ok = await b.removeDirectSnapshot(
        { instance, name: r.disk },
        { imageId: r.imageId, busyTimeoutMs: this.config.timeouts.diskBusyMs, orphaned: o.orphaned },
      );
      return ok ? `direct snapshot ${r.disk}:${r.imageId}` : undefined;
    },
    owner: async (instance, r) => {
      const b = requireBackend(this.backends, r.backend);
      if (!b.setOwner) return undefined;
      const back: string[] = [];
      for (const d of await b.list({ instance }))
        if (d.owner?.hostId === this.config.host.id) {
          await b.setOwner(d.disk, { hostId: r.hostId, version: DRIVER_VERSION });
          back.push(d.disk.name);
        }
      return back.length ? `ownership of ${back.join(', ')} (back to ${r.hostId})` : undefined;
    },
    snapshot: async (instance, r) => {
      const b = requireBackend(this.backends, r.backend);
      const ok = await b.removeSnapshot({ instance, name: r.disk }, r.name).catch((err) => {
        if (isImageBackendError(err, 'NOT_FOUND')) return false;
        throw err;
      });
      return ok ? `snapshot ${r.disk}@${r.name}` : undefined;
    },
  };

  constructor(
    @inject(DRIVER_TYPES.Config) private readonly config: DriverConfig,
    @inject(DRIVER_TYPES.Logger) private readonly log: Logger,
    @inject(BACKEND_REGISTRY) private readonly backends: BackendRegistry,
    @inject(GLANCE_TYPES.GlanceClient) private readonly glance: GlanceClient,
    @inject(LibvirtSession) private readonly session: LibvirtSession,
    @inject(KEY_PROVIDER) private readonly keys: KeyProvider,
  ) {}

  /**
   * Undoes the resources of `intents` in reverse order; returns what could not be removed.
   * `orphaned`: the operation's process died (reconcile), so work it handed to others may still land.
   */
  async rollback(
    instance: string,
    intents: { step: string; resource: JournalResource }[],
    log: Logger,
    removed: string[] = [],
    orphaned = false,
    settle = orphaned,
  ): Promise<string[]> {
    const failures: string[] = [];
    const seen = new Set<string>();
    for (const { resource } of [...intents].reverse()) {
      const key = JSON.stringify(resource);
      if (seen.has(key)) continue;
      seen.add(key);
      try {
        const what = await this.undo(instance, resource, { orphaned, settle });
        if (what) removed.push(what);
      } catch (err) {
        failures.push(`${resource.kind}: ${errMessage(err)}`);
        log.error({ resource, err: errMessage(err) }, 'rollback step failed');
      }
    }
    return failures;
  }

  /** Undoes one resource; returns what was removed, or undefined when nothing was there. */
  undo(instance: string, r: JournalResource, o: UndoOptions): Promise<string | undefined> {
    return (this.#undo[r.kind] as Undo<ResourceKind>)(instance, r, o);
  }

  /**
   * Waits, up to `timeouts.startMs`, while libvirt is still starting `dom` (paused, `starting_up`:
   * a dead driver's `virDomainCreate` goes on in libvirtd). QEMU opens its disks then, and a QEMU
   * killed in the middle of opening an RBD image can leave a Ceph zombie watch (tracker 58120)
   * that keeps the disk busy until an operator clears it. For `orphaned` rollbacks and the
   * rollback of an aborted spawn (whose start goes on in libvirtd); a start the driver gave up on
   * at its deadline was destroyed on purpose.
   */
  async #settleStart(dom: Domain, instance: string): Promise<void> {
    const t0 = Date.now();
    const deadline = t0 + this.config.timeouts.startMs;
    for (;;) {
      const st = await dom.state().catch(() => undefined);
      if (st?.state !== 'paused' || st.reason !== 'starting_up') break;
      if (Date.now() >= deadline) {
        this.log.warn(
          { instance, waitedMs: Date.now() - t0 },
          'domain still starting after timeouts.startMs; destroying it anyway',
        );
        return;
      }
      await sleep(50);
    }
    if (Date.now() - t0 >= 50)
      this.log.info(
        { instance, waitedMs: Date.now() - t0 },
        'waited for libvirt to finish starting the domain before destroying it',
      );
  }

  /**
   * Waits (up to `glance.timeoutMs`) while Glance is still storing data for the image (`saving`,
   * `uploading`, `importing`): deleting it then loses the race with the upload, which writes its
   * data to the store after the record is gone (a killed driver's upload that Glance is still
   * finishing). Past the bound the image is deleted anyway (Glance leaves `saving` images behind
   * after its own crash). A missing image returns at once.
   */
  async #glanceUploadSettled(imageId: string): Promise<void> {
    const deadline = Date.now() + this.config.glance.timeoutMs;
    for (;;) {
      let status: string;
      try {
        status = (await this.glance.getImage(imageId)).status;
      } catch (err) {
        if (isGlanceError(err, 'GLANCE_NOT_FOUND')) return;
        throw err;
      }
      if (status !== 'saving' && status !== 'uploading' && status !== 'importing') return;
      if (Date.now() >= deadline) {
        this.log.warn(
          { imageId, status },
          `Glance image ${imageId} is still ${status} after ${this.config.glance.timeoutMs} ms: deleting it anyway`,
        );
        return;
      }
      await sleep(100);
    }
  }
}
