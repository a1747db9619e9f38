import { LibvirtXmlError } from './errors.js';

/** An element of the generated document. Attributes keep their insertion order. */
export interface XmlElement {
  readonly name: string;
  readonly attrs: ReadonlyArray<readonly [string, string]>;
  readonly children: ReadonlyArray<XmlElement | string>;
}

/** Attribute values: `undefined` means "omit the attribute". */
export type XmlAttrs = Record<string, string | number | undefined>;

const NAME_RE = /^[A-Za-z_][A-Za-z0-9_.:-]*$/;

/** Makes an element; children that are `undefined`/`false` are dropped. */
export function el(
  name: string,
  attrs: XmlAttrs = {},
  children: ReadonlyArray<XmlElement | string | undefined | false> = [],
): XmlElement {
  if (!NAME_RE.test(name)) throw new Error(`internal: bad element name ${name}`);
  const a: [string, string][] = [];
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined) continue;
    if (!NAME_RE.test(k)) throw new Error(`internal: bad attribute name ${k}`);
    a.push([k, String(v)]);
  }
  return { name, attrs: a, children: children.filter((c): c is XmlElement | string => c !== undefined && c !== false) };
}

/**
 * Characters refused in every value: C0 controls (tab, CR and LF included: no libvirt name,
 * path or id needs them and they are normalised away in attributes), DEL, C1 controls, lone
 * surrogates and the non-characters U+FFFE/U+FFFF (not allowed in XML 1.0 at all).
 */
function hasLoneSurrogate(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff) {
      const n = s.charCodeAt(i + 1);
      if (!(n >= 0xdc00 && n <= 0xdfff)) return true;
      i++;
    } else if (c >= 0xdc00 && c <= 0xdfff) {
      return true;
    }
  }
  return false;
}
// eslint-disable-next-line no-control-regex
const CONTROL_RE = /[\u0000-\u001f\u007f-\u009f\ufffe\uffff]/;

/**
 * Checks a free-form string value (a name, a path): a non-empty string without forbidden
 * characters. Markup characters (`<`, `&`, quotes) are allowed: they are escaped on output.
 */
export function checkString(
  value: unknown,
  field: string,
  options: { maxLength?: number; allowEmpty?: boolean } = {},
): string {
  if (typeof value !== 'string')
    throw new LibvirtXmlError('INVALID_VALUE', field, `expected a string, got ${typeof value}`);
  if (!options.allowEmpty && value.length === 0) throw new LibvirtXmlError('MISSING_VALUE', field, 'must not be empty');
  if (CONTROL_RE.test(value) || hasLoneSurrogate(value)) {
    throw new LibvirtXmlError('INVALID_VALUE', field, 'contains control characters or invalid unicode');
  }
  const max = options.maxLength ?? 4096;
  if (value.length > max) throw new LibvirtXmlError('INVALID_VALUE', field, `longer than ${max} characters`);
  return value;
}

/** Checks `value` against a pattern (for identifiers whose alphabet libvirt restricts). */
export function checkPattern(value: unknown, field: string, re: RegExp, what: string): string {
  if (typeof value !== 'string' || !re.test(value)) {
    const shown = typeof value === 'string' ? JSON.stringify(value.slice(0, 64)) : String(value);
    throw new LibvirtXmlError('INVALID_VALUE', field, `${shown} is not ${what}`);
  }
  return value;
}

/** Checks that `value` is one of `allowed`. */
export function checkEnum<const T extends string>(value: unknown, field: string, allowed: readonly T[]): T {
  if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) {
    throw new LibvirtXmlError(
      'INVALID_VALUE',
      field,
      `must be one of ${allowed.join(', ')}, got ${JSON.stringify(value)}`,
    );
  }
  return value as T;
}

/** Checks an integer in `[min, max]`. */
export function checkInt(value: unknown, field: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
    throw new LibvirtXmlError('INVALID_VALUE', field, `must be an integer in ${min}..${max}, got ${String(value)}`);
  }
  return value;
}

/** Escapes text content (`&`, `<`, `>`). */
export function escapeText(s: string): string {
  return s.replace(/[&<>]/g, (c) => (c === '&' ? '&amp;' : c === '<' ? '&lt;' : '&gt;'));
}

/** Escapes an attribute value for either quote style. */
export function escapeAttr(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' })[c]!);
}

function assertSafe(s: string, where: string): void {
  // Last line of defence: builders already checked every value with a field name.
  if (CONTROL_RE.test(s) || hasLoneSurrogate(s))
    throw new LibvirtXmlError('INVALID_VALUE', where, 'contains control characters or invalid unicode');
}

/** Serialises an element tree, two-space indented, single-quoted attributes (as libvirt writes). */
export function serialize(root: XmlElement, indent = 0): string {
  const pad = '  '.repeat(indent);
  const attrs = root.attrs
    .map(([k, v]) => {
      assertSafe(v, `@${k}`);
      return ` ${k}='${escapeAttr(v)}'`;
    })
    .join('');
  if (root.children.length === 0) return `${pad}<${root.name}${attrs}/>\n`;
  if (root.children.every((c) => typeof c === 'string')) {
    const text = (root.children as string[]).join('');
    assertSafe(text, root.name);
    return `${pad}<${root.name}${attrs}>${escapeText(text)}</${root.name}>\n`;
  }
  const inner = root.children
    .map((c) => {
      if (typeof c === 'string') throw new Error('internal: mixed content is not generated');
      return serialize(c, indent + 1);
    })
    .join('');
  return `${pad}<${root.name}${attrs}>\n${inner}${pad}</${root.name}>\n`;
}
