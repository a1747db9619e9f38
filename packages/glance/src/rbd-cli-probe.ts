/** An {@link RbdProbe} that asks the `rbd` CLI (`rbd info` of the snapshot). */
import { execFile } from 'node:child_process';
import type { RbdProbe } from './resolver/handlers.js';

/** How to reach one cluster with the `rbd` CLI. Keys stay in the keyring file named by the conf. */
export interface RbdCliCluster {
  fsid: string;
  /** ceph.conf with `mon_host` and `keyring`. */
  confPath: string;
  /** cephx id without `client.`, e.g. `ephemera`. */
  id: string;
}

/**
 * Probe with `rbd info --pool=P --image=I --snap=S --format=json` (argv, never a shell; 15 s
 * timeout). Answers `true`, or the reason (rbd's last stderr line) as a string.
 */
export class RbdCliProbe implements RbdProbe {
  readonly #clusters: RbdCliCluster[];
  readonly #timeoutMs: number;
  readonly #rbd: string;

  constructor(clusters: RbdCliCluster[], opts: { timeoutMs?: number; rbdPath?: string } = {}) {
    this.#clusters = clusters;
    this.#timeoutMs = opts.timeoutMs ?? 15_000;
    this.#rbd = opts.rbdPath ?? 'rbd';
  }

  snapshotReadable(
    ref: { fsid: string; pool: string; image: string; snapshot: string },
    signal?: AbortSignal,
  ): Promise<boolean | string> {
    const cluster = this.#clusters.find((c) => c.fsid.toLowerCase() === ref.fsid.toLowerCase());
    if (!cluster) return Promise.resolve(`no configuration for Ceph cluster ${ref.fsid}`);
    const argv = [
      'info',
      `--conf=${cluster.confPath}`,
      `--id=${cluster.id}`,
      `--pool=${ref.pool}`,
      `--image=${ref.image}`,
      `--snap=${ref.snapshot}`,
      '--format=json',
    ];
    return new Promise((resolve) => {
      execFile(
        this.#rbd,
        argv,
        { timeout: this.#timeoutMs, ...(signal ? { signal } : {}), maxBuffer: 1 << 20 },
        (err, stdout, stderr) => {
          if (err) {
            const line = String(stderr).trim().split('\n').filter(Boolean).pop();
            resolve(line ?? (err as Error).message);
            return;
          }
          try {
            const info = JSON.parse(String(stdout)) as { name?: string };
            resolve(info.name === ref.image ? true : `rbd info answered for ${String(info.name)}`);
          } catch {
            resolve('rbd info printed no JSON');
          }
        },
      );
    });
  }
}
