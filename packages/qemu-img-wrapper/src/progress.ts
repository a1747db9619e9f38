/**
 * Parses qemu-img's `-p` progress output, `    (12.34/100%)\r`, from arbitrary chunks (a record
 * may be split anywhere). Emits only increasing values in [0, 100].
 */
export class ProgressParser {
  private carry = '';
  private last = -1;

  /** The last value emitted, or -1. */
  get percent(): number {
    return this.last;
  }

  /** Feeds output text; returns the new, strictly increasing percentages it contained. */
  feed(text: string): number[] {
    const data = this.carry + text;
    const out: number[] = [];
    const re = /\((\d{1,3}(?:\.\d+)?)\/100%\)/g;
    let m: RegExpExecArray | null;
    let consumed = 0;
    while ((m = re.exec(data)) !== null) {
      consumed = m.index + m[0].length;
      const v = Math.min(100, Number(m[1]));
      if (Number.isFinite(v) && v > this.last) {
        this.last = v;
        out.push(v);
      }
    }
    // Keep only what could be the start of a record split across chunks.
    const rest = data.slice(consumed);
    const open = rest.lastIndexOf('(');
    this.carry = open >= 0 && rest.length - open < 32 ? rest.slice(open) : '';
    return out;
  }

  /** Marks completion: returns `[100]` unless 100 was already emitted. */
  finish(): number[] {
    if (this.last >= 100) return [];
    this.last = 100;
    return [100];
  }
}
