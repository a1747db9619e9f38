// What the SIGKILL tests share: a seeded PRNG for the kill points, and the reader of a driver
// child's JSON-lines stdout.
import type { Readable } from 'node:stream';

/**
 * The seed of a randomised test (`EPHEMERA_REL_SEED` replays one) and a mulberry32 PRNG over it:
 * small, fast and the same sequence on every Node version.
 */
export function seededRandom(): { seed: number; rand: () => number } {
  const seed = Number(process.env.EPHEMERA_REL_SEED ?? Date.now() % 2 ** 31);
  let a = seed;
  const rand = (): number => {
    a |= 0;
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return { seed, rand };
}

/**
 * Reads a child's stdout as JSON lines: each parsed line goes to `onLine` (a line that is not JSON
 * is someone else's output and only kept in the text). Returns the whole text read so far.
 */
export function readJsonLines(stream: Readable, onLine: (value: Record<string, unknown>) => void): () => string {
  let out = '';
  let buf = '';
  stream.on('data', (d) => {
    out += String(d);
    buf += String(d);
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      let value: Record<string, unknown>;
      try {
        value = JSON.parse(line);
      } catch {
        continue;
      }
      onLine(value);
    }
  });
  return () => out;
}
