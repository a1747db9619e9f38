import { LvmError, type LvInfo, type Lvm, type PvInfo } from './lvm.js';
import { attachLoop, canonical, detachLoop, listLoops, type LoopDevice } from './loop.js';

/** Where a linear LV's bytes live on its PV. */
export interface ExtentRange {
  /** The PV device (as LVM names it). */
  pv: string;
  /** Byte offset of the LV's first extent on the PV: `pe_start + first_extent * extent_size`. */
  offset: number;
  /** Length in bytes (= LV size). */
  bytes: number;
}

/** A loop device over one of the volume group's PVs and the LV it maps, if any. */
export interface LoopMapping {
  device: string;
  range: ExtentRange;
  /** The LV whose extents it maps exactly, or `undefined` for an orphan (its LV is gone or moved). */
  lv: string | undefined;
}

/** The LV cannot be exposed through a loop device (more than one segment). */
export class UnmappableError extends Error {
  override readonly name = 'UnmappableError';
}

/** Computes the PV byte range of a single-segment linear LV. */
export function extentRange(lv: LvInfo, pvs: readonly PvInfo[], extentSize: number): ExtentRange {
  if (lv.segmentCount !== 1 || lv.segments.length !== 1)
    throw new UnmappableError(
      `logical volume ${lv.name} has ${lv.segmentCount} segments: only a single linear segment can be mapped without device-mapper`,
    );
  const seg = lv.segments[0]!;
  const pv = pvs.find((p) => p.name === seg.pv);
  if (!pv) throw new LvmError(`PV ${seg.pv} of ${lv.name} is not in the volume group`, 'failed', '');
  const bytes = (seg.lastExtent - seg.firstExtent + 1) * extentSize;
  if (bytes !== lv.sizeBytes)
    throw new UnmappableError(
      `logical volume ${lv.name}: segment covers ${bytes} bytes but the LV has ${lv.sizeBytes}`,
    );
  return { pv: seg.pv, offset: pv.peStart + seg.firstExtent * extentSize, bytes };
}

/**
 * Exposes LVs as block devices. With device-mapper: activation and `/dev/<vg>/<lv>`. Without
 * it: a loop device over the PV at the LV's extent range, exactly the linear mapping dm would
 * make. Mapping is idempotent (an existing loop over the same range is reused), and every loop
 * is found again from `losetup --list`, so a crash leaves nothing that cannot be cleaned.
 */
export class LvMapper {
  private readonly locks = new Map<string, Promise<unknown>>();

  constructor(readonly lvm: Lvm) {}

  /** Serialises work per LV name within this process. */
  async withLock<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(name) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const settled = next.catch(() => undefined);
    this.locks.set(name, settled);
    try {
      return await next;
    } finally {
      if (this.locks.get(name) === settled) this.locks.delete(name);
    }
  }

  /** The byte range of `lv` on its PV (no-dm mode). */
  async rangeOf(lv: LvInfo): Promise<ExtentRange> {
    const [pvs, vg] = await Promise.all([this.lvm.pvs(), this.lvm.vgInfo()]);
    return extentRange(lv, pvs, vg.extentSize);
  }

  /** Every loop device over one of the VG's PVs, with the LV each one maps (no-dm mode). */
  async mappings(): Promise<LoopMapping[]> {
    const [pvs, vg, lvs, loops] = await Promise.all([this.lvm.pvs(), this.lvm.vgInfo(), this.lvm.lvs(), listLoops()]);
    const pvByPath = new Map<string, PvInfo>();
    for (const pv of pvs) pvByPath.set(await canonical(pv.name), pv);
    const ranges: { lv: string; key: string }[] = [];
    for (const lv of lvs) {
      try {
        const r = extentRange(lv, pvs, vg.extentSize);
        ranges.push({ lv: lv.name, key: `${await canonical(r.pv)}:${r.offset}:${r.bytes}` });
      } catch {
        // multi-segment LVs have no loop mapping
      }
    }
    const out: LoopMapping[] = [];
    for (const loop of loops) {
      const back = await canonical(loop.backFile);
      const pv = pvByPath.get(back);
      // Only loops inside the PV's data area are ours; a loop over the whole PV (offset 0) is the PV itself.
      if (!pv || loop.sizeLimit === 0 || loop.offset < pv.peStart) continue;
      const key = `${back}:${loop.offset}:${loop.sizeLimit}`;
      out.push({
        device: loop.name,
        range: { pv: pv.name, offset: loop.offset, bytes: loop.sizeLimit },
        lv: ranges.find((r) => r.key === key)?.lv,
      });
    }
    return out;
  }

  private async loopsFor(range: ExtentRange, loops?: LoopDevice[]): Promise<LoopDevice[]> {
    const pv = await canonical(range.pv);
    const all = loops ?? (await listLoops());
    const out: LoopDevice[] = [];
    for (const l of all) {
      if (l.offset === range.offset && l.sizeLimit === range.bytes && (await canonical(l.backFile)) === pv) out.push(l);
    }
    return out;
  }

  /** The block device of an LV if it is mapped already, without mapping it. */
  async devicePath(name: string): Promise<string | undefined> {
    const lv = await this.lvm.lv(name);
    if (!lv) return undefined;
    if (this.lvm.deviceMapper) return lv.active ? lv.path : undefined;
    let range: ExtentRange;
    try {
      range = await this.rangeOf(lv);
    } catch (e) {
      if (e instanceof UnmappableError) return undefined;
      throw e;
    }
    return (await this.loopsFor(range))[0]?.name;
  }

  /** Maps `name` and returns its block device path. Idempotent. */
  async map(name: string, signal?: AbortSignal): Promise<string> {
    return this.withLock(name, async () => {
      const lv = await this.lvm.lv(name);
      if (!lv) throw new LvmError(`Failed to find logical volume "${this.lvm.vg}/${name}"`, 'lv-not-found', '');
      if (this.lvm.deviceMapper) {
        if (!lv.active) await this.lvm.activate(name);
        return lv.path;
      }
      const range = await this.rangeOf(lv);
      const existing = await this.loopsFor(range);
      if (existing[0]) return existing[0].name;
      return attachLoop(range.pv, range.offset, range.bytes, signal);
    });
  }

  /** Unmaps `name` (detaches every loop over its range). Idempotent; a missing LV is not an error. */
  async unmap(name: string): Promise<void> {
    await this.withLock(name, async () => {
      if (this.lvm.deviceMapper) return; // LVs stay active until removal (lvremove deactivates)
      const lv = await this.lvm.lv(name);
      if (!lv) return;
      let range: ExtentRange;
      try {
        range = await this.rangeOf(lv);
      } catch (e) {
        if (e instanceof UnmappableError) return;
        throw e;
      }
      for (const loop of await this.loopsFor(range)) await detachLoop(loop.name);
    });
  }

  /** Detaches loops over the VG's PVs that map no current LV exactly (left by a crash). Returns them. */
  async detachOrphans(): Promise<string[]> {
    if (this.lvm.deviceMapper) return [];
    const orphans = (await this.mappings()).filter((m) => m.lv === undefined).map((m) => m.device);
    for (const dev of orphans) await detachLoop(dev);
    return orphans;
  }
}
