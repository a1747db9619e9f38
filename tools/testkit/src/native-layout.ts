/**
 * Layout rules for the native addons (issue 17, item 6), checked by each addon's unit tests:
 * - every C++ file under `native/` stays at or below `maxLines` lines;
 * - binding.gyp's `sources` lists exactly the `.cc` files under `native/`;
 * - every JS-visible function or method the addon registers has a `//` doc line right above its
 *   definition naming the C function it wraps (`Implements rbd_clone3().`, `See virX().`), or
 *   saying `Binding only` when it calls none; a named C function must be used (outside comments) in the sources;
 * - every TypeScript method that calls into the addon carries the same note in its JSDoc.
 * Each check returns human-readable problems (an empty list when the rules hold).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export interface NativeSource {
  file: string;
  lines: string[];
}

const NOTE = /\b(?:Implements|See) ((?:[A-Za-z_]\w*\(\)(?:,\s*|\s+and\s+|\s*\+\s*)?)+)/;
const BINDING_ONLY = /\bBinding only\b/;

/** The TypeScript files under `dir` and its subfolders (`file` relative to `dir`), for per-package layout tests. */
export function typeScriptSources(dir: string): NativeSource[] {
  return readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith('.ts'))
    .sort()
    .map((f) => ({ file: f, lines: readFileSync(join(dir, f), 'utf8').replace(/\n$/, '').split('\n') }));
}

/** The C/C++ sources and headers under `<pkgDir>/native`. */
export function nativeSources(pkgDir: string): NativeSource[] {
  const dir = join(pkgDir, 'native');
  return readdirSync(dir)
    .filter((f) => /\.(cc|cpp|h|hpp)$/.test(f))
    .sort()
    .map((f) => ({ file: f, lines: readFileSync(join(dir, f), 'utf8').replace(/\n$/, '').split('\n') }));
}

/** Files longer than `maxLines`. */
export function oversizedFiles(sources: NativeSource[], maxLines: number): string[] {
  return sources
    .filter((s) => s.lines.length > maxLines)
    .map((s) => `${s.file}: ${s.lines.length} lines (max ${maxLines})`);
}

/** Differences between binding.gyp's first target's `sources` and the `.cc` files in native/. */
export function gypSourceProblems(pkgDir: string, sources: NativeSource[]): string[] {
  const gyp = JSON.parse(readFileSync(join(pkgDir, 'binding.gyp'), 'utf8')) as { targets: { sources: string[] }[] };
  const listed = new Set(gyp.targets[0]?.sources ?? []);
  const present = new Set(sources.filter((s) => /\.(cc|cpp)$/.test(s.file)).map((s) => `native/${s.file}`));
  return [
    ...[...present].filter((f) => !listed.has(f)).map((f) => `${f} is not in binding.gyp sources`),
    ...[...listed].filter((f) => !present.has(f)).map((f) => `binding.gyp lists ${f}, which does not exist`),
  ];
}

/** Source text without `//` comments, to tell a real call from a mention in a comment. */
function code(sources: NativeSource[]): string {
  return sources.map((s) => s.lines.map((l) => l.replace(/\/\/.*$/, '')).join('\n')).join('\n');
}

/** Problems with a doc note (`Implements f().`): missing, or naming a function the sources never call. */
function noteProblems(where: string, doc: string, calls: string): string[] {
  if (BINDING_ONLY.test(doc)) return [];
  const m = NOTE.exec(doc);
  if (!m) return [`${where}: no "Implements <c_function>()" / "See <c_function>()" / "Binding only" note`];
  const names = [...m[1].matchAll(/([A-Za-z_]\w*)\(\)/g)].map((x) => x[1]);
  // A mention outside comments (a call, or a function pointer handed to a shared helper).
  return names
    .filter((n) => !new RegExp(`\\b${n}\\b`).test(calls))
    .map((n) => `${where}: names ${n}(), which the native sources never use`);
}

