// config/grafana and config/prometheus against the metrics the project really serves: every metric
// the dashboard queries is registered in operator/src/metrics/*.ts (with the suffixes its type
// exposes), and the scrape jobs name the paths and ports serve.ts and the CLI use.
import { expect } from 'chai';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { Registry } from 'prom-client';
import { createClusterMetrics } from '../../../operator/src/metrics/cluster.js';
import { createNodeMetrics } from '../../../operator/src/metrics/node.js';

const REPO = fileURLToPath(new URL('../../../', import.meta.url));

/** name -> type, from the real registries (node and cluster), built with inert sources. */
async function servedMetrics(): Promise<Map<string, string>> {
  const node = createNodeMetrics({ exec: () => Promise.resolve({ code: 0, stdout: '', stderr: '' }), backend: 'nft', registry: new Registry() });
  const zero = () => 0;
  const cluster = createClusterMetrics({ policies: zero, rules: zero, ipsets: zero, ipsetEntries: zero, queueDepth: zero, notProgrammed: zero, invalid: zero, isLeader: () => true });
  const out = new Map<string, string>();
  for (const r of [node.registry, cluster.registry]) for (const m of await r.getMetricsAsJSON()) out.set(m.name, String(m.type));
  return out;
}

/** The series names a metric of this type exposes. */
function seriesNames(name: string, type: string): string[] {
  if (type === 'histogram') return [`${name}_bucket`, `${name}_sum`, `${name}_count`];
  if (type === 'summary') return [name, `${name}_sum`, `${name}_count`];
  return [name];
}

const PROMQL_WORDS = new Set([
  'sum', 'max', 'min', 'avg', 'count', 'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'and', 'or', 'unless',
  'rate', 'irate', 'increase', 'delta', 'topk', 'bottomk', 'histogram_quantile', 'label_values', 'offset', 'bool',
]);

/** Metric names in a PromQL expression: identifiers not inside {...} or [...], not functions/keywords/labels in by(). */
export function metricsIn(expr: string): string[] {
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, '')
    .replace(/\[[^\]]*\]/g, '')
    .replace(/\b(by|without|on|ignoring)\s*\([^)]*\)/g, '');
  const names = new Set<string>();
  for (const m of stripped.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*/g)) {
    const id = m[0];
    const after = stripped.slice(m.index + id.length).trimStart();
    if (PROMQL_WORDS.has(id) || after.startsWith('(')) continue;
    names.add(id);
  }
  return [...names];
}

interface Panel {
  type: string;
  title: string;
  targets?: { expr: string }[];
  panels?: Panel[];
}

