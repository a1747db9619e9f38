/**
 * Builders of config options as zod schemas, and the introspection that reads them back. An
 * option is one zod leaf made by {@link option}: it validates and coerces a value from any layer
 * (environment strings included) and carries its documentation in {@link OPTION_META}. The option
 * tree in `config-schema.ts` is made of these leaves; everything else is derived from it.
 */
import { isUuid } from '@ephemera/image-backend';
import { z } from 'zod';

/** The value types an option can have. */
export type OptionType = 'string' | 'path' | 'url' | 'uuid' | 'integer' | 'boolean' | 'enum' | 'string[]';

/** One option of the schema (the introspection shape of `CONFIG_SCHEMA` and `ephemera config --schema`). */
export interface OptionSpec {
  /** Dotted key, e.g. `images.rbd.pool`. */
  readonly key: string;
  readonly type: OptionType;
  /** What it does (one or two sentences). */
  readonly description: string;
  /** The default (`undefined`: unset unless given). Paths may use `${stateDir}`. */
  readonly default: string | number | boolean | readonly string[] | undefined;
  /** Environment variable that sets it: `EPHEMERA_` + the key in upper snake case. */
  readonly env: string;
  /** The Nova option it corresponds to (`[section] name`), when there is one. */
  readonly nova?: string;
  /** Allowed values (`enum`). */
  readonly values?: readonly string[];
  /** Inclusive bounds (`integer`). */
  readonly min?: number;
  readonly max?: number;
  /** Never printed or logged (tokens, passwords). */
  readonly secret?: boolean;
}

/** What an option's builder is told besides its type. */
export interface OptionDoc {
  /** What it does (one or two sentences). */
  readonly description: string;
  /** The Nova option it corresponds to (`[section] name`). */
  readonly nova?: string;
}

/** The documentation an option leaf carries (registered by the builders of {@link option}). */
type OptionMeta = Omit<OptionSpec, 'key' | 'env' | 'default'>;

/** Where every option leaf's {@link OptionMeta} lives. */
const OPTION_META = z.registry<OptionMeta>();

const CONTROL = /[\0-\x1f\x7f]/;
const TRUE = ['1', 'true', 'yes', 'on'];
const FALSE = ['0', 'false', 'no', 'off'];

/** A string without control characters (the base of every string-like type). */
function text() {
  return z
    .string({ error: (iss) => `expected a string, got ${typeof iss.input}` })
    .refine((s) => !CONTROL.test(s), { error: 'must not contain control characters', abort: true });
}

function nonEmpty() {
  return text().min(1, { error: 'must not be empty' });
}

/** An http(s) URL without credentials; trailing slashes are dropped. */
function url() {
  return text()
    .transform((s) => s.replace(/\/+$/, ''))
    .superRefine((s, ctx) => {
      let u: URL;
      try {
        u = new URL(s);
      } catch {
        ctx.addIssue({ code: 'custom', message: `not a URL: ${JSON.stringify(s)}`, input: s });
        return;
      }
      if (u.protocol !== 'http:' && u.protocol !== 'https:')
        ctx.addIssue({ code: 'custom', message: 'must be an http(s) URL', input: s });
      if (u.username || u.password) ctx.addIssue({ code: 'custom', message: 'must not contain credentials', input: s });
    });
}

/** Integer strings (the environment) become numbers; others stay as given and fail with their own text. */
function integerInput(v: unknown): unknown {
  if (typeof v !== 'string' || !/^-?\d+$/.test(v.trim())) return v;
  const n = Number(v.trim());
  return Number.isSafeInteger(n) ? n : v;
}

function booleanInput(v: unknown): unknown {
  if (typeof v !== 'string') return v;
  const s = v.trim().toLowerCase();
  return TRUE.includes(s) ? true : FALSE.includes(s) ? false : v;
}

