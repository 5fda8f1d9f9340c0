// End to end: real kube-apiserver + etcd, the operator (two replicas, leader election) and one agent
// per node as processes of the built CLI, nodes and pods as network namespaces with real TCP/UDP.
// Policies are applied with kubectl; verdicts are asserted with packets; kubectl output is asserted
// as a user would read it.
import { expect } from 'chai';
import { startControlPlane, type ControlPlane } from '../support/controlplane.js';
import { spawnSync } from 'node:child_process';
import { CLI, kubectlOk, podManifest, setPodRunning, startCli, waitFor, type Proc } from '../support/e2e.js';
import { createCluster, type Cluster } from '../kernel/harness/cluster.js';

const isRoot = process.getuid?.() === 0;
const PODS: Record<string, { node: number; ip: string }> = {
  'x/a': { node: 1, ip: '10.244.1.10' },
  'x/b': { node: 1, ip: '10.244.1.11' },
  'y/a': { node: 1, ip: '10.244.1.13' },
  'y/b': { node: 2, ip: '10.244.2.17' },
  'z/a': { node: 2, ip: '10.244.2.5' },
  'x/c': { node: 2, ip: '10.244.2.12' },
};
const NAMES = Object.keys(PODS);

interface Nrs {
  metadata: { name: string; generation: number };
  status?: { nodesProgrammed?: string; conditions?: { type: string; status: string; observedGeneration?: number }[] };
}

