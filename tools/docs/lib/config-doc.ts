/**
 * Renders the option reference of docs/configuration.md from the driver's config schema
 * (`CONFIG_SCHEMA` of `@ephemera/driver`), so the page cannot drift from the code: the docs test
 * regenerates it and fails when the committed page differs.
 */

/** What the generator needs of one option (the shape of the driver's `OptionSpec`). */
export interface OptionDoc {
  /** Dotted key, e.g. `images.rbd.pool`. */
  readonly key: string;
  readonly type: string;
  readonly description: string;
  readonly default: string | number | boolean | readonly string[] | undefined;
  /** Environment variable that sets it. */
  readonly env: string;
  /** Equivalent Nova option, e.g. `[libvirt] images_rbd_pool`. */
  readonly nova?: string | undefined;
  /** Allowed values of an `enum`. */
  readonly values?: readonly string[] | undefined;
  readonly min?: number | undefined;
  readonly max?: number | undefined;
  /** Never printed or logged. */
  readonly secret?: boolean | undefined;
}

/** Section titles by key prefix (the key without its last part); others use the prefix. */
const SECTIONS: Record<string, string> = {
  '': 'Driver',
  images: 'Image backends (all)',
  'images.rbd': 'RBD backend (`images.type = rbd`)',
  'images.lvm': 'LVM backend (`images.type = lvm`)',
  'images.qcow2': 'qcow2 backend (`images.type = qcow2`)',
  glance: 'Glance',
  libvirt: 'libvirt',
  disk: 'Instance disks',
  qos: 'Disk QoS',
  timeouts: 'Timeouts',
  log: 'Logging',
};

function prefixOf(key: string): string {
  const i = key.lastIndexOf('.');
  return i < 0 ? '' : key.slice(0, i);
}

function code(s: string): string {
  return s.includes('`') ? `\`\` ${s} \`\`` : `\`${s}\``;
}

function formatDefault(d: OptionDoc['default']): string {
  if (d === undefined) return 'unset';
  if (Array.isArray(d)) return d.length ? code(d.join(',')) : 'empty list';
  return code(String(d));
}

function formatType(o: OptionDoc): string {
  if (o.values?.length) return `one of ${o.values.map(code).join(', ')}`;
  let t = o.type === 'string[]' ? 'list of strings (comma separated in the environment)' : o.type;
  if (o.min !== undefined && o.max !== undefined) t += `, ${o.min}..${o.max}`;
  else if (o.min !== undefined) t += `, >= ${o.min}`;
  else if (o.max !== undefined) t += `, <= ${o.max}`;
  return t;
}

function cell(s: string): string {
  return s.replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

/** The generated part of docs/configuration.md (Markdown, ends with a newline). */
export function renderConfigReference(schema: readonly OptionDoc[]): string {
  const groups = new Map<string, OptionDoc[]>();
  for (const o of schema) {
    const p = prefixOf(o.key);
    if (!groups.has(p)) groups.set(p, []);
    groups.get(p)!.push(o);
  }
  const out: string[] = [];
  out.push(`${schema.length} options.`, '');
  for (const [prefix, options] of groups) {
    out.push(`### ${SECTIONS[prefix] ?? code(prefix)}`, '');
    for (const o of options) {
      out.push(`#### ${code(o.key)}`, '');
      out.push(o.description.trim(), '');
      out.push(`- type: ${formatType(o)}`);
      out.push(`- default: ${formatDefault(o.default)}`);
      out.push(`- environment: ${code(o.env)}`);
      out.push(`- Nova: ${o.nova ? code(o.nova) : 'none'}`);
      if (o.secret) out.push('- secret: never printed or logged');
      out.push('');
    }
  }
  const nova = schema.filter((o) => o.nova);
  out.push('### Nova equivalents', '');
  out.push('| Nova | Ephemera | default |', '| --- | --- | --- |');
  for (const o of [...nova].sort((a, b) => (a.nova! < b.nova! ? -1 : a.nova! > b.nova! ? 1 : 0))) {
    out.push(`| ${cell(code(o.nova!))} | ${cell(code(o.key))} | ${cell(formatDefault(o.default))} |`);
  }
  out.push('');
  return out.join('\n');
}

export const BEGIN_GENERATED =
  '<!-- BEGIN GENERATED: config reference (tools/docs; edit the driver schema, not this) -->';
export const END_GENERATED = '<!-- END GENERATED -->';

/** `page` with the text between the generated markers replaced by `reference`. */
export function withReference(page: string, reference: string): string {
  const a = page.indexOf(BEGIN_GENERATED);
  const b = page.indexOf(END_GENERATED);
  if (a < 0 || b < a) throw new Error('docs/configuration.md lacks the generated-section markers');
  return page.slice(0, a + BEGIN_GENERATED.length) + '\n\n' + reference + '\n' + page.slice(b);
}
