/**
 * Who may read the metrics: the caller's bearer token is authenticated with a TokenReview and the
 * user it names must be allowed `get` on the endpoint's nonResourceURL (/node-metrics or
 * /cluster-metrics) by a SubjectAccessReview: what kubebuilder's secure metrics (controller-runtime
 * `filters.WithAuthenticationAndAuthorization`) and kube-rbac-proxy do. RBAC grants it with a
 * ClusterRole rule `nonResourceURLs: [/node-metrics], verbs: [get]` (config/rbac metrics-reader).
 *
 * Decisions are cached per (token, path) for `ttlMs` (default 10 s, the apiserver's delegating
 * authn/authz cache TTL) so a Prometheus scraping every 15 s costs two API calls per scrape at
 * most and a burst of requests one; revoking access takes effect within ttlMs. A failed review (API
 * server down) is not cached and answers 503: unknown is not allowed.
 * Effects: the two review calls (injected) and the clock.
 */
import { createHash } from 'node:crypto';
import { formatError, kubeApi, type KubeSource } from '../framework/kube.js';

export interface ReviewedUser {
  username: string;
  uid?: string;
  groups?: string[];
  extra?: Record<string, string[]>;
}

export interface ReviewApi {
  /** TokenReview: the user behind `token`, or undefined when not authenticated. */
  tokenReview(token: string): Promise<ReviewedUser | undefined>;
  /** SubjectAccessReview for `get` on nonResourceURL `path`. */
  canGet(user: ReviewedUser, path: string): Promise<boolean>;
}

export type Decision = { code: 200; user: string } | { code: 401 | 403 | 503; reason: string };

export interface AuthorizerOptions {
  api: ReviewApi;
  now?: () => number;
  ttlMs?: number;
  /** Bound on cached decisions; the cache is emptied when full (cheap, and bounded memory). */
  maxEntries?: number;
}

export class MetricsAuthorizer {
  private readonly cache = new Map<string, { at: number; d: Decision }>();
  private readonly now: () => number;
  private readonly ttlMs: number;
  private readonly maxEntries: number;

  constructor(private readonly o: AuthorizerOptions) {
    this.now = o.now ?? Date.now;
    this.ttlMs = o.ttlMs ?? 10_000;
    this.maxEntries = o.maxEntries ?? 1000;
  }

  /** `authorization` is the request's Authorization header. */
  async authorize(authorization: string | undefined, path: string): Promise<Decision> {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? '');
    if (!m) return { code: 401, reason: 'no bearer token' };
    const token = m[1]!;
    // Keep no token in memory longer than the request: the cache is keyed by its hash.
    const key = `${createHash('sha256').update(token).digest('base64')} ${path}`;
    const hit = this.cache.get(key);
    if (hit && this.now() - hit.at < this.ttlMs) return hit.d;
    let d: Decision;
    try {
      const user = await this.o.api.tokenReview(token);
      if (!user) d = { code: 401, reason: 'token not authenticated' };
      else if (await this.o.api.canGet(user, path)) d = { code: 200, user: user.username };
      else d = { code: 403, reason: `user "${user.username}" may not get ${path}` };
    } catch (err) {
      return { code: 503, reason: `authorization unavailable: ${formatError(err)}` };
    }
    if (this.cache.size >= this.maxEntries) this.cache.clear();
    this.cache.set(key, { at: this.now(), d });
    return d;
  }
}

interface TokenReviewStatus {
  status?: { authenticated?: boolean; user?: { username?: string; uid?: string; groups?: string[]; extra?: Record<string, string[]> } };
}

/** TokenReview + SubjectAccessReview as plain JSON requests (needs create on both: config/rbac). */
export function kubeReviewApi(src: KubeSource): ReviewApi {
  const api = kubeApi(src);
  return {
    async tokenReview(token) {
      const r = await api.request<TokenReviewStatus>('POST', '/apis/authentication.k8s.io/v1/tokenreviews', {
        body: { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token } },
      });
      const s = r?.status;
      if (!s?.authenticated || !s.user?.username) return undefined;
      return { username: s.user.username, ...(s.user.uid ? { uid: s.user.uid } : {}), groups: s.user.groups ?? [], ...(s.user.extra ? { extra: s.user.extra } : {}) };
    },
    async canGet(user, path) {
      const r = await api.request<{ status?: { allowed?: boolean } }>('POST', '/apis/authorization.k8s.io/v1/subjectaccessreviews', {
        body: {
          apiVersion: 'authorization.k8s.io/v1',
          kind: 'SubjectAccessReview',
          spec: { user: user.username, uid: user.uid, groups: user.groups, extra: user.extra, nonResourceAttributes: { path, verb: 'get' } },
        },
      });
      return r?.status?.allowed === true;
    },
  };
}
