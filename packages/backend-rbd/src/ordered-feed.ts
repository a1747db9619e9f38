/**
 * Turns reads of an image at any offsets (qemu-img's, while it converts) into the image's bytes
 * in order, for the hash check: one read of the source serves both. Bytes read ahead of the
 * in-order cursor (a qcow2's L2 tables, read before the data) are kept until the cursor reaches
 * them, up to `maxAheadBytes`; what is never read, or was dropped, the feed reads itself when
 * {@link OrderedFeed.selfRead} is on (before qemu-img starts: the inspector's head; after it
 * finished: the rest). Offered buffers are not copied while in order: callers must not reuse them.
 */
export class OrderedFeed {
  /** Bytes passed on in order so far. */
  cursor = 0;
  /** Bytes the feed read itself (gaps nobody else read). */
  selfReadBytes = 0;
  private readonly ahead = new Map<number, Buffer>();
  private aheadBytes = 0;
  private readonly queue: Buffer[] = [];
  private wake: (() => void) | undefined;
  private failure: { error: unknown } | undefined;
  private self = true;

  constructor(
    readonly size: number,
    /** Reads `length` bytes at `offset` of the image (fewer only at its end). */
    private readonly readAt: (offset: number, length: number) => Promise<Buffer>,
    private readonly opts: { blockBytes: number; maxAheadBytes: number },
  ) {}

  /** Whether the consumer's demand makes the feed read the next missing bytes itself. */
  get selfRead(): boolean {
    return this.self;
  }

  set selfRead(on: boolean) {
    this.self = on;
    this.notify();
  }

  /** Bytes of the image read at `offset` by someone else (qemu-img). */
  offer(offset: number, bytes: Buffer): void {
    const end = offset + bytes.length;
    if (this.failure || end <= this.cursor || bytes.length === 0) return;
    if (offset <= this.cursor) {
      this.push(bytes.subarray(this.cursor - offset));
      this.absorb();
      return;
    }
    const held = this.ahead.get(offset);
    if (held && held.length >= bytes.length) return;
    if (this.aheadBytes - (held?.length ?? 0) + bytes.length > this.opts.maxAheadBytes) return; // read again later
    this.ahead.set(offset, Buffer.from(bytes));
    this.aheadBytes += bytes.length - (held?.length ?? 0);
  }

  /** Ends the feed with `error` (the consumer's next read throws it). */
  fail(error: unknown): void {
    if (this.failure) return;
    this.failure = { error };
    this.ahead.clear();
    this.aheadBytes = 0;
    this.notify();
  }

  /** The image's bytes in order, from byte 0 to `size`; consumed once. */
  async *chunks(): AsyncGenerator<Uint8Array> {
    for (;;) {
      if (this.failure) throw this.failure.error;
      const next = this.queue.shift();
      if (next) {
        yield next;
        continue;
      }
      if (this.cursor >= this.size) return;
      if (this.self) {
        await this.readGap();
        continue;
      }
      await new Promise<void>((r) => (this.wake = r));
    }
  }

  /** Reads the next missing bytes (up to the next piece held ahead, at most one block). */
  private async readGap(): Promise<void> {
    let until = this.size;
    for (const at of this.ahead.keys()) if (at > this.cursor && at < until) until = at;
    const at = this.cursor;
    const len = Math.min(this.opts.blockBytes, until - at);
    let bytes: Buffer;
    try {
      bytes = await this.readAt(at, len);
    } catch (e) {
      this.fail(e);
      throw e;
    }
    this.selfReadBytes += bytes.length;
    if (bytes.length === 0) {
      this.fail(new Error(`the image ended at ${at} bytes, before its size (${this.size})`));
      return;
    }
    this.offer(at, bytes);
  }

  /** Passes on the pieces held ahead that the cursor has reached. */
  private absorb(): void {
    for (let moved = true; moved && this.ahead.size > 0; ) {
      moved = false;
      for (const [at, piece] of this.ahead) {
        if (at > this.cursor) continue;
        this.ahead.delete(at);
        this.aheadBytes -= piece.length;
        if (at + piece.length > this.cursor) this.push(piece.subarray(this.cursor - at));
        moved = true;
      }
    }
  }

  private push(bytes: Buffer): void {
    const room = this.size - this.cursor;
    const b = bytes.length > room ? bytes.subarray(0, room) : bytes;
    if (b.length === 0) return;
    this.queue.push(b);
    this.cursor += b.length;
    this.notify();
  }

  private notify(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }
}
