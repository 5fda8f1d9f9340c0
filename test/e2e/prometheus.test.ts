// End to end (issue #12 item 6): a real Prometheus scrapes the sandbox (docs/sandbox.md: real
// apiserver, operator, agents programming network namespaces) with config/prometheus/sandbox.yaml,
// and every PromQL query of the shipped Grafana dashboard runs through /api/v1/query: no error, no
// warning, and data. Also what a Prometheus user relies on: every target up; the labelled counters
// exist at 0 before their first increment, so increase() sees the first burst of writes; the
// operator's npm_num_ipsets counts ipBlock sets; npm_ipset_counts names each set by its meaning;
// process and Node.js metrics on every endpoint.
//
// Prometheus is built once by `bash hack/prometheus/build.sh` (cached in ~/.cache/kube-npm); this
// test never builds it: without the binary it fails naming that command. Needs root (the sandbox
// creates network namespaces), like test/e2e/sandbox.test.ts, and says so loudly otherwise.
// Leaves nothing: Prometheus and the sandbox are stopped, their directories removed.
import { expect } from 'chai';
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import { run } from '../support/controlplane.js';
import { REPO, waitFor } from '../support/e2e.js';
import { API_WRITES, RECONCILE_RESULTS } from '../../operator/src/metrics/cluster.js';
import { driftKinds, SYNC_RESULTS } from '../../operator/src/metrics/node.js';

const isRoot = process.getuid?.() === 0;
const NODES = ['n1', 'n2'];

interface Sample {
  metric: Record<string, string>;
  value: [number, string];
}
interface QueryAnswer {
  status: 'success' | 'error';
  errorType?: string;
  error?: string;
  warnings?: string[];
  infos?: string[];
  data?: { resultType: string; result: Sample[] };
}
interface Panel {
  title: string;
  targets?: { expr: string }[];
  panels?: Panel[];
}
interface Dashboard {
  panels: Panel[];
  templating: { list: { name: string; type: string; query: unknown; definition?: string; allValue?: string }[] };
}
interface ScrapeJob {
  job_name: string;
  metrics_path: string;
  static_configs?: { targets: string[]; labels?: Record<string, string> }[];
}
interface SetRef {
  name: string;
  kind: string;
  meaning: string;
}

/** The cached Prometheus binary, or an error naming the build command (hack/prometheus/build.sh NO_BUILD=1). */
async function prometheusBinary(): Promise<string> {
  const r = await run('bash', [join(REPO, 'hack/prometheus/build.sh')], { env: { ...process.env, NO_BUILD: '1' } });
  const bin = r.stdout.trim().split('\n').pop() ?? '';
  if (r.code !== 0 || !existsSync(bin)) throw new Error(`no Prometheus binary: run \`bash hack/prometheus/build.sh\` first (or set PROMETHEUS=/path/prometheus)\n${r.stderr.trim()}`);
  return bin;
}

/** Whether a TCP port is free on 127.0.0.1. */
function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

/** A base port B with B..B+n-1 free (the sandbox serves on B, B+1, B+2): off the defaults, so a sandbox of someone else does not collide. */
async function freePortRange(n: number): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 20_000 + Math.floor(Math.random() * 20_000);
    let ok = true;
    for (let p = base; p < base + n && ok; p++) ok = await portFree(p);
    if (ok) return base;
  }
  throw new Error('no free range of ports on 127.0.0.1');
}

/** The heredoc YAML blocks of docs/sandbox.md, in order (the walkthrough's policies). */
function docPolicies(): string[] {
  const md = readFileSync(join(REPO, 'docs/sandbox.md'), 'utf8');
  return [...md.matchAll(/kubectl apply -f - <<'EOF'\n([\s\S]*?)\nEOF\n/g)].map((m) => m[1]!);
}

/** Egress to an ipBlock with an exception: gives the rulesets an ipBlock set (KNPM-S-... of kind IPBlock). */
const IPBLOCK_POLICY = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: egress-to-cidr
  namespace: other
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress:
  - to:
    - ipBlock:
        cidr: 10.244.0.0/16
        except: [10.244.9.0/24]
