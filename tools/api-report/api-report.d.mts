// Types of api-report.mjs, for its tests.
export interface PublicPackage {
  folder: string;
  json: { name: string; private?: boolean } & Record<string, unknown>;
}
export interface ApiReportResult {
  name: string;
  /** The report's path relative to the root (undefined when the package is not built). */
  report: string | undefined;
  status: 'ok' | 'updated' | 'changed' | 'missing-dist' | 'error';
  messages: string[];
  /** The changed lines (`- old`, `+ new`) when the report differs. */
  diff: string[];
}
export function publicPackages(root: string): PublicPackage[];
export function runApiReports(options: {
  root: string;
  update?: boolean;
  only?: readonly string[];
  log?: (line: string) => void;
}): { ok: boolean; results: ApiReportResult[] };
