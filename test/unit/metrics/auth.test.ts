/** Metrics authorization (TokenReview + SubjectAccessReview, cached) and the HTTPS endpoint, with a fake review API. */
import { expect } from 'chai';
import { request } from 'node:https';
import type { Server } from 'node:http';
import { Registry, Gauge } from 'prom-client';
import { MetricsAuthorizer, type ReviewApi } from '../../../operator/src/metrics/auth.js';
import { selfSignedCert } from '../../../operator/src/metrics/cert.js';
import { serveMetrics } from '../../../operator/src/metrics/serve.js';

function fakeApi(): ReviewApi & { calls: string[]; down: boolean } {
  const api = {
    calls: [] as string[],
    down: false,
    async tokenReview(token: string) {
      api.calls.push(`tr ${token}`);
      if (api.down) throw new Error('connect ECONNREFUSED');
      return token === 'reader' || token === 'nobody' ? { username: `user-${token}`, groups: ['g'] } : undefined;
    },
    async canGet(user: { username: string }, path: string) {
      api.calls.push(`sar ${user.username} ${path}`);
      return user.username === 'user-reader' && path === '/node-metrics';
    },
  };
  return api;
}

describe('metrics authorization', () => {
  it('401 without or with an unknown token, 403 without the RBAC grant, 200 with it', async () => {
    const a = new MetricsAuthorizer({ api: fakeApi() });
    expect((await a.authorize(undefined, '/node-metrics')).code).to.equal(401);
    expect((await a.authorize('Basic abc', '/node-metrics')).code).to.equal(401);
    expect((await a.authorize('Bearer forged', '/node-metrics')).code).to.equal(401);
    expect(await a.authorize('Bearer nobody', '/node-metrics')).to.deep.include({ code: 403 });
    expect(await a.authorize('Bearer reader', '/node-metrics')).to.deep.equal({ code: 200, user: 'user-reader' });
    expect((await a.authorize('Bearer reader', '/cluster-metrics')).code).to.equal(403);
  });

  it('caches decisions for ttlMs per token and path; API failures answer 503 and are not cached', async () => {
    let now = 0;
    const api = fakeApi();
    const a = new MetricsAuthorizer({ api, now: () => now, ttlMs: 10_000 });
    await a.authorize('Bearer reader', '/node-metrics');
    await a.authorize('Bearer reader', '/node-metrics');
    expect(api.calls).to.have.length(2);
    now = 10_000;
    api.down = true;
    expect((await a.authorize('Bearer reader', '/node-metrics')).code).to.equal(503);
    api.down = false;
    expect((await a.authorize('Bearer reader', '/node-metrics')).code).to.equal(200);
    expect(api.calls).to.have.length(5);
  });
});

describe('metrics endpoint over HTTPS', () => {
  let server: Server | undefined;
  after(() => server?.close());

  const get = (port: number, path: string, token?: string) =>
    new Promise<{ code: number; body: string }>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, path, rejectUnauthorized: false, headers: token ? { authorization: `Bearer ${token}` } : {} }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ code: res.statusCode ?? 0, body }));
      });
      req.on('error', reject);
      req.end();
    });

  it('serves a self-signed certificate and metrics only to an authorized caller', async function () {
    this.timeout(20_000);
    const registry = new Registry();
    new Gauge({ name: 'npm_test_gauge', help: 'x', registers: [registry] }).set(3);
    server = await serveMetrics({ host: '127.0.0.1', port: 0, path: '/node-metrics', registry, tls: selfSignedCert(['localhost', '127.0.0.1']), authorizer: new MetricsAuthorizer({ api: fakeApi() }) });
    const port = (server.address() as { port: number }).port;
    expect((await get(port, '/node-metrics')).code).to.equal(401);
    expect((await get(port, '/node-metrics', 'nobody')).code).to.equal(403);
    const ok = await get(port, '/node-metrics', 'reader');
    expect(ok.code).to.equal(200);
    expect(ok.body).to.match(/^npm_test_gauge 3$/m);
    // no probes on the secure listener: they live on their own port
    expect((await get(port, '/healthz')).code).to.equal(404);
  });
});

describe('startEndpoints: secure by default, plain HTTP only when asked', () => {
  const plain = (port: number, path: string) => fetch(`http://127.0.0.1:${port}${path}`).then(async (r) => ({ code: r.status, body: await r.text() }));
  const registry = () => {
    const r = new Registry();
    new Gauge({ name: 'npm_test_gauge', help: 'x', registers: [r] }).set(1);
    return r;
  };

  it('secure: HTTPS metrics refuse an anonymous caller; probes on a separate plain-HTTP port', async function () {
    this.timeout(20_000);
    const { KubeConfig } = await import('@kubernetes/client-node');
    const { startEndpoints } = await import('../../../operator/src/metrics/serve.js');
    const kc = new KubeConfig();
    kc.loadFromOptions({ clusters: [{ name: 'c', server: 'https://127.0.0.1:1' }], users: [{ name: 'u' }], contexts: [{ name: 'x', cluster: 'c', user: 'u' }], currentContext: 'x' });
    const e = await startEndpoints({ kc, secure: true, metrics: { host: '127.0.0.1', port: 0 }, path: '/node-metrics', registry: registry(), probes: { '/healthz': () => true, '/readyz': () => false }, log: () => undefined });
    try {
      expect(e.healthPort).to.not.equal(e.metricsPort);
      expect(e.summary).to.match(/https, token \+ SubjectAccessReview, self-signed certificate/);
      expect((await plain(e.healthPort, '/healthz')).code).to.equal(200);
      expect((await plain(e.healthPort, '/readyz')).code).to.equal(503);
      expect((await plain(e.healthPort, '/node-metrics')).code).to.equal(404);
      const anon = await new Promise<number>((resolve, reject) => {
        request({ host: '127.0.0.1', port: e.metricsPort, path: '/node-metrics', rejectUnauthorized: false }, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        })
          .on('error', reject)
          .end();
      });
      expect(anon).to.equal(401);
    } finally {
      e.close();
    }
  });

  it('--metrics-secure=false: one plain-HTTP listener with metrics and probes', async () => {
    const { KubeConfig } = await import('@kubernetes/client-node');
    const { startEndpoints } = await import('../../../operator/src/metrics/serve.js');
    const e = await startEndpoints({ kc: new KubeConfig(), secure: false, metrics: { host: '127.0.0.1', port: 0 }, path: '/node-metrics', registry: registry(), probes: { '/healthz': () => true }, log: () => undefined });
    try {
      expect(e.healthPort).to.equal(e.metricsPort);
      expect((await plain(e.metricsPort, '/node-metrics')).body).to.match(/^npm_test_gauge 1$/m);
      expect((await plain(e.metricsPort, '/healthz')).code).to.equal(200);
    } finally {
      e.close();
    }
  });
});
