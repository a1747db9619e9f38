// The files of a keystone-less glance-api: the dev stack's Glance (glance.mjs) and the private
// Glance some tests start (packages/glance/test/support/private-glance.ts) write them from here.
// Pure text: no I/O, node built-ins only (it runs before npm ci).
import { join } from 'node:path';

/**
 * The paste pipeline. `context`: `unauthenticated` (every request is an admin: the stack) or
 * `headers` (identity from trusted X-* headers: ContextMiddleware without auth_token).
 */
export function glancePasteIni({ context, healthcheckDisablePath }) {
  const filter =
    context === 'headers'
      ? ['context', 'ContextMiddleware']
      : context === 'unauthenticated'
        ? ['unauthenticated-context', 'UnauthenticatedContextMiddleware']
        : undefined;
  if (!filter) throw new Error(`glancePasteIni: context is 'headers' or 'unauthenticated', not ${String(context)}`);
  return `[pipeline:glance-api]
pipeline = healthcheck versionnegotiation ${filter[0]} rootapp

[composite:rootapp]
paste.composite_factory = glance.api:root_app_factory
/: apiversions
/v2: apiv2app

[app:apiversions]
paste.app_factory = glance.api.versions:create_resource

[app:apiv2app]
paste.app_factory = glance.api.v2.router:API.factory

[filter:healthcheck]
paste.filter_factory = oslo_middleware:Healthcheck.factory
backends = disable_by_file
disable_by_file_path = ${healthcheckDisablePath}

[filter:versionnegotiation]
paste.filter_factory = glance.api.middleware.version_negotiation:VersionNegotiationFilter.factory

[filter:${filter[0]}]
paste.filter_factory = glance.api.middleware.context:${filter[1]}.factory
`;
}

/**
 * The three files (name -> text) of a glance-api whose config lives in `dir`: glance-api.conf,
 * glance-api-paste.ini and policy.yaml. `defaults` are more [DEFAULT] lines (log_file...),
 * `sections` the store sections, each a text starting with its `[name]` line.
 */
export function glanceConfigFiles({ header, host, port, dir, db, defaults = [], sections = [], context }) {
  const conf = [
    ...(header ? [header] : []),
    '[DEFAULT]',
    `bind_host = ${host}`,
    `bind_port = ${port}`,
    'workers = 0',
    'show_image_direct_url = True',
    'show_multiple_locations = True',
    ...defaults,
    '',
    '[database]',
    `connection = sqlite:///${db}`,
    '',
    ...sections.flatMap((s) => [s.trimEnd(), '']),
    '[oslo_concurrency]',
    `lock_path = ${join(dir, 'lock')}`,
    '',
    '[paste_deploy]',
    `config_file = ${join(dir, 'glance-api-paste.ini')}`,
    '',
    '[oslo_policy]',
    `policy_file = ${join(dir, 'policy.yaml')}`,
    '',
  ].join('\n');
  return {
    'glance-api.conf': conf,
    'glance-api-paste.ini': glancePasteIni({ context, healthcheckDisablePath: join(dir, 'healthcheck_disable') }),
    'policy.yaml': '"publicize_image": ""\n',
  };
}