`;

describe('Prometheus scrapes the sandbox; every query of the Grafana dashboard answers (e2e)', function () {
  this.timeout(0);
  const root = mkdtempSync('/tmp/kube-npm-prom-e2e-');
  const sbxDir = join(root, 'sandbox');
  let sandbox: { child: ChildProcess; exited: Promise<number | null>; output: () => string } | undefined;
  let kubeconfig = '';
  let kubectlBin = '';
  let prom: ChildProcess | undefined;
  let promUrl = '';
  let base = 0;
  const notes: string[] = [];

  const kubectl = async (args: string[], input?: string): Promise<string> => {
    const r = await run(kubectlBin, args, { env: { ...process.env, KUBECONFIG: kubeconfig }, ...(input !== undefined ? { input } : {}), timeoutMs: 120_000 });
    if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
    return r.stdout;
  };
  const apiGet = async <T>(path: string): Promise<T> => {
    const res = await fetch(`${promUrl}${path}`);
    const body = (await res.json()) as T;
    return body;
  };
  /** An instant query; throws on an error answer. */
  const query = async (q: string): Promise<Sample[]> => {
    const a = await apiGet<QueryAnswer>(`/api/v1/query?query=${encodeURIComponent(q)}`);
    if (a.status !== 'success') throw new Error(`${q}: ${a.errorType}: ${a.error}`);
    return a.data!.result;
  };
  const value = (s: Sample): number => Number(s.value[1]);

  before(async function () {
    if (!isRoot) {
      console.warn('      !!! SKIPPED: the sandbox needs root (network namespaces, iptables)');
      this.skip();
    }
    // First: without Prometheus there is nothing to test (fails, naming the build command).
    const bin = await prometheusBinary();

    // The sandbox, as docs/sandbox.md starts it, on ports of its own.
    base = await freePortRange(1 + NODES.length);
    const t0 = Date.now();
    const env = { ...process.env };
    delete env.NODE_OPTIONS; // the sandbox runs the built CLI, not tsx
    const child = spawn('bash', [join(REPO, 'hack/sandbox.sh'), '--dir', sbxDir, '--metrics-port', String(base)], { cwd: REPO, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr!.on('data', (b: Buffer) => (out += b.toString()));
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    sandbox = { child, exited, output: () => out };
    const died = exited.then((code) => {
      throw new Error(`hack/sandbox.sh exited (${code}) before "sandbox ready"`);
    });
    await Promise.race([waitFor('"sandbox ready"', async () => /^sandbox ready in /m.test(out), 40 * 60_000, 100), died]).catch((err: unknown) => {
      throw new Error(`${String(err)}\n--- output ---\n${out}`);
    });
    died.catch(() => undefined);
    notes.push(`sandbox ready after ${Date.now() - t0} ms`);
    kubeconfig = /export KUBECONFIG=(\S+)/.exec(out)?.[1] ?? '';
    kubectlBin = join(/export PATH=([^:\s]+):\$PATH/.exec(out)?.[1] ?? '', 'kubectl');
    // The endpoints it printed are the ones the scrape config names (operator on base, node k on base+k).
    expect(out).to.contain(`operator metrics 127.0.0.1:${base}/cluster-metrics`);
    NODES.forEach((_, i) => expect(out).to.contain(`127.0.0.1:${base + 1 + i}/node-metrics`));

    // Prometheus with config/prometheus/sandbox.yaml, its ports moved to ours, scraping every second.
    const cfg = parse(readFileSync(join(REPO, 'config/prometheus/sandbox.yaml'), 'utf8')) as { global: Record<string, string>; scrape_configs: ScrapeJob[] };
    cfg.global = { ...cfg.global, scrape_interval: '1s', scrape_timeout: '1s', evaluation_interval: '1s' };
    for (const job of cfg.scrape_configs)
      for (const sc of job.static_configs ?? []) sc.targets = sc.targets.map((t) => t.replace(/:(\d+)$/, (_, p: string) => `:${Number(p) - 10091 + base}`));
    writeFileSync(join(root, 'prometheus.yml'), stringify(cfg));
    let promPort = 0;
    for (let p = base + 10; !promPort; p++) if (await portFree(p)) promPort = p;
    promUrl = `http://127.0.0.1:${promPort}`;
    const log = openSync(join(root, 'prometheus.log'), 'a');
    prom = spawn(bin, [`--config.file=${join(root, 'prometheus.yml')}`, `--storage.tsdb.path=${join(root, 'data')}`, `--web.listen-address=127.0.0.1:${promPort}`], { stdio: ['ignore', log, log] });
    closeSync(log);
    const t1 = Date.now();
    await waitFor('Prometheus /-/ready', async () => prom!.exitCode === null && (await fetch(`${promUrl}/-/ready`).then((r) => r.ok, () => false)), 60_000, 200).catch((err: unknown) => {
      throw new Error(`${String(err)}\n--- prometheus.log ---\n${readFileSync(join(root, 'prometheus.log'), 'utf8').slice(-3000)}`);
    });
    notes.push(`Prometheus ready after ${Date.now() - t1} ms`);
  });

  afterEach(function () {
    if (this.currentTest?.state === 'failed' && existsSync(join(root, 'prometheus.log'))) console.log(`----- prometheus.log (tail)\n${readFileSync(join(root, 'prometheus.log'), 'utf8').slice(-2000)}`);
  });

  after(async () => {
    if (prom && prom.exitCode === null) {
      const gone = new Promise((r) => prom!.once('exit', r));
      prom.kill('SIGTERM');
      const t = setTimeout(() => prom!.kill('SIGKILL'), 10_000);
      await gone;
      clearTimeout(t);
    }
    if (sandbox && sandbox.child.exitCode === null) {
      sandbox.child.kill('SIGTERM');
      await sandbox.exited;
    }
    if (isRoot && existsSync(sbxDir)) {
      const env = { ...process.env };
      delete env.NODE_OPTIONS;
      await run(process.execPath, [join(REPO, 'dist/operator/src/cli/sandbox.js'), 'down', '--dir', sbxDir], { env, timeoutMs: 180_000 });
    }
    rmSync(root, { recursive: true, force: true });
    for (const n of notes) console.log(`      ${n}`);
  });

  it('the scrape config matches the shipped jobs, and every target is up', async () => {
    const shipped = parse(readFileSync(join(REPO, 'config/prometheus/scrape-configs.yaml'), 'utf8')) as { scrape_configs: ScrapeJob[] };
    const sbx = parse(readFileSync(join(REPO, 'config/prometheus/sandbox.yaml'), 'utf8')) as { scrape_configs: ScrapeJob[] };
    const jobs = (c: { scrape_configs: ScrapeJob[] }) => c.scrape_configs.map((j) => `${j.job_name} ${j.metrics_path}`).sort();
    expect(jobs(sbx)).to.deep.equal(jobs(shipped));

    const t0 = Date.now();
    const targets = await waitFor(
      'every target scraped and up',
      async () => {
        const t = await apiGet<{ data: { activeTargets: { labels: Record<string, string>; health: string; lastError: string }[] } }>('/api/v1/targets');
        const active = t.data.activeTargets;
        return active.length === 1 + NODES.length && active.every((a) => a.health === 'up') && active;
      },
      60_000,
      250,
    );
    notes.push(`every target up ${Date.now() - t0} ms after Prometheus started`);
    expect(targets.map((t) => `${t.labels.job} ${t.labels.instance}`).sort()).to.deep.equal(['kube-npm-cluster 127.0.0.1:' + base, ...NODES.map((n) => `kube-npm-node ${n}`)].sort());
    // up == 1 for every target: as the target-health panel reads it.
    const up = await waitFor('up series of every target', async () => ((await query('up == 1')).length === 1 + NODES.length ? query('up') : false), 30_000, 250);
    expect(up.map((s) => `${s.metric.job}/${s.metric.instance}=${s.value[1]}`).sort()).to.deep.equal([`kube-npm-cluster/127.0.0.1:${base}=1`, ...NODES.map((n) => `kube-npm-node/${n}=1`)].sort());
  });

  it('labelled counters exist at 0 from start-up: every kind/verb, result, drift kind, tool', async () => {
    const count = async (q: string) => (await query(q)).length;
    const pairs = Object.values(API_WRITES).reduce((a, v) => a + v.length, 0);
    expect(await count('kubenpm_api_writes_total')).to.equal(pairs);
    expect(await count('kubenpm_api_write_bytes_total')).to.equal(Object.keys(API_WRITES).length);
    expect(await count('kubenpm_reconciles_total')).to.equal(RECONCILE_RESULTS.length);
    expect(await count('kubenpm_drift_repairs_total')).to.equal(driftKinds.length * NODES.length);
    expect(await count('kubenpm_restore_failures_total')).to.equal(2 * NODES.length);
    expect(await count('kubenpm_sync_duration_seconds_count')).to.equal(SYNC_RESULTS.length * NODES.length);
    // Nothing written yet for NetworkPolicies (there are none): the create series is there, at 0.
    const creates = await query('kubenpm_api_writes_total{kind="NpmRuleSet",verb="create"}');
    expect(creates.map(value)).to.deep.equal([0]);
  });

  it("policies applied: increase() sees the operator's first burst of writes", async () => {
    const [denyAll, allow] = docPolicies();
    expect(denyAll).to.contain('name: deny-all');
    expect(allow).to.contain('name: allow-web-to-db');
    for (const [ns, name, yaml] of [['demo', 'deny-all', denyAll!], ['demo', 'allow-web-to-db', allow!], ['other', 'egress-to-cidr', IPBLOCK_POLICY]] as const) {
      await kubectl(['apply', '-f', '-'], yaml);
      await kubectl(['-n', ns, 'wait', '--for=create', `nrs/${name}`, '--timeout=60s']);
      await kubectl(['-n', ns, 'wait', '--for=condition=Programmed', `nrs/${name}`, '--timeout=60s']);
    }
    // The series was scraped at 0 before the writes: increase() over the window counts them (a series
    // born at its first increment would read 0 here).
    const inc = await waitFor(
      'increase() of NpmRuleSet creates > 0',
      async () => {
        const r = await query('sum(increase(kubenpm_api_writes_total{job="kube-npm-cluster", kind="NpmRuleSet", verb="create"}[5m]))');
        return r.length === 1 && value(r[0]!) >= 1 && value(r[0]!);
      },
      30_000,
      500,
    );
    notes.push(`increase(NpmRuleSet creates[5m]) = ${inc.toFixed(2)} (3 written)`);
  });

  it("the operator's npm_num_ipsets counts every set the NpmRuleSets reference, ipBlock sets included", async () => {
    const nrs = JSON.parse(await kubectl(['get', 'nrs', '-A', '-o', 'json'])) as { items: { spec: { ipsets: SetRef[] } }[] };
    const refs = new Map(nrs.items.flatMap((i) => i.spec.ipsets.map((s) => [s.name, s] as const)));
    expect([...refs.values()].filter((s) => s.kind === 'IPBlock').length, 'an ipBlock set').to.be.greaterThan(0);
    const got = await waitFor(
      `npm_num_ipsets{job="kube-npm-cluster"} == ${refs.size}`,
      async () => {
        const r = await query('npm_num_ipsets{job="kube-npm-cluster"}');
        return r.length === 1 && value(r[0]!) === refs.size && r;
      },
      30_000,
      500,
    );
    expect(value(got[0]!)).to.equal(refs.size);
  });

  it('npm_ipset_counts: set_name is what the set means (from the NpmRuleSets), set_hash its kernel name', async () => {
    const nrs = JSON.parse(await kubectl(['get', 'nrs', '-A', '-o', 'json'])) as { items: { spec: { ipsets: SetRef[] } }[] };
    const meaning = new Map(nrs.items.flatMap((i) => i.spec.ipsets.map((s) => [s.name, s.meaning] as const)));
    meaning.set('KNPM-LOCAL', "this node's own pods");
    // Scraped after the policies were programmed on both nodes (the kernel read is cached 2 s).
    const series = await waitFor(
      'npm_ipset_counts of the programmed sets on both nodes',
      async () => {
        const r = await query('npm_ipset_counts{job="kube-npm-node"}');
        return NODES.every((n) => r.filter((s) => s.metric.instance === n).length > 1) && r;
      },
      30_000,
      500,
    );
    for (const s of series) {
      const { set_name: name, set_hash: hash, instance } = s.metric;
      const want = meaning.get(hash!);
      expect(want, `${instance}: ${hash} is a set of ours the rulesets name`).to.be.a('string');
      expect(name, `${instance} ${hash}: set_name repeats the hash (the agent does not hand its desired state's sets to NodeMetrics.applied())`).to.not.equal(hash);
      expect(name, `${instance} ${hash}`).to.equal(want!.slice(0, 100));
    }
  });

  it('process and Node.js runtime metrics on every endpoint', async () => {
    for (const m of ['process_cpu_seconds_total', 'process_resident_memory_bytes', 'process_start_time_seconds', 'nodejs_heap_size_used_bytes', 'nodejs_eventloop_lag_p99_seconds']) {
      const r = await query(m);
      expect(r.map((s) => s.metric.job).sort(), m).to.deep.equal(['kube-npm-cluster', ...NODES.map(() => 'kube-npm-node')]);
      for (const s of r) expect(value(s), `${m} ${s.metric.instance}`).to.be.greaterThan(0);
    }
  });

  it('every PromQL query of the Grafana dashboard runs without error or warning and returns data (all nodes, and one)', async () => {
    const dash = JSON.parse(readFileSync(join(REPO, 'config/grafana/kube-npm-dashboard.json'), 'utf8')) as Dashboard;
    const vars = new Map(dash.templating.list.filter((v) => v.type === 'constant').map((v) => [v.name, String(v.query)]));
    const nodeVar = dash.templating.list.find((v) => v.name === 'node')!;
    const exprs = dash.panels.flatMap((p) => [p, ...(p.panels ?? [])]).flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p.title, expr: t.expr })));
    expect(exprs.length).to.be.greaterThan(20);
    // Grafana's substitution: constants, and $node as "All" (its allValue) or one node.
    const substitute = (expr: string, node: string) => {
      let out = expr.replace(/\$node\b/g, node);
      for (const [k, v] of vars) out = out.replace(new RegExp(`\\$${k}\\b`, 'g'), v);
      expect(out, `unresolved variable in ${expr}`).to.not.contain('$');
      return out;
    };
    const failures: string[] = [];
    let ran = 0;
    for (const node of [nodeVar.allValue ?? '.*', NODES[0]!]) {
      for (const { panel, expr } of exprs) {
        const q = substitute(expr, node);
        const a = await apiGet<QueryAnswer>(`/api/v1/query?query=${encodeURIComponent(q)}`);
        ran++;
        if (a.status !== 'success') failures.push(`${panel}: ${q}: ${a.errorType}: ${a.error}`);
        else if (a.warnings?.length || a.infos?.length) failures.push(`${panel}: ${q}: ${[...(a.warnings ?? []), ...(a.infos ?? [])].join('; ')}`);
        else if (!a.data!.result.length) failures.push(`${panel}: ${q}: no data`);
      }
    }
    expect(failures, failures.join('\n')).to.deep.equal([]);
    notes.push(`${ran} dashboard queries answered with data`);
    // The node variable: label_values(METRIC{...}, LABEL), as Grafana asks it (the series API).
    const m = /^label_values\((.*),\s*(\w+)\)$/.exec(nodeVar.definition!);
    expect(m, nodeVar.definition).to.not.equal(null);
    const values = await apiGet<{ status: string; data: string[] }>(`/api/v1/label/${m![2]}/values?match[]=${encodeURIComponent(substitute(m![1]!, ''))}`);
    expect(values.status).to.equal('success');
    expect(values.data.sort()).to.deep.equal(NODES);
  });
});