describe('config/grafana and config/prometheus', () => {
  it('metricsIn() finds metric names, not functions, labels or keywords', () => {
    expect(metricsIn('histogram_quantile(0.99, sum by (le) (rate(a_bucket{job="x", instance=~"$n"}[5m])))')).to.deep.equal(['a_bucket']);
    expect(metricsIn('b{x="y"} and on(pod) c == 1').sort()).to.deep.equal(['b', 'c']);
    expect(metricsIn('topk(20, max by (set_name, set_hash) (npm_ipset_counts{job="j"}))')).to.deep.equal(['npm_ipset_counts']);
  });

  describe('the Grafana dashboard', () => {
    const dash = JSON.parse(readFileSync(join(REPO, 'config/grafana/kube-npm-dashboard.json'), 'utf8')) as {
      uid: string;
      panels: Panel[];
      templating: { list: { name: string; query: unknown; definition?: string }[] };
    };
    const panels = dash.panels.flatMap((p) => [p, ...(p.panels ?? [])]);
    const exprs = panels.flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p.title, expr: t.expr })));

    it('parses, has a uid, and panels with queries', () => {
      expect(dash.uid).to.equal('kube-npm');
      expect(exprs.length).to.be.greaterThan(10);
      const ids = dash.panels.map((p) => (p as unknown as { id: number }).id);
      expect(new Set(ids).size, 'panel ids are unique').to.equal(ids.length);
    });

    it('queries only metrics operator/src/metrics registers', async () => {
      const served = await servedMetrics();
      const series = new Set([...served].flatMap(([n, t]) => seriesNames(n, t)));
      const queried = new Set<string>();
      for (const { panel, expr } of exprs) {
        const names = metricsIn(expr);
        expect(names.length, `${panel}: ${expr}`).to.be.greaterThan(0);
        for (const n of names) {
          // `up` is made by Prometheus for every target it scrapes (the target-health panel), not served.
          if (n === 'up') continue;
          expect(series.has(n), `${panel}: ${n} is not served (${expr})`).to.equal(true);
          queried.add(n);
        }
      }
      const v = dash.templating.list.find((x) => x.name === 'node')!;
      // label_values(METRIC{...}, LABEL): the metric is the first argument.
      for (const n of metricsIn(v.definition!.replace(/,\s*\w+\)\s*$/, ')'))) expect(series.has(n), `variable node: ${n}`).to.equal(true);
      // The panels the install issue asks for.
      for (const m of [
        'npm_num_policies', 'npm_num_iptables_rules', 'npm_num_ipsets', 'npm_num_ipset_entries', 'npm_ipset_counts',
        'npm_add_policy_exec_time', 'npm_add_iptables_rule_exec_time', 'npm_add_ipset_exec_time',
        'kubenpm_sync_duration_seconds_bucket', 'kubenpm_restore_failures_total', 'kubenpm_drift_repairs_total',
      ])
        expect(queried.has(m), m).to.equal(true);
    });

    it('summaries are read with their quantile label, and the source files name every metric', () => {
      for (const { expr } of exprs.filter((e) => /exec_time\b/.test(e.expr))) expect(expr).to.match(/quantile=~"0\.5\|0\.9\|0\.99"/);
      const src = readdirSync(join(REPO, 'operator/src/metrics')).map((f) => readFileSync(join(REPO, 'operator/src/metrics', f), 'utf8')).join('\n');
      for (const { expr } of exprs) for (const n of metricsIn(expr)) expect(src, n).to.include(n.replace(/_(bucket|sum|count)$/, ''));
    });
  });

  describe('the Prometheus scrape jobs', () => {
    const cfg = parse(readFileSync(join(REPO, 'config/prometheus/scrape-configs.yaml'), 'utf8')) as {
      scrape_configs: {
        job_name: string;
        metrics_path: string;
        kubernetes_sd_configs: { role: string; namespaces?: { names: string[] } }[];
        scheme: string;
        tls_config?: { insecure_skip_verify?: boolean; ca_file?: string };
        authorization?: { type?: string; credentials_file?: string };
        relabel_configs: { source_labels?: string[]; regex?: string; action?: string; target_label?: string; replacement?: string }[];
      }[];
    };
    const job = (n: string) => cfg.scrape_configs.find((j) => j.job_name === n)!;
    const cli = (f: string) => readFileSync(join(REPO, 'operator/src/cli', f), 'utf8');

    it('has the two jobs the dashboard reads', () => {
      expect(cfg.scrape_configs.map((j) => j.job_name).sort()).to.deep.equal(['kube-npm-cluster', 'kube-npm-node']);
      const dash = readFileSync(join(REPO, 'config/grafana/kube-npm-dashboard.json'), 'utf8');
      expect(dash).to.include('"query": "kube-npm-cluster"').and.include('"query": "kube-npm-node"');
    });

    it('both jobs scrape over HTTPS with the ServiceAccount token (the endpoints authorize it)', () => {
      for (const j of cfg.scrape_configs) {
        expect(j.scheme, j.job_name).to.equal('https');
        expect(j.tls_config, j.job_name).to.deep.equal({ insecure_skip_verify: true });
        expect(j.authorization, j.job_name).to.deep.equal({ type: 'Bearer', credentials_file: '/var/run/secrets/kubernetes.io/serviceaccount/token' });
      }
      // secure is the default of both CLIs; plain HTTP needs the explicit flag
      expect(cli('operator.ts')).to.include(`secure: f['metrics-secure'] !== false`);
      expect(cli('agent-daemon.ts')).to.include(`secure: f['metrics-secure'] !== 'false'`);
    });

    it('node metrics: /node-metrics on each agent pod (= node) at 10091', () => {
      const j = job('kube-npm-node');
      expect(j.metrics_path).to.equal('/node-metrics');
      expect(cli('agent-daemon.ts')).to.include(`path: '/node-metrics'`).and.include(`'0.0.0.0:10091'`);
      expect(j.kubernetes_sd_configs).to.deep.equal([{ role: 'pod', namespaces: { names: ['kube-npm-system'] } }]);
      expect(j.relabel_configs).to.deep.include({ source_labels: ['__meta_kubernetes_pod_label_app_kubernetes_io_name', '__meta_kubernetes_pod_label_app_kubernetes_io_component'], regex: 'kube-npm;agent', action: 'keep' });
      expect(j.relabel_configs.find((r) => r.target_label === '__address__')?.replacement).to.equal('${1}:10091');
    });

    it('cluster metrics: /cluster-metrics on every endpoint of npm-metrics-cluster-service, port "metrics"', () => {
      const j = job('kube-npm-cluster');
      expect(j.metrics_path).to.equal('/cluster-metrics');
      expect(cli('operator.ts')).to.include(`path: '/cluster-metrics'`).and.include(`'0.0.0.0:10091'`);
      expect(j.kubernetes_sd_configs[0]!.role).to.equal('endpoints');
      expect(j.relabel_configs).to.deep.include({ source_labels: ['__meta_kubernetes_service_name'], regex: 'npm-metrics-cluster-service', action: 'keep' });
      expect(j.relabel_configs).to.deep.include({ source_labels: ['__meta_kubernetes_endpoint_port_name'], regex: 'metrics', action: 'keep' });
      const svc = parse(readFileSync(join(REPO, 'config/manager/service.yaml'), 'utf8')) as { metadata: { name: string }; spec: { ports: { name: string; port: number }[] } };
      expect(svc.metadata.name).to.equal('npm-metrics-cluster-service');
      expect(svc.spec.ports).to.deep.include({ name: 'metrics', port: 10091, targetPort: 'metrics', protocol: 'TCP' });
    });
  });
});
