// Test helpers: a strict little XML parser (enough for what the generator emits) and
// virt-xml-validate (libvirt's own RelaxNG schemas, from libvirt-clients + xmllint).
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface Node {
  name: string;
  attrs: [string, string][];
  children: Node[];
  text: string;
}

const ENTITIES: Record<string, string> = { lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" };

function decode(s: string, where: string): string {
  if (/[<]/.test(s)) throw new Error(`raw '<' in ${where}`);
  return s.replace(/&([^;]*);|&/g, (m, ent: string | undefined) => {
    if (ent === undefined) throw new Error(`bare '&' in ${where}`);
    if (ent in ENTITIES) return ENTITIES[ent]!;
    const num = /^#x([0-9a-fA-F]+)$/.exec(ent) ?? /^#([0-9]+)$/.exec(ent);
    if (num) return String.fromCodePoint(parseInt(num[1]!, ent.startsWith('#x') ? 16 : 10));
    throw new Error(`unknown entity ${m} in ${where}`);
  });
}

/**
 * Parses a document strictly: one root, balanced tags, quoted attributes, no duplicate
 * attributes, no raw `<`/`&` in values, no mixed content, no processing instructions,
 * comments, CDATA or DOCTYPE (the generator emits none, so seeing one means injection).
 */
export function parseXml(xml: string): Node {
  let i = 0;
  const NAME = /[A-Za-z_][A-Za-z0-9_.:-]*/y;
  const ws = () => {
    while (i < xml.length && /\s/.test(xml[i]!)) i++;
  };
  const name = (): string => {
    NAME.lastIndex = i;
    const m = NAME.exec(xml);
    if (!m) throw new Error(`expected a name at ${i}: ${JSON.stringify(xml.slice(i, i + 20))}`);
    i += m[0].length;
    return m[0];
  };
  const element = (): Node => {
    if (xml[i] !== '<') throw new Error(`expected '<' at ${i}`);
    i++;
    if (/[!?/]/.test(xml[i] ?? '')) throw new Error(`unexpected markup '<${xml[i]}' at ${i}`);
    const node: Node = { name: name(), attrs: [], children: [], text: '' };
    for (;;) {
      const before = i;
      ws();
      if (xml.startsWith('/>', i)) {
        i += 2;
        return node;
      }
      if (xml[i] === '>') {
        i++;
        break;
      }
      if (i === before) throw new Error(`expected whitespace before attribute at ${i}`);
      const an = name();
      if (node.attrs.some(([k]) => k === an)) throw new Error(`duplicate attribute ${an}`);
      if (xml[i] !== '=') throw new Error(`expected '=' at ${i}`);
      i++;
      const q = xml[i];
      if (q !== '"' && q !== "'") throw new Error(`expected a quote at ${i}`);
      const end = xml.indexOf(q, i + 1);
      if (end < 0) throw new Error('unterminated attribute');
      node.attrs.push([an, decode(xml.slice(i + 1, end), `@${an}`)]);
      i = end + 1;
    }
    // content
    let text = '';
    for (;;) {
      const lt = xml.indexOf('<', i);
      if (lt < 0) throw new Error(`unterminated <${node.name}>`);
      text += xml.slice(i, lt);
      i = lt;
      if (xml.startsWith('</', i)) {
        i += 2;
        const close = name();
        if (close !== node.name) throw new Error(`</${close}> closes <${node.name}>`);
        ws();
        if (xml[i] !== '>') throw new Error(`expected '>' at ${i}`);
        i++;
        break;
      }
      node.children.push(element());
    }
    if (node.children.length > 0) {
      if (text.trim() !== '') throw new Error(`mixed content in <${node.name}>: ${JSON.stringify(text)}`);
    } else {
      node.text = decode(text, `<${node.name}>`);
    }
    return node;
  };
  ws();
  const root = element();
  ws();
  if (i !== xml.length) throw new Error(`trailing content at ${i}`);
  return root;
}

/** Element names and attribute names, recursively: the shape of a tree without its values. */
export function shape(n: Node): unknown {
  return [n.name, n.attrs.map(([k]) => k), n.children.map(shape)];
}

/** First descendant (depth-first) with that name. */
export function find(n: Node, name: string): Node | undefined {
  if (n.name === name) return n;
  for (const c of n.children) {
    const f = find(c, name);
    if (f) return f;
  }
  return undefined;
}

export function attr(n: Node | undefined, k: string): string | undefined {
  return n?.attrs.find(([a]) => a === k)?.[1];
}

/** Validates documents with `virt-xml-validate FILE domain`; returns the failures' output. */
export async function validateDomains(docs: string[]): Promise<string[]> {
  const dir = await mkdtemp(join(tmpdir(), 'ephemera-xml-'));
  try {
    const failures: string[] = [];
    // A few at a time: the machine has 2 cores shared with other work.
    for (let k = 0; k < docs.length; k += 4) {
      await Promise.all(
        docs.slice(k, k + 4).map(async (doc, j) => {
          const file = join(dir, `d${k + j}.xml`);
          await writeFile(file, doc);
          try {
            await run('virt-xml-validate', [file, 'domain'], { timeout: 30_000 });
          } catch (err) {
            const e = err as { stdout?: string; stderr?: string; message: string };
            failures.push(`${doc}\n--> ${e.stderr || e.stdout || e.message}`);
          }
        }),
      );
    }
    return failures;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