/** A JS-visible entry point of the addon: the C++ function and the name JavaScript sees. */
interface Registration {
  cls?: string;
  fn: string;
  js: string;
}

function registrations(all: string): Registration[] {
  const out: Registration[] = [];
  for (const m of all.matchAll(/InstanceMethod<&(\w+)::(\w+)>\("(\w+)"\)/g))
    out.push({ cls: m[1], fn: m[2], js: m[3] });
  for (const m of all.matchAll(/exports\.Set\("(\w+)",\s*Napi::Function::New\(env,\s*(\w+)/g))
    out.push({ fn: m[2], js: m[1] });
  return out;
}

/**
 * Every registered function/method: its definition (`Napi::Value Cls::Fn(const Napi::CallbackInfo&`
 * for a class method, `Napi::Value Fn(const Napi::CallbackInfo&` for a module function) must be
 * preceded by `//` lines holding the note. Also fails when nothing is registered at all.
 */
export function nativeDocProblems(sources: NativeSource[]): string[] {
  const all = sources.map((s) => s.lines.join('\n')).join('\n');
  const calls = code(sources);
  const regs = registrations(all);
  if (regs.length === 0) return ['no registered function found in native/'];
  const problems: string[] = [];
  for (const r of regs) {
    const name = r.cls ? `${r.cls}::${r.fn}` : r.fn;
    const def = new RegExp(
      `^\\s*(?:static\\s+)?Napi::Value\\s+${r.cls ? `${r.cls}::` : ''}${r.fn}\\(const Napi::CallbackInfo&(?!.*;\\s*$)`,
    );
    const found = sources.flatMap((s) => s.lines.map((l, i) => ({ s, i, l })).filter((x) => def.test(x.l)));
    if (found.length !== 1) {
      problems.push(
        `${r.js} (${name}): ${found.length} definitions of the form "Napi::Value ${name}(const Napi::CallbackInfo&"`,
      );
      continue;
    }
    const { s, i } = found[0]!;
    const doc: string[] = [];
    for (let j = i - 1; j >= 0 && /^\s*\/\//.test(s.lines[j]!); j--) doc.unshift(s.lines[j]!);
    problems.push(...noteProblems(`${r.js} (${name}, ${s.file}:${i + 1})`, doc.join('\n'), calls));
  }
  return problems;
}

/**
 * Every TypeScript member in `tsFile` whose body calls the addon (`callPattern`, a regex whose
 * first group is the native method) must carry the note in the JSDoc right above it.
 */
export function tsDocProblems(tsFile: string, callPattern: RegExp, sources: NativeSource[]): string[] {
  const lines = readFileSync(tsFile, 'utf8').split('\n');
  const calls = code(sources);
  // A member (two-space indent) or exported function header: `name(...)...{` at the end of the line.
  const header =
    /^(?:export\s+(?:async\s+)?function\s+\w+| {2}(?!(?:if|for|while|switch|catch|return|await|const|let)\b)(?:(?:static|async|get|set)\s+)*[A-Za-z_]\w*\s*(?:<[^>]*>)?\(.*\{\s*$)/;
  const seen = new Set<number>();
  const problems: string[] = [];
  lines.forEach((line, i) => {
    if (!new RegExp(callPattern.source).test(line)) return;
    let h = i;
    while (h >= 0 && !header.test(lines[h]!)) h--;
    if (h < 0 || seen.has(h)) return;
    seen.add(h);
    const doc: string[] = [];
    if (/\*\/\s*$/.test(lines[h - 1] ?? '')) {
      for (let j = h - 1; j >= 0; j--) {
        doc.unshift(lines[j]!);
        if (/^\s*\/\*\*/.test(lines[j]!)) break;
      }
    }
    problems.push(
      ...noteProblems(`${tsFile.split('/').slice(-3).join('/')}:${h + 1} ${lines[h]!.trim()}`, doc.join('\n'), calls),
    );
  });
  if (seen.size === 0) problems.push(`${tsFile}: no call into the addon found`);
  return problems;
}
