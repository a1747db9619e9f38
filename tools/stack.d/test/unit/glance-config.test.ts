// The one keystone-less glance-api config, shared by the dev stack's Glance and the tests' private Glance.
import { describe, expect, it } from 'vitest';
import { glanceConfigFiles, glancePasteIni } from '../../../lib/stack/glance-config.mjs';

describe('glance-config', () => {
  const files = glanceConfigFiles({
    host: '127.0.0.1',
    port: 9292,
    dir: '/g',
    db: '/g/glance.sqlite',
    defaults: ['log_file = /g/api.log'],
    sections: ['[glance_store]\ndefault_backend = fast\n', '[fast]\nfilesystem_store_datadir = /g/fast'],
    context: 'headers',
  });

  it('glance-api.conf: [DEFAULT] with the extra lines, the database, the given sections, then the fixed ones', () => {
    const conf = files['glance-api.conf'];
    expect(conf.startsWith('[DEFAULT]\nbind_host = 127.0.0.1\nbind_port = 9292\nworkers = 0\n')).toBe(true);
    expect(conf).toContain('show_multiple_locations = True\nlog_file = /g/api.log\n\n[database]\n');
    expect(conf).toContain('connection = sqlite:////g/glance.sqlite\n');
    const order = ['[glance_store]', '[fast]', '[oslo_concurrency]', '[paste_deploy]', '[oslo_policy]'].map((s) =>
      conf.indexOf(`\n${s}\n`),
    );
    expect(order.every((at) => at > 0)).toBe(true);
    expect([...order].sort((a, b) => a - b)).toEqual(order);
    expect(conf).toContain('lock_path = /g/lock\n');
    expect(conf).toContain('config_file = /g/glance-api-paste.ini\n');
    expect(conf.endsWith('policy_file = /g/policy.yaml\n')).toBe(true);
    expect(files['policy.yaml']).toBe('"publicize_image": ""\n');
  });

  it('the paste pipeline takes identity from headers or makes everyone admin, as asked', () => {
    const headers = files['glance-api-paste.ini'];
    expect(headers).toContain('pipeline = healthcheck versionnegotiation context rootapp\n');
    expect(headers).toContain(
      '[filter:context]\npaste.filter_factory = glance.api.middleware.context:ContextMiddleware.factory\n',
    );
    expect(headers).toContain('disable_by_file_path = /g/healthcheck_disable\n');
    const open = glancePasteIni({ context: 'unauthenticated', healthcheckDisablePath: '/s/off' });
    expect(open).toContain('pipeline = healthcheck versionnegotiation unauthenticated-context rootapp\n');
    expect(open).toContain(
      '[filter:unauthenticated-context]\npaste.filter_factory = glance.api.middleware.context:UnauthenticatedContextMiddleware.factory\n',
    );
    expect(() => glancePasteIni({ context: 'keystone' as never, healthcheckDisablePath: '/x' })).toThrow(/context/);
  });
});
