// Metrics security (issue #9 item 8) against a real API server: the operator and an agent run as
// processes of the built CLI with their own ServiceAccount tokens and config/rbac applied, serving
// metrics in the default (secure) mode. Scrapes use real ServiceAccount tokens: none -> 401, a token
// without the grant -> 403, a token bound to kube-npm-metrics-reader -> 200 with npm_ metrics. The
// probes answer without credentials on their own port, which serves nothing else.
import { expect } from 'chai';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startControlPlane, type ControlPlane } from '../support/controlplane.js';
import { kubectlOk, REPO, startCli, waitFor, type Proc } from '../support/e2e.js';
import { createCluster, type Cluster } from '../kernel/harness/cluster.js';

const isRoot = process.getuid?.() === 0;
const NS = 'kube-npm-system';

interface Reply {
  code: number;
  body: string;
}

function get(url: string, token?: string): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const send = u.protocol === 'https:' ? httpsRequest : (httpRequest as typeof httpsRequest);
    const req = send(u, { rejectUnauthorized: false, headers: token ? { authorization: `Bearer ${token}` } : {}, timeout: 10_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ code: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.end();
  });
}

describe('metrics over HTTPS with token authorization (e2e)', function () {
  this.timeout(0);
  let cp: ControlPlane | undefined;
  let cluster: Cluster | undefined;
  const procs: Proc[] = [];
  const tokens: Record<string, string> = {};
  const ports: Record<string, { metrics: number; health: number }> = {};

  /** A kubeconfig for ServiceAccount `sa`: the processes run with their own install's rights. */
  const kubeconfigFor = (sa: string, token: string): string => {
    const path = join(cp!.dir, `kubeconfig-${sa}`);
    writeFileSync(
      path,
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'Config',
        clusters: [{ name: 'c', cluster: { server: cp!.server, 'certificate-authority-data': Buffer.from(cp!.caPem).toString('base64') } }],
        users: [{ name: sa, user: { token } }],
        contexts: [{ name: 'x', context: { cluster: 'c', user: sa } }],
        'current-context': 'x',
      }),
      { mode: 0o600 },
    );
    return path;
  };
  const token = async (sa: string) => (await kubectlOk(cp!, ['-n', NS, 'create', 'token', sa, '--duration=1h'])).trim();
  const endpointsOf = (p: Proc, path: string) =>
    waitFor(`${p.name} serving ${path}`, async () => {
      const m = new RegExp(`serving ${path} on 127\\.0\\.0\\.1:(\\d+) \\(https[^)]*\\); /healthz, /readyz on 127\\.0\\.0\\.1:(\\d+)`).exec(readFileSync(p.log, 'utf8'));
      return m ? { metrics: Number(m[1]), health: Number(m[2]) } : undefined;
    });

  before(async function () {
    if (!isRoot) {
      console.warn('      !!! SKIPPED: e2e needs root (network namespaces, iptables)');
      this.skip();
    }
    cp = await startControlPlane({ log: () => undefined });
    await kubectlOk(cp, ['create', 'namespace', NS]);
    await kubectlOk(cp, ['apply', '-f', '-'], await kubectlOk(cp, ['kustomize', join(REPO, 'config/rbac')]));
    for (const sa of ['prometheus', 'nobody']) await kubectlOk(cp, ['-n', NS, 'create', 'serviceaccount', sa]);
    await kubectlOk(cp, ['create', 'clusterrolebinding', 'prometheus-kube-npm', '--clusterrole=kube-npm-metrics-reader', `--serviceaccount=${NS}:prometheus`]);
    for (const sa of ['kube-npm-operator', 'kube-npm-agent', 'prometheus', 'nobody']) tokens[sa] = await token(sa);
    cluster = await createCluster({ nodes: 1, pods: [{ name: 'x/a', node: 1, ip: '10.244.1.10' }] });
    const as = (sa: string) => ({ ...cp!, kubeconfigPath: kubeconfigFor(sa, tokens[sa]!) });
    const op = startCli(as('kube-npm-operator'), 'operator', ['operator', '--leader-elect=false', '--metrics-bind-address', '127.0.0.1:0']);
    const agent = startCli(as('kube-npm-agent'), 'agent-n1', ['agent', '--node-name', 'n1', '--netns', cluster.nodeNs(1), '--metrics-bind-address', '127.0.0.1:0']);
    procs.push(op, agent);
    ports.operator = await endpointsOf(op, '/cluster-metrics');
    ports.agent = await endpointsOf(agent, '/node-metrics');
  });

  after(async () => {
    for (const p of procs) await p.stop().catch(() => undefined);
    await cluster?.destroy();
    await cp?.stop();
  });

  for (const [who, path] of [['agent', '/node-metrics'], ['operator', '/cluster-metrics']] as const) {
    describe(`${who} ${path}`, () => {
      const url = () => `https://127.0.0.1:${ports[who]!.metrics}${path}`;

      it('HTTPS without a token (or with a forged one): 401', async () => {
        expect((await get(url())).code).to.equal(401);
        expect((await get(url(), 'not-a-token')).code).to.equal(401);
      });

      it('plain HTTP on the metrics port gets no metrics', async () => {
        const r = await get(`http://127.0.0.1:${ports[who]!.metrics}${path}`).catch((e: unknown) => ({ code: -1, body: String(e) }));
        expect(r.code).to.not.equal(200);
        expect(r.body).to.not.match(/npm_/);
      });

      it("a real ServiceAccount token without the metrics-reader grant: 403 (also the workloads' own)", async () => {
        expect((await get(url(), tokens.nobody)).code).to.equal(403);
        expect((await get(url(), tokens['kube-npm-agent'])).code).to.equal(403);
      });

      it('a token bound to kube-npm-metrics-reader: 200 with npm_ metrics', async () => {
        const r = await waitFor('metrics', async () => {
          const x = await get(url(), tokens.prometheus);
          return x.code === 200 ? x : undefined;
        }, 30_000, 200);
        expect(r.body).to.match(/^npm_num_policies \d+$/m);
      });

      it('health answers on its own port without auth, and serves nothing else', async () => {
        const h = `http://127.0.0.1:${ports[who]!.health}`;
        expect(ports[who]!.health).to.not.equal(ports[who]!.metrics);
        expect((await get(`${h}/healthz`)).code).to.equal(200);
        await waitFor('ready', async () => (await get(`${h}/readyz`)).code === 200);
        expect((await get(`${h}${path}`)).code).to.equal(404);
      });
    });
  }
});
