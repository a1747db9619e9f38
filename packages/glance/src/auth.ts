/**
 * Token providers. The client asks its provider for a token before each request and sends it as
 * `X-Auth-Token`; on a 401 it calls `invalidate()` (when present) and retries once with a fresh
 * token. Tokens never appear in errors or logs.
 */
import { GlanceAuthError, GlanceConnectionError, GlanceHttpError } from './errors.js';

/** Supplies the `X-Auth-Token` for Glance requests. */
export interface TokenProvider {
  /** The token to send, or `undefined` to send none (keystone-less Glance). */
  token(signal?: AbortSignal): Promise<string | undefined>;
  /** Forget a cached token (called after Glance answered 401). */
  invalidate?(): void;
  /** Extra request headers (e.g. trusted identity headers); never logged. */
  headers?(): Record<string, string>;
}

/** Keystone-less Glance (`unauthenticated-context` pipeline): sends no token. */
export class NoAuth implements TokenProvider {
  async token(): Promise<undefined> {
    return undefined;
  }
}

/** Options of {@link IdentityHeaders}. */
export interface IdentityHeadersOptions {
  projectId: string;
  userId: string;
  /** Roles, e.g. `['admin', 'member']`. */
  roles: string[];
}

/**
 * Keystone-less Glance whose pipeline uses `ContextMiddleware` without `auth_token` (a trusted
 * front end vouches for the caller): sends `X-Identity-Status: Confirmed`, `X-Project-Id`,
 * `X-User-Id` and `X-Roles`. Unlike the `unauthenticated-context` pipeline this gives requests an
 * owner, which Glance's tasks (the copy-image import) need.
 */
export class IdentityHeaders implements TokenProvider {
  readonly #h: Record<string, string>;
  constructor(opts: IdentityHeadersOptions) {
    for (const v of [opts.projectId, opts.userId, ...opts.roles])
      if (!/^[\w.@-]+$/.test(v)) throw new TypeError(`IdentityHeaders: bad value ${JSON.stringify(v)}`);
    this.#h = {
      'x-identity-status': 'Confirmed',
      'x-project-id': opts.projectId,
      'x-tenant-id': opts.projectId,
      'x-user-id': opts.userId,
      'x-roles': opts.roles.join(','),
    };
  }
  async token(): Promise<undefined> {
    return undefined;
  }
  headers(): Record<string, string> {
    return { ...this.#h };
  }
}

/** A fixed token (e.g. from `openstack token issue`). */
export class StaticToken implements TokenProvider {
  readonly #token: string;
  constructor(token: string) {
    if (!token) throw new TypeError('StaticToken needs a non-empty token');
    this.#token = token;
  }
  async token(): Promise<string> {
    return this.#token;
  }
  /** Never prints the token. */
  toJSON(): string {
    return 'StaticToken(***)';
  }
}

/** Options of {@link KeystoneTokenProvider} (password auth, Identity v3, project scope). */
export interface KeystonePasswordOptions {
  /** Identity endpoint, e.g. `http://keystone:5000/v3`. */
  authUrl: string;
  username: string;
  password: string;
  userDomainName?: string;
  projectName: string;
  projectDomainName?: string;
  /** Refresh this many ms before `expires_at`. Default 60 000. */
  refreshMarginMs?: number;
  /** Request timeout. Default 10 000 ms. */
  timeoutMs?: number;
}

/**
 * Keystone v3 password authentication: `POST {authUrl}/auth/tokens`, token from the
 * `X-Subject-Token` header, cached until shortly before `expires_at`.
 */
export class KeystoneTokenProvider implements TokenProvider {
  readonly #opts: KeystonePasswordOptions;
  #cached?: { token: string; expiresAt: number };
  #pending?: Promise<string>;

  constructor(opts: KeystonePasswordOptions) {
    this.#opts = opts;
  }

  async token(signal?: AbortSignal): Promise<string> {
    const margin = this.#opts.refreshMarginMs ?? 60_000;
    if (this.#cached && this.#cached.expiresAt - margin > Date.now()) return this.#cached.token;
    this.#pending ??= this.#issue(signal).finally(() => {
      this.#pending = undefined;
    });
    return this.#pending;
  }

  invalidate(): void {
    this.#cached = undefined;
  }

  async #issue(signal?: AbortSignal): Promise<string> {
    const o = this.#opts;
    const url = `${o.authUrl.replace(/\/+$/, '')}/auth/tokens`;
    const body = {
      auth: {
        identity: {
          methods: ['password'],
          password: {
            user: { name: o.username, domain: { name: o.userDomainName ?? 'Default' }, password: o.password },
          },
        },
        scope: { project: { name: o.projectName, domain: { name: o.projectDomainName ?? 'Default' } } },
      },
    };
    const timeout = AbortSignal.timeout(o.timeoutMs ?? 10_000);
    let res: Response;
    try {
      res = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json' },
        body: JSON.stringify(body),
        signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
      });
    } catch (err) {
      throw new GlanceConnectionError(`Keystone ${url} unreachable: ${(err as Error).message}`, { cause: err });
    }
    const text = await res.text();
    if (res.status === 401 || res.status === 403) throw new GlanceAuthError(res.status, 'POST', '/auth/tokens', text);
    if (res.status !== 201 && res.status !== 200) throw new GlanceHttpError(res.status, 'POST', '/auth/tokens', text);
    const token = res.headers.get('x-subject-token');
    if (!token) throw new GlanceHttpError(res.status, 'POST', '/auth/tokens', 'no X-Subject-Token header');
    let expiresAt = Date.now() + 3_600_000;
    try {
      const parsed = JSON.parse(text) as { token?: { expires_at?: string } };
      const t = parsed.token?.expires_at ? Date.parse(parsed.token.expires_at) : NaN;
      if (Number.isFinite(t)) expiresAt = t;
    } catch {
      /* keep the default lifetime */
    }
    this.#cached = { token, expiresAt };
    return token;
  }

  /** Never prints the password or token. */
  toJSON(): string {
    return `KeystoneTokenProvider(${this.#opts.username}@${this.#opts.authUrl})`;
  }
}
