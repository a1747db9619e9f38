// Types of glance-config.mjs, for the TypeScript tests that start a private Glance.
export function glancePasteIni(options: {
  context: 'headers' | 'unauthenticated';
  healthcheckDisablePath: string;
}): string;
export function glanceConfigFiles(options: {
  /** A comment line put first. */
  header?: string;
  host: string;
  port: number;
  /** Where the config files (and the `lock` dir) live. */
  dir: string;
  /** The sqlite database file. */
  db: string;
  defaults?: readonly string[];
  sections?: readonly string[];
  context: 'headers' | 'unauthenticated';
}): Record<'glance-api.conf' | 'glance-api-paste.ini' | 'policy.yaml', string>;