describe('operator + agents against a real API server (e2e)', function () {
  this.timeout(0);
  let cp: ControlPlane | undefined;
  let cluster: Cluster | undefined;
  const procs: Proc[] = [];
  let operators: Proc[] = [];
  const agents = new Map<number, Proc>();

  const startAgent = (k: number) => {
    const p = startCli(cp!, `agent-n${k}`, ['agent', '--node-name', `n${k}`, '--netns', cluster!.nodeNs(k), '--metrics-bind-address', '127.0.0.1:0', '--metrics-secure=false', '--resync-seconds', '30', '--min-sync-interval-ms', '20']);
    agents.set(k, p);
    procs.push(p);
    return p;
  };
  const startOperator = (i: number) => {
    const p = startCli(cp!, `operator-${i}`, ['operator', '--metrics-bind-address', '127.0.0.1:0', '--metrics-secure=false', '--leader-election-namespace', 'kube-system', '--identity', `op-${i}`, '--lease-duration-seconds', '4', '--renew-deadline-seconds', '3', '--retry-period-seconds', '1']);
    procs.push(p);
    return p;
  };

  /**
   * Waits until the policy's NpmRuleSet reflects the policy's current generation and is Programmed
   * at its own current generation on every node that must.
   */
  const programmed = async (ns: string, name: string) => {
    const np = JSON.parse(await kubectlOk(cp!, ['-n', ns, 'get', 'networkpolicy', name, '-o', 'json'])) as { metadata: { generation: number } };
    return waitFor(`${ns}/${name} Programmed`, async () => {
      const r = await cp!.kubectl(['-n', ns, 'get', 'nrs', name, '-o', 'json']);
      if (r.code !== 0) return false;
      const o = JSON.parse(r.stdout) as Nrs & { spec: { policy: { generation?: number } } };
      if (o.spec.policy.generation !== np.metadata.generation) return false;
      const c = o.status?.conditions?.find((x) => x.type === 'Programmed');
      return c?.status === 'True' && c.observedGeneration === o.metadata.generation ? o : false;
    });
  };

  const matrix = async (port = 80, protocol: 'TCP' | 'UDP' = 'TCP') => {
    const m = await cluster!.probeMatrix(port, protocol, { timeoutMs: 700 });
    return new Set([...m].filter(([, ok]) => !ok).map(([k]) => k));
  };
  /** Denied pairs that differ from the expectation, readable in a failure message. */
  const diff = (got: Set<string>, want: Set<string>) => [
    ...[...got].filter((k) => !want.has(k)).map((k) => `unexpectedly denied ${k}`),
    ...[...want].filter((k) => !got.has(k)).map((k) => `unexpectedly allowed ${k}`),
  ];
  const denied = (pairs: [string, string][]) => new Set(pairs.map(([a, b]) => `${a}->${b}`));
  const into = (targets: string[], except: string[] = []) =>
    denied(NAMES.flatMap((from) => targets.filter((t) => t !== from && !except.includes(from)).map((t) => [from, t] as [string, string])));

  before(async function () {
    if (!isRoot) {
      console.warn('      !!! SKIPPED: e2e needs root (network namespaces, iptables)');
      this.skip();
    }
    cp = await startControlPlane({ log: () => undefined });
    cluster = await createCluster({ nodes: 2, pods: NAMES.map((n) => ({ name: n, node: PODS[n]!.node, ip: PODS[n]!.ip })), defaultTimeoutMs: 700 });
    for (const ns of ['x', 'y', 'z']) {
      await kubectlOk(cp, ['create', 'namespace', ns]);
      await kubectlOk(cp, ['label', 'namespace', ns, `ns=${ns}`]);
    }
    const manifests = NAMES.map((n) => {
      const [ns, name] = n.split('/') as [string, string];
      return podManifest(ns, name, `n${PODS[n]!.node}`, { pod: name });
    });
    await kubectlOk(cp, ['apply', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'List', items: manifests }));
    for (const n of NAMES) {
      const [ns, name] = n.split('/') as [string, string];
      await setPodRunning(cp, ns, name, PODS[n]!.ip);
    }
    operators = [startOperator(1), startOperator(2)];
    startAgent(1);
    startAgent(2);
    await waitFor('both NpmNodes Ready', async () => {
      const out = await kubectlOk(cp!, ['get', 'npmnodes', '-o', 'json']);
      const items = (JSON.parse(out) as { items: { status?: { conditions?: { type: string; status: string }[] } }[] }).items;
      return items.length === 2 && items.every((i) => i.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'));
    });
  });

  // On failure, print what a person debugging would look at: each node's kernel state and reports.
  afterEach(async function () {
    if (this.currentTest?.state !== 'failed' || !cluster || !cp) return;
    for (const k of [1, 2]) {
      const ipt = await cluster.exec(cluster.nodeNs(k), ['iptables-save', '-t', 'filter'], { allowFail: true });
      const sets = await cluster.exec(cluster.nodeNs(k), ['ipset', 'list', '-o', 'save'], { allowFail: true });
      console.log(`----- node n${k} iptables\n${ipt.stdout}\n----- node n${k} ipsets\n${sets.stdout}`);
    }
    console.log((await cp.kubectl(['get', 'nrs,nips,npmnodes', '-A', '-o', 'wide'])).stdout);
  });

  after(async () => {
    for (const p of procs) await p.stop().catch(() => undefined);
    if (cluster) {
      // The agents keep kernel state on exit by design; the test removes it with the namespaces.
      await cluster.destroy();
    }
    await cp?.stop();
  });

  it('no policy: every pair connects', async () => {
    expect(await matrix()).to.deep.equal(new Set());
  });

  it('kubectl apply of a default-deny in x: programmed on every node, packets into x dropped', async () => {
    await kubectlOk(cp!, ['apply', '-f', '-'], JSON.stringify({ apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name: 'deny', namespace: 'x' }, spec: { podSelector: {} } }));
    const rs = await programmed('x', 'deny');
    expect(rs.status!.nodesProgrammed).to.equal('2/2');
    expect(await matrix()).to.deep.equal(into(['x/a', 'x/b', 'x/c']));
    expect(await matrix(81, 'UDP')).to.deep.equal(into(['x/a', 'x/b', 'x/c']));
  });

  it('kubectl get nrs / describe nrs / get npmnodes explain it', async () => {
    const get = await kubectlOk(cp!, ['get', 'nrs', '-A']);
    expect(get).to.match(/NAMESPACE\s+NAME\s+TYPES\s+SETS\s+RULES\s+NODES\s+ACCEPTED\s+PROGRAMMED\s+AGE/);
    expect(get).to.match(/x\s+deny\s+Ingress\s+1\s+0\s+2\/2\s+True\s+True/);
    const describe = await kubectlOk(cp!, ['-n', 'x', 'describe', 'nrs', 'deny']);
    expect(describe).to.contain('Isolates all pods in namespace x for ingress (allows nothing)');
    expect(describe).to.contain('Meaning:  all pods in namespace x');
    expect(describe).to.match(/Nodes Programmed:\s+2\/2/);
    expect(describe).to.match(/Type:\s+Programmed/);
    expect(describe).to.match(/Events:[\s\S]*Normal\s+Programmed/);
    const nodes = await kubectlOk(cp!, ['get', 'npmnodes']);
    expect(nodes).to.match(/n1\s+True\s+(nft|legacy)\s+1\s/);
    expect(nodes).to.match(/n2\s+True\s+(nft|legacy)\s+1\s/);
  });

  it('kube-npm debug trace --kubeconfig: the live cluster\'s verdict, pods and the isolating policy by name (#12 item 5)', async () => {
    const trace = (...args: string[]) => spawnSync(process.execPath, [CLI, 'debug', 'trace', '--kubeconfig', cp!.kubeconfigPath, ...args], { encoding: 'utf8', timeout: 60_000 });
    const denied = trace('--from', 'y/a', '--to', 'x/a', '--port', '80/tcp');
    expect(denied.status, denied.stderr).to.equal(1);
    expect(denied.stdout).to.contain('y/a (10.244.1.13 on n1) -> x/a (10.244.1.10 on n1) TCP/80: DENIED');
    expect(denied.stdout).to.contain('ingress of x/a (10.244.1.10 on n1): isolated by x/deny [Programmed]; no rule of these policies allows it -> DROP');
    expect(denied.stdout).to.contain('egress of y/a (10.244.1.13 on n1): not isolated');
    // The reverse direction is not isolated; an address is named by its pod.
    const allowed = trace('--from', '10.244.1.10', '--to', 'y/b', '--port', '81', '--protocol', 'udp');
    expect(allowed.status, allowed.stderr).to.equal(0);
    expect(allowed.stdout).to.contain('x/a (10.244.1.10 on n1) -> y/b (10.244.2.17 on n2) UDP/81: ALLOWED');
    // Bad input: a pod that does not exist (2, named).
    const missing = trace('--from', 'x/nope', '--to', 'x/a');
    expect(missing.status).to.equal(2);
    expect(missing.stderr).to.contain('no pod x/nope');
  });

  it('metrics: /node-metrics counts read from each kernel, /cluster-metrics from the translation', async () => {
    const { readFileSync } = await import('node:fs');
    const portOf = (p: Proc, what: string) => {
      const m = new RegExp(`serving ${what}.* on 127\\.0\\.0\\.1:(\\d+)`).exec(readFileSync(p.log, 'utf8'));
      return m ? Number(m[1]) : undefined;
    };
    const value = (text: string, name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1]);
    const node = await (await fetch(`http://127.0.0.1:${portOf(agents.get(1)!, '/node-metrics')}/node-metrics`)).text();
    expect(value(node, 'npm_num_policies')).to.equal(1);
    expect(value(node, 'npm_num_ipsets')).to.be.greaterThan(0);
    expect(node).to.match(/npm_add_ipset_exec_time\{quantile="0.5"\}/);
    const leader = await waitFor('the leader', async () => {
      for (const p of operators) {
        const port = portOf(p, '/cluster-metrics');
        if (!port) continue;
        const text = await (await fetch(`http://127.0.0.1:${port}/cluster-metrics`)).text();
        if (value(text, 'kubenpm_leader') === 1) return text;
      }
      return undefined;
    });
    expect(value(leader, 'npm_num_policies')).to.equal(1);
    expect(value(leader, 'kubenpm_rulesets_not_programmed')).to.equal(0);
  });

  it('update: allow TCP/80 from namespace y', async () => {
    await kubectlOk(cp!, ['apply', '-f', '-'], JSON.stringify({
      apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name: 'deny', namespace: 'x' },
      spec: { podSelector: {}, ingress: [{ from: [{ namespaceSelector: { matchLabels: { ns: 'y' } } }], ports: [{ port: 80 }] }] },
    }));
    await programmed('x', 'deny');
    expect(diff(await matrix(), into(['x/a', 'x/b', 'x/c'], ['y/a', 'y/b']))).to.deep.equal([]);
    expect(await matrix(81)).to.deep.equal(into(['x/a', 'x/b', 'x/c']));
  });

  it('namespace relabel: z joins the allowed namespaces', async () => {
    await kubectlOk(cp!, ['label', 'namespace', 'z', 'ns=y', '--overwrite']);
    await waitFor('z allowed into x', async () => (await cluster!.probe('z/a', 'x/a', 80, 'TCP', 700)) || undefined);
    expect(await matrix()).to.deep.equal(into(['x/a', 'x/b', 'x/c'], ['y/a', 'y/b', 'z/a']));
    await kubectlOk(cp!, ['label', 'namespace', 'z', 'ns=z', '--overwrite']);
    await waitFor('z denied into x again', async () => !(await cluster!.probe('z/a', 'x/a', 80, 'TCP', 700)) || undefined);
  });

  it('pod relabel, create and delete: a second policy follows pod labels', async () => {
    await kubectlOk(cp!, ['apply', '-f', '-'], JSON.stringify({
      apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name: 'from-role-client', namespace: 'x' },
      spec: { podSelector: { matchLabels: { pod: 'a' } }, ingress: [{ from: [{ namespaceSelector: {}, podSelector: { matchLabels: { role: 'client' } } }] }] },
    }));
    await programmed('x', 'from-role-client');
    expect(await cluster!.probe('z/a', 'x/a', 81, 'TCP', 700)).to.equal(false);
    await kubectlOk(cp!, ['-n', 'z', 'label', 'pod', 'a', 'role=client']);
    await waitFor('z/a allowed by label', async () => (await cluster!.probe('z/a', 'x/a', 81, 'TCP', 700)) || undefined);
    expect(await cluster!.probe('z/a', 'x/b', 81, 'TCP', 700)).to.equal(false);
    // A new pod with the label, on the other node.
    await cluster!.addPod({ name: 'z/new', node: 1, ip: '10.244.1.50' });
    await kubectlOk(cp!, ['apply', '-f', '-'], JSON.stringify(podManifest('z', 'new', 'n1', { pod: 'new', role: 'client' })));
    await setPodRunning(cp!, 'z', 'new', '10.244.1.50');
    await waitFor('z/new allowed', async () => (await cluster!.probe('z/new', 'x/a', 81, 'TCP', 700)) || undefined);
    // No kubelet finishes a graceful delete here: delete at once, as the kubelet would after the containers stop.
    await kubectlOk(cp!, ['-n', 'z', 'delete', 'pod', 'new', '--grace-period=0', '--force']);
    await waitFor('z/new removed from the set', async () => !(await cluster!.probe('z/new', 'x/a', 81, 'TCP', 700)) || undefined);
    await cluster!.removePod('z/new');
    await kubectlOk(cp!, ['-n', 'x', 'delete', 'networkpolicy', 'from-role-client']);
  });

  it('a peer that selects no pod is a warning in describe nrs, cleared when a pod matches; get nips counts members (#12 item 4)', async () => {
    await kubectlOk(cp!, ['apply', '-f', '-'], JSON.stringify({
      apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name: 'typo', namespace: 'x' },
      spec: { podSelector: { matchLabels: { pod: 'a' } }, ingress: [{ from: [{ podSelector: { matchLabels: { app: 'wbe' } } }] }] },
    }));
    await programmed('x', 'typo');
    const warned = /Type:\s+Resolved/;
    const describe = await waitFor('the warning in describe nrs', async () => {
      const out = await kubectlOk(cp!, ['-n', 'x', 'describe', 'nrs', 'typo']);
      return /Warnings:\s+Message:/.test(out) ? out : undefined;
    });
    expect(describe).to.match(/Warnings:\s+Message:\s+selects no pod right now: pods with app=wbe in namespace x\s+Reason:\s+NoPeersSelected\s+Rule:\s+ingress\[0\]\.from\[0\]/);
    expect(describe).to.match(/Message:\s+1 part of the policy allows nothing right now: ingress\[0\]\.from\[0\]: selects no pod[^\n]*\n\s+Observed Generation:\s+\d+\n\s+Reason:\s+NoPeersSelected\n\s+Status:\s+False\n\s+Type:\s+Resolved/);
    expect(describe).to.match(warned);
    // The empty peer set: 0 members in the MEMBERS column.
    const nips = await kubectlOk(cp!, ['get', 'nips']);
    expect(nips).to.match(/NAME\s+SET\s+TYPE\s+SHARD\s+SHARDS\s+MEMBERS\s+MEANING\s+AGE/);
    expect(nips).to.match(/hash:ip\s+0\s+1\s+0\s+pods with app=wbe in namespace x\s/);
    expect(nips).to.match(/hash:ip\s+0\s+1\s+3\s+all pods in namespace x\s/);
    // A pod gets the label: the warning goes (one status write, no policy change).
    await kubectlOk(cp!, ['-n', 'x', 'label', 'pod', 'b', 'app=wbe']);
    const cleared = await waitFor('the warning cleared', async () => {
      const out = await kubectlOk(cp!, ['-n', 'x', 'describe', 'nrs', 'typo']);
      return /Warnings:/.test(out) ? undefined : out;
    });
    expect(cleared).to.match(/Reason:\s+Resolved\n\s+Status:\s+True\n\s+Type:\s+Resolved/);
    expect(await kubectlOk(cp!, ['get', 'nips'])).to.match(/hash:ip\s+0\s+1\s+1\s+pods with app=wbe in namespace x\s/);
    await kubectlOk(cp!, ['-n', 'x', 'delete', 'networkpolicy', 'typo']);
    await kubectlOk(cp!, ['-n', 'x', 'label', 'pod', 'b', 'app-']);
  });

  it('agent restart: no unprotected window, state adopted', async () => {
    let leaks = 0;
    let probes = 0;
    let running = true;
    const prober = (async () => {
      while (running) {
        probes++;
        if (await cluster!.probe('y/a', 'x/a', 81, 'TCP', 300)) leaks++;
      }
    })();
    const { readFileSync } = await import('node:fs');
    // The agent logs its liveness Lease once its first sync has run (cli/agent-daemon.ts); NpmNode
    // status is written only when its content changes, so an unchanged node shows no new write.
    const synced = () => readFileSync(agents.get(1)!.log, 'utf8').split('liveness: Lease').length - 1;
    const before = synced();
    await agents.get(1)!.stop();
    await new Promise((r) => setTimeout(r, 500));
    startAgent(1);
    await waitFor('agent n1 synced again', async () => (synced() > before ? true : undefined));
    await new Promise((r) => setTimeout(r, 500));
    running = false;
    await prober;
    expect(probes).to.be.greaterThan(3);
    expect(leaks, `${leaks} of ${probes} denied probes got through`).to.equal(0);
    expect(await cluster!.probe('y/a', 'x/a', 80, 'TCP', 700)).to.equal(true);
  });

  it('leader failover: the standby takes over and keeps reconciling', async () => {
    const lease = async () => JSON.parse(await kubectlOk(cp!, ['-n', 'kube-system', 'get', 'lease', 'kube-npm-operator', '-o', 'json'])) as { spec: { holderIdentity?: string } };
    const holder = (await lease()).spec.holderIdentity!;
    const leader = operators.find((p) => holder.startsWith(p.name.replace('operator-', 'op-')))!;
    expect(leader, `holder ${holder}`).to.not.equal(undefined);
    const t0 = Date.now();
    await leader.child.kill('SIGKILL');
    const other = await waitFor('a new leader', async () => {
      const h = (await lease()).spec.holderIdentity;
      return h && h !== holder ? h : undefined;
    }, 30_000, 200);
    const failoverMs = Date.now() - t0;
    console.log(`      leader failover after SIGKILL: ${failoverMs} ms (lease 4 s) -> ${other}`);
    await kubectlOk(cp!, ['apply', '-f', '-'], JSON.stringify({ apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name: 'deny-y', namespace: 'y' }, spec: { podSelector: {} } }));
    await programmed('y', 'deny-y');
    expect(await cluster!.probe('z/a', 'y/b', 80, 'TCP', 700)).to.equal(false);
  });

  it('operator restart: changes made while no operator runs are reconciled at start (level-based)', async () => {
    for (const p of operators) await p.stop('SIGKILL');
    // While down: a new policy, and an edit of one of our objects that must be reverted.
    await kubectlOk(cp!, ['apply', '-f', '-'], JSON.stringify({ apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name: 'deny-z', namespace: 'z' }, spec: { podSelector: {} } }));
    await kubectlOk(cp!, ['-n', 'y', 'patch', 'nrs', 'deny-y', '--type=merge', '-p', JSON.stringify({ spec: { summary: 'edited by hand' } })]);
    operators = [startOperator(3)];
    await programmed('z', 'deny-z');
    expect(await cluster!.probe('y/a', 'z/a', 80, 'TCP', 700)).to.equal(false);
    await waitFor('hand edit reverted', async () => {
      const o = JSON.parse(await kubectlOk(cp!, ['-n', 'y', 'get', 'nrs', 'deny-y', '-o', 'json'])) as { spec: { summary: string } };
      return o.spec.summary !== 'edited by hand' || undefined;
    });
  });

  it('delete: the policies and their objects go, traffic flows again', async () => {
    await kubectlOk(cp!, ['-n', 'x', 'delete', 'networkpolicy', 'deny']);
    await kubectlOk(cp!, ['-n', 'y', 'delete', 'networkpolicy', 'deny-y']);
    await kubectlOk(cp!, ['-n', 'z', 'delete', 'networkpolicy', 'deny-z']);
    await waitFor('no NpmRuleSets and no NpmIPSets left', async () => {
      const out = await kubectlOk(cp!, ['get', 'nrs,nips', '-A', '-o', 'name']);
      return out.trim() === '' || undefined;
    });
    await waitFor('all connected', async () => (await matrix()).size === 0 || undefined, 10_000, 500);
  });
});
