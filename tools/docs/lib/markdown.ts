/**
 * Markdown helpers of the docs test: fenced code blocks with the marker comment in front of
 * them, `#region` extraction from source files, relative links and heading anchors.
 *
 * Markers (an HTML comment on the line(s) right before a fence, blank lines allowed):
 * - `<!-- include: path/from/repo/root.ts#region -->`: the block is a copy of that region of the
 *   file (`// #region name` ... `// #endregion name`, marker lines of nested regions dropped,
 *   common indentation removed); without `#region`, the whole file.
 * - `<!-- example: run -->`: the block is typechecked and executed.
 * - `<!-- example: typecheck -->`: the block is typechecked (needs real services to run).
 * - `<!-- example: sketch -->`: an outline that is not valid on its own (declarations elided);
 *   not checked. Use sparingly.
 */

export type Marker =
  | { kind: 'include'; path: string; region?: string }
  | { kind: 'run' }
  | { kind: 'typecheck' }
  | { kind: 'sketch' };

export interface CodeBlock {
  /** The info string's first word (`ts`, `js`, `sh`...). */
  lang: string;
  /** The content between the fences (no trailing newline). */
  code: string;
  /** 1-based line of the opening fence. */
  line: number;
  /** 0-based index of the first content line and of the closing fence (for rewriting). */
  from: number;
  to: number;
  marker?: Marker;
}

const MARKER_RE = /<!--\s*(include|example):\s*([^>]*?)\s*-->/;

function parseMarker(text: string): Marker | undefined {
  const m = MARKER_RE.exec(text);
  if (!m) return undefined;
  const [, kind, arg] = m;
  if (kind === 'include') {
    const [path, region] = arg!.split('#');
    return region ? { kind: 'include', path: path!, region } : { kind: 'include', path: path! };
  }
  if (arg === 'run' || arg === 'typecheck' || arg === 'sketch') return { kind: arg };
  throw new Error(`unknown example marker: ${m[0]}`);
}

/** Every fenced code block (``` or ~~~) of a document, with its marker when there is one. */
export function codeBlocks(markdown: string): CodeBlock[] {
  const blocks: CodeBlock[] = [];
  const lines = markdown.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)(`{3,}|~{3,})\s*([\w+-]*)/.exec(lines[i]!);
    if (!open) continue;
    const fence = open[2]!;
    let j = i + 1;
    while (j < lines.length && !lines[j]!.trimStart().startsWith(fence)) j++;
    // The marker: the nearest non-blank line above the fence, if it is a comment.
    let k = i - 1;
    while (k >= 0 && lines[k]!.trim() === '') k--;
    const marker = k >= 0 ? parseMarker(lines[k]!) : undefined;
    blocks.push({
      lang: open[3] ?? '',
      code: lines.slice(i + 1, j).join('\n'),
      line: i + 1,
      from: i + 1,
      to: j,
      ...(marker ? { marker } : {}),
    });
    i = j;
  }
  return blocks;
}

const REGION_RE = /^\s*(?:\/\/|#)\s*#(end)?region\b\s*(\S*)/;

/**
 * The lines of `source` between `#region name` and `#endregion name`, without marker lines
 * of other regions, common indentation removed. Throws when the region is missing or unclosed.
 */
export function extractRegion(source: string, name: string): string {
  const lines = source.split('\n');
  const begin = lines.findIndex((l) => {
    const m = REGION_RE.exec(l);
    return m !== null && !m[1] && m[2] === name;
  });
  if (begin < 0) throw new Error(`region '${name}' not found`);
  const end = lines.findIndex((l, i) => {
    if (i <= begin) return false;
    const m = REGION_RE.exec(l);
    return m !== null && m[1] === 'end' && m[2] === name;
  });
  if (end < 0) throw new Error(`region '${name}' is not closed`);
  return dedent(lines.slice(begin + 1, end).filter((l) => !REGION_RE.test(l)));
}

/** A whole file without region marker lines and trailing newline. */
export function wholeFile(source: string): string {
  return source
    .split('\n')
    .filter((l) => !REGION_RE.test(l))
    .join('\n')
    .replace(/\n+$/, '');
}

function dedent(lines: string[]): string {
  const indents = lines.filter((l) => l.trim() !== '').map((l) => /^ */.exec(l)![0].length);
  const cut = indents.length ? Math.min(...indents) : 0;
  return lines
    .map((l) => l.slice(cut))
    .join('\n')
    .replace(/\n+$/, '');
}

export interface Link {
  target: string;
  line: number;
}

/** Inline links and images `[text](target)` outside code blocks and inline code. */
export function links(markdown: string): Link[] {
  const out: Link[] = [];
  let inFence: string | undefined;
  markdown.split('\n').forEach((line, i) => {
    const fence = /^\s*(`{3,}|~{3,})/.exec(line);
    if (fence) {
      if (inFence === undefined) inFence = fence[1]!;
      else if (line.trim().startsWith(inFence)) inFence = undefined;
      return;
    }
    if (inFence !== undefined) return;
    const text = line.replace(/`[^`]*`/g, '');
    for (const m of text.matchAll(/!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)) {
      out.push({ target: m[1]!, line: i + 1 });
    }
  });
  return out;
}

/** GitHub's anchor of a heading: lower case, punctuation dropped, spaces to dashes. */
export function slug(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/`/g, '')
    .replace(/[^\p{L}\p{N}\s_-]/gu, '')
    .replace(/\s/g, '-');
}

/** The anchors of a document's headings (duplicates get `-1`, `-2`... as on GitHub). */
export function anchors(markdown: string): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  let inFence: string | undefined;
  for (const line of markdown.split('\n')) {
    const fence = /^\s*(`{3,}|~{3,})/.exec(line);
    if (fence) {
      if (inFence === undefined) inFence = fence[1]!;
      else if (line.trim().startsWith(inFence)) inFence = undefined;
      continue;
    }
    if (inFence !== undefined) continue;
    const h = /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (!h) continue;
    const base = slug(h[1]!.replace(/\[([^\]]*)\]\([^)]*\)/g, '$1'));
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    out.add(n === 0 ? base : `${base}-${n}`);
  }
  return out;
}

/** `markdown` with the content of each given block replaced (blocks from {@link codeBlocks}). */
export function replaceBlocks(markdown: string, replacements: { block: CodeBlock; code: string }[]): string {
  const lines = markdown.split('\n');
  for (const { block, code } of [...replacements].sort((a, b) => b.block.from - a.block.from)) {
    lines.splice(block.from, block.to - block.from, ...code.split('\n'));
  }
  return lines.join('\n');
}
