// Internal qcow2 snapshots: read from the qcow2 header, changed through qemu-img snapshot.
import {
  AlreadyExistsError,
  NotFoundError,
  assertValidSnapshotName,
  diskId,
  type DiskRef,
  type SnapshotInfo,
} from '@ephemera/image-backend';
import type { Qcow2Context } from './context.js';
import { NAME, qemuCall } from './layout.js';
import { readQcow2Header } from './qcow2-header.js';

export async function createSnapshot(ctx: Qcow2Context, disk: DiskRef, snapshot: string): Promise<SnapshotInfo> {
  const id = diskId(disk);
  assertValidSnapshotName(snapshot);
  const loc = await ctx.store.snapshotTarget(id, 'createSnapshot');
  const header = await readQcow2Header(loc.path);
  if (header.snapshots.some((s) => s.name === snapshot))
    throw new AlreadyExistsError(`snapshot ${snapshot} of ${id} exists`, { backend: NAME, diskId: id });
  await qemuCall(id, () => ctx.qemu.createSnapshot(loc.path, snapshot, { format: 'qcow2' }));
  return { name: snapshot, sizeBytes: header.virtualSize };
}

export async function listSnapshots(ctx: Qcow2Context, disk: DiskRef): Promise<SnapshotInfo[]> {
  const id = diskId(disk);
  const loc = await ctx.store.locate(id);
  if (!loc) throw ctx.store.notFound(id);
  if (loc.format !== 'qcow2') return [];
  const header = await readQcow2Header(loc.path);
  return header.snapshots.map((s) => ({ name: s.name, sizeBytes: s.diskSize ?? header.virtualSize }));
}

export async function removeSnapshot(ctx: Qcow2Context, disk: DiskRef, snapshot: string): Promise<boolean> {
  const id = diskId(disk);
  assertValidSnapshotName(snapshot);
  const loc = await ctx.store.locate(id);
  if (!loc) throw ctx.store.notFound(id);
  if (loc.format !== 'qcow2') return false;
  if (!(await readQcow2Header(loc.path)).snapshots.some((s) => s.name === snapshot)) return false;
  await qemuCall(id, () => ctx.qemu.deleteSnapshot(loc.path, snapshot, { format: 'qcow2' }));
  return true;
}

export async function rollbackToSnapshot(ctx: Qcow2Context, disk: DiskRef, snapshot: string): Promise<void> {
  const id = diskId(disk);
  assertValidSnapshotName(snapshot);
  const loc = await ctx.store.locate(id);
  if (!loc) throw ctx.store.notFound(id);
  if (loc.format !== 'qcow2' || !(await readQcow2Header(loc.path)).snapshots.some((s) => s.name === snapshot))
    throw new NotFoundError(`snapshot ${snapshot} of ${id} not found`, { backend: NAME, diskId: id });
  await qemuCall(id, () => ctx.qemu.applySnapshot(loc.path, snapshot, { format: 'qcow2' }));
}