/** A comma-separated string (the environment) becomes a list of its non-empty trimmed parts. */
function listInput(v: unknown): unknown {
  if (typeof v !== 'string') return v;
  return v
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

function integer(min: number | undefined, max: number | undefined) {
  const notInteger = (iss: { input?: unknown }): string => `expected an integer, got ${JSON.stringify(iss.input)}`;
  let n = z.number({ error: notInteger }).refine(Number.isSafeInteger, { error: notInteger, abort: true });
  if (min !== undefined) n = n.min(min, { error: `must be >= ${min}` });
  if (max !== undefined) n = n.max(max, { error: `must be <= ${max}` });
  return z.preprocess(integerInput, n);
}

function list() {
  const item = 'expected non-empty strings';
  return z.preprocess(
    listInput,
    z.array(
      z
        .string({ error: item })
        .min(1, { error: item })
        .refine((s) => !CONTROL.test(s), { error: item }),
      { error: 'expected a list of strings' },
    ),
  );
}

/**
 * The option builders: each returns the zod schema of one option, registered with its
 * documentation. Finish each with `.default(value)` or `.optional()` (unset unless given).
 */
export const option = {
  /** A non-empty string. `secret`: never printed or logged. */
  string: (doc: OptionDoc & { readonly secret?: boolean }) =>
    nonEmpty().register(OPTION_META, { type: 'string', ...doc }),
  /** A file or directory; relative paths are resolved, `${stateDir}` is replaced. */
  path: (doc: OptionDoc) => nonEmpty().register(OPTION_META, { type: 'path', ...doc }),
  /** An http(s) URL. */
  url: (doc: OptionDoc) => url().register(OPTION_META, { type: 'url', ...doc }),
  /** A UUID, stored in lower case. */
  uuid: (doc: OptionDoc) =>
    text()
      .refine(isUuid, { error: (iss) => `not a UUID: ${JSON.stringify(iss.input)}` })
      .transform((s) => s.toLowerCase())
      .register(OPTION_META, { type: 'uuid', ...doc }),
  /** A safe integer within the inclusive bounds. */
  integer: (doc: OptionDoc & { readonly min?: number; readonly max?: number }) =>
    integer(doc.min, doc.max).register(OPTION_META, { type: 'integer', ...doc }),
  /** `true`/`false` (the environment also says 1/0, yes/no, on/off). */
  boolean: (doc: OptionDoc) =>
    z
      .preprocess(booleanInput, z.boolean({ error: (iss) => `expected a boolean, got ${JSON.stringify(iss.input)}` }))
      .register(OPTION_META, { type: 'boolean', ...doc }),
  /** One of `values`. */
  enum: <const V extends readonly [string, ...string[]]>(values: V, doc: OptionDoc) =>
    text()
      .pipe(z.enum(values, { error: (iss) => `must be one of ${values.join(', ')}, got ${JSON.stringify(iss.input)}` }))
      .register(OPTION_META, { type: 'enum', values: [...values], ...doc }),
  /** A list of non-empty strings (comma separated in the environment). */
  list: (doc: OptionDoc) => list().register(OPTION_META, { type: 'string[]', ...doc }),
};

/** The environment variable of a dotted key: `EPHEMERA_` + the key in upper snake case. */
export function envName(key: string): string {
  return (
    'EPHEMERA_' +
    key
      .replace(/\./g, '_')
      .replace(/([a-z0-9])([A-Z])/g, '$1_$2')
      .toUpperCase()
  );
}

/** One option as the loader uses it: its introspection record and the schema validating its values. */
export interface OptionLeaf {
  readonly spec: OptionSpec;
  readonly schema: z.core.$ZodType;
}

function isDefaultValue(v: unknown): v is OptionSpec['default'] {
  return (
    v === undefined ||
    ['string', 'number', 'boolean'].includes(typeof v) ||
    (Array.isArray(v) && v.every((s) => typeof s === 'string'))
  );
}

/**
 * Every option of an option tree (nested `z.object`s whose leaves are {@link option}s ending in
 * `.default()` or `.optional()`), in declaration order. A leaf of another shape is a programming
 * error and throws when the module loads.
 */
export function optionLeaves(tree: z.ZodObject, prefix = ''): OptionLeaf[] {
  const out: OptionLeaf[] = [];
  for (const [name, node] of Object.entries(tree.shape)) {
    const key = prefix ? `${prefix}.${name}` : name;
    if (node instanceof z.ZodObject) {
      out.push(...optionLeaves(node, key));
      continue;
    }
    let schema: z.core.$ZodType;
    let def: unknown;
    if (node instanceof z.ZodDefault) {
      schema = node.unwrap();
      def = node.def.defaultValue;
    } else if (node instanceof z.ZodOptional) {
      schema = node.unwrap();
    } else throw new Error(`config option ${key}: end it with .default(value) or .optional()`);
    const meta = OPTION_META.get(schema);
    if (!meta) throw new Error(`config option ${key}: make it with one of the option builders`);
    if (!isDefaultValue(def)) throw new Error(`config option ${key}: unsupported default ${String(def)}`);
    const spec: OptionSpec = Object.freeze({
      key,
      env: envName(key),
      type: meta.type,
      ...(meta.values ? { values: Object.freeze([...meta.values]) } : {}),
      default: Array.isArray(def) ? Object.freeze([...def]) : def,
      ...(meta.min !== undefined ? { min: meta.min } : {}),
      ...(meta.max !== undefined ? { max: meta.max } : {}),
      ...(meta.nova !== undefined ? { nova: meta.nova } : {}),
      ...(meta.secret ? { secret: true } : {}),
      description: meta.description,
    });
    out.push({ spec, schema });
  }
  return out;
}
