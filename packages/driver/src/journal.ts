/**
 * The operation journal: one JSON-lines file per multi-step operation in `<stateDir>/journal/`.
 *
 * - `begin` is written (and fsynced, file and directory) before the operation does anything.
 * - Before each step acts, an `intent` record names the resource it is about to create or
 *   remove (`disk`, `domain`, `secret`, `key`, `glance-image`, `snapshot`, `direct-snapshot`, `file`), fsynced; `done`
 *   follows when the step finished. Rollback therefore knows exactly what may exist: every
 *   resource with an intent, whether or not its step completed (removal is idempotent).
 * - `end` closes the operation; a committed or cleanly rolled-back operation's file is deleted.
 *   A file without `end` (or ending in `rollback-failed`) is an unfinished operation that
 *   `reconcile()` finishes.
 */
import { randomUUID } from 'node:crypto';
import { mkdirSync, openSync, closeSync, fsyncSync } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { DriverError } from './errors.js';

/** Operations that are journaled. */
/** `migrate-out` on a live migration's source, `migrate-in` on its destination. */
export type JournaledOp =
  | 'spawn'
  | 'destroy'
  | 'snapshot'
  | 'resize'
  | 'migrate-out'
  | 'migrate-in'
  | 'evacuate'
  | 'flatten';

/** A resource an operation creates or removes. */
export type JournalResource =
  | { kind: 'disk'; backend: string; name: string }
  | { kind: 'domain'; uuid: string; name: string }
  | { kind: 'secret'; uuid: string; created: boolean }
  /** An encryption key in the named key provider (never the key itself). */
  | { kind: 'key'; provider: string; id: string }
  | { kind: 'glance-image'; id: string }
  | { kind: 'snapshot'; backend: string; disk: string; name: string }
  /** What a backend's `directSnapshot(disk, { imageId })` makes (temporary snapshot, the image for Glance). */
  | { kind: 'direct-snapshot'; backend: string; disk: string; imageId: string }
  | { kind: 'file'; path: string }
  /** Disks of the instance in `backend` taken from host `hostId` (`setOwner`): undone by giving them back. */
  | { kind: 'owner'; backend: string; hostId: string };

/** One line of a journal file. */
export type JournalRecord =
  | {
      t: 'begin';
      opId: string;
      op: JournaledOp;
      instance: string;
      pid: number;
      at: string;
      data: Record<string, unknown>;
    }
  | { t: 'intent'; step: string; resource: JournalResource; at: string }
  | { t: 'done'; step: string; at: string; detail?: Record<string, unknown> }
  | { t: 'end'; status: 'committed' | 'rolled-back' | 'rollback-failed'; at: string; error?: string };

/** An operation read back from its journal file. */
export interface JournalEntry {
  opId: string;
  op: JournaledOp;
  instance: string;
  pid: number;
  startedAt: string;
  data: Record<string, unknown>;
  /** Resources with an intent, in the order they were announced. */
  intents: { step: string; resource: JournalResource }[];
  /** Steps that finished. */
  done: string[];
  /** The detail each finished step recorded (the last one per step), e.g. a migration's destination. */
  details: Record<string, Record<string, unknown>>;
  end?: 'committed' | 'rolled-back' | 'rollback-failed';
  path: string;
}

/** An open journaled operation. */
export class JournalOp {
  readonly opId: string;
  readonly op: JournaledOp;
  readonly instance: string;
  readonly path: string;
  readonly intents: { step: string; resource: JournalResource }[] = [];
  #fh: FileHandle;
  #closed = false;

  /** @internal */
  constructor(fh: FileHandle, path: string, opId: string, op: JournaledOp, instance: string) {
    this.#fh = fh;
    this.path = path;
    this.opId = opId;
    this.op = op;
    this.instance = instance;
  }

  async #append(rec: JournalRecord): Promise<void> {
    if (this.#closed) throw new DriverError('JOURNAL', `journal of ${this.op} ${this.opId} is closed`);
    await this.#fh.appendFile(JSON.stringify(rec) + '\n');
    await this.#fh.sync();
  }

  /** Records (durably) that `step` is about to create or remove `resource`. Call before acting. */
  async intent(step: string, resource: JournalResource): Promise<void> {
    await this.#append({ t: 'intent', step, resource, at: new Date().toISOString() });
    this.intents.push({ step, resource });
  }

  /** Records that `step` finished. */
  async done(step: string, detail?: Record<string, unknown>): Promise<void> {
    await this.#append({ t: 'done', step, at: new Date().toISOString(), ...(detail ? { detail } : {}) });
  }

