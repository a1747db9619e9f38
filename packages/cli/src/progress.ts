/** A progress bar on stderr (a TTY redraws one line; otherwise a line every 10 %). */
export class ProgressBar {
  readonly #out: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  readonly #label: string;
  #lastTenth = -1;
  #drawn = false;
  #enabled: boolean;

  constructor(
    label: string,
    out: NodeJS.WritableStream & { isTTY?: boolean; columns?: number } = process.stderr,
    enabled = true,
  ) {
    this.#out = out;
    this.#label = label;
    this.#enabled = enabled;
  }

  /** Shows `percent` (0..100) with an optional byte count. */
  update(percent: number, detail = ''): void {
    if (!this.#enabled) return;
    const p = Math.max(0, Math.min(100, Math.floor(percent)));
    if (this.#out.isTTY) {
      const width = 30;
      const full = Math.round((p / 100) * width);
      this.#out.write(
        `\r${this.#label} [${'#'.repeat(full)}${' '.repeat(width - full)}] ${String(p).padStart(3)}% ${detail}\x1b[K`,
      );
      this.#drawn = true;
    } else {
      const tenth = Math.floor(p / 10);
      if (tenth !== this.#lastTenth) {
        this.#lastTenth = tenth;
        this.#out.write(`${this.#label} ${p}% ${detail}\n`);
      }
    }
  }

  /** Ends the bar's line. */
  done(): void {
    if (this.#drawn) this.#out.write('\n');
    this.#drawn = false;
  }
}

/** Human size. */
export function bytes(n: number | undefined): string {
  if (n === undefined || !Number.isFinite(n)) return '?';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}