  /** Closes the operation; `committed` and `rolled-back` delete the file, `rollback-failed` keeps it for reconcile. */
  async end(status: 'committed' | 'rolled-back' | 'rollback-failed', error?: string): Promise<void> {
    await this.#append({ t: 'end', status, at: new Date().toISOString(), ...(error ? { error } : {}) });
    this.#closed = true;
    await this.#fh.close();
    if (status !== 'rollback-failed') await rm(this.path, { force: true });
  }

  /** Closes the file without an end record (the operation stays unfinished). */
  async abandon(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#fh.close();
  }
}

const TMP_SUFFIX = '.tmp';
/** `<opId>.<pid>.tmp`: a `begin` record not yet renamed into place. */
const TMP_NAME = /^[^.]+\.(\d+)\.tmp$/;

function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** The journal directory. */
export class Journal {
  readonly dir: string;

  constructor(stateDir: string) {
    this.dir = join(stateDir, 'journal');
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
  }

  /**
   * Starts an operation: writes and fsyncs its `begin` record before returning. The record goes
   * to `<opId>.<pid>.tmp` first and is renamed into place, so a kill between creating the file and
   * writing the record never leaves an entry-less `.jsonl` (which no reconcile would remove).
   */
  async begin(op: JournaledOp, instance: string, data: Record<string, unknown> = {}): Promise<JournalOp> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const opId = `${Date.now().toString().padStart(14, '0')}-${op}-${randomUUID().slice(0, 8)}`;
    const path = join(this.dir, `${opId}.jsonl`);
    const tmp = join(this.dir, `${opId}.${process.pid}${TMP_SUFFIX}`);
    const rec: JournalRecord = { t: 'begin', opId, op, instance, pid: process.pid, at: new Date().toISOString(), data };
    let fh: FileHandle | undefined;
    try {
      const w = await open(tmp, 'wx', 0o600);
      try {
        await w.appendFile(JSON.stringify(rec) + '\n');
        await w.sync();
      } finally {
        await w.close();
      }
      await rename(tmp, path);
      fsyncDir(this.dir);
      fh = await open(path, 'a');
    } catch (err) {
      await rm(tmp, { force: true });
      if (fh === undefined) await rm(path, { force: true });
      throw new DriverError('JOURNAL', `cannot write journal ${path}: ${(err as Error).message}`, {
        instance,
        cause: err,
      });
    }
    return new JournalOp(fh, path, opId, op, instance);
  }

  /**
   * Removes the temp files of `begin` calls whose process died before renaming them (no
   * operation had started: nothing else was made). Returns the names removed.
   */
  async sweepAborted(): Promise<string[]> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    const removed: string[] = [];
    for (const name of names) {
      const m = TMP_NAME.exec(name);
      if (!m || processAlive(Number(m[1]))) continue;
      await rm(join(this.dir, name), { force: true });
      removed.push(name);
    }
    return removed;
  }

  /** Every operation in the journal, oldest first (finished ones are deleted, so these are unfinished or failed). */
  async entries(): Promise<JournalEntry[]> {
    let names: string[];
    try {
      names = (await readdir(this.dir)).filter((n) => n.endsWith('.jsonl')).sort();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    const out: JournalEntry[] = [];
    for (const name of names) {
      const path = join(this.dir, name);
      let text: string;
      try {
        text = await readFile(path, 'utf8');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw err;
      }
      const entry = parseJournal(text, path);
      if (entry) out.push(entry);
    }
    return out;
  }

  /** Deletes an operation's file (after reconcile finished it). */
  async remove(entry: JournalEntry): Promise<void> {
    await rm(entry.path, { force: true });
  }
}

/** Parses one journal file; a torn last line (crash mid-write) is ignored. */
export function parseJournal(text: string, path = ''): JournalEntry | undefined {
  let entry: JournalEntry | undefined;
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    let rec: JournalRecord;
    try {
      rec = JSON.parse(line) as JournalRecord;
    } catch {
      continue;
    }
    if (rec.t === 'begin') {
      entry = {
        opId: rec.opId,
        op: rec.op,
        instance: rec.instance,
        pid: rec.pid,
        startedAt: rec.at,
        data: rec.data ?? {},
        intents: [],
        done: [],
        details: {},
        path,
      };
    } else if (entry) {
      if (rec.t === 'intent') entry.intents.push({ step: rec.step, resource: rec.resource });
      else if (rec.t === 'done') {
        entry.done.push(rec.step);
        if (rec.detail) entry.details[rec.step] = rec.detail;
      } else if (rec.t === 'end') entry.end = rec.status;
    }
  }
  return entry;
}

/** Whether a process with this pid is alive (signal 0). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
