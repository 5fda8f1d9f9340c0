// Issue #10 at e2e scale: real kube-apiserver + etcd, the operator and one agent per node as
// processes of the built CLI, nodes and pods as network namespaces. What the API server counts
// (its own apiserver_request_total, read with the admin kubeconfig) is what we assert.
// Cases of the operator side go in their own describe below.
import { KubeConfig, type KubernetesObject } from '@kubernetes/client-node';
import { expect } from 'chai';
import { Informer } from '../../operator/src/framework/informer.js';
import { startControlPlane, type ControlPlane } from '../support/controlplane.js';
import { kubectlOk, podManifest, setPodRunning, startCli, waitFor, type Proc } from '../support/e2e.js';
import { createCluster, type Cluster } from '../kernel/harness/cluster.js';

const isRoot = process.getuid?.() === 0;
const WRITE_VERBS = new Set(['POST', 'PUT', 'PATCH', 'DELETE', 'APPLY']);

/** apiserver_request_total of write verbs, summed by resource (and subresource: "npmnodes/status"). */
export async function apiWrites(cp: ControlPlane): Promise<Map<string, number>> {
  const text = await kubectlOk(cp, ['get', '--raw', '/metrics']);
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line.startsWith('apiserver_request_total{')) continue;
    const m = /^apiserver_request_total\{(.*)\} (\S+)$/.exec(line);
    if (!m) continue;
    const labels = Object.fromEntries([...m[1]!.matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1]!, x[2]!]));
    if (!WRITE_VERBS.has(labels.verb ?? '')) continue;
    const key = `${labels.resource ?? ''}${labels.subresource ? `/${labels.subresource}` : ''}`;
    out.set(key, (out.get(key) ?? 0) + Number(m[2]));
  }
  return out;
}

/** after - before, only the resources that changed. */
export function writesBetween(before: Map<string, number>, after: Map<string, number>): Record<string, number> {
  const d: Record<string, number> = {};
  for (const [k, v] of after) if (v - (before.get(k) ?? 0) > 0) d[k] = v - (before.get(k) ?? 0);
  return d;
}

const PODS: Record<string, { node: number; ip: string }> = {
  'x/a': { node: 1, ip: '10.244.1.10' },
  'x/b': { node: 2, ip: '10.244.2.11' },
  'y/a': { node: 1, ip: '10.244.1.13' },
  'y/b': { node: 2, ip: '10.244.2.17' },
};
const NAMES = Object.keys(PODS);
const SYSTEM = 'kube-npm-system';

describe('scale: an idle cluster writes nothing (agent side, e2e)', function () {
  this.timeout(0);
  let cp: ControlPlane | undefined;
  let cluster: Cluster | undefined;
  const procs: Proc[] = [];

  before(async function () {
    if (!isRoot) {
      console.warn('      !!! SKIPPED: e2e needs root (network namespaces, iptables)');
      this.skip();
    }
    cp = await startControlPlane({ log: () => undefined });
    cluster = await createCluster({ nodes: 2, pods: NAMES.map((n) => ({ name: n, node: PODS[n]!.node, ip: PODS[n]!.ip })), defaultTimeoutMs: 700 });
    await kubectlOk(cp, ['create', 'namespace', SYSTEM]);
    for (const ns of ['x', 'y']) await kubectlOk(cp, ['create', 'namespace', ns]);
    const manifests = NAMES.map((n) => {
      const [ns, name] = n.split('/') as [string, string];
      return podManifest(ns, name, `n${PODS[n]!.node}`, { pod: name });
    });
    await kubectlOk(cp, ['apply', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'List', items: manifests }));
    for (const n of NAMES) {
      const [ns, name] = n.split('/') as [string, string];
      await setPodRunning(cp, ns, name, PODS[n]!.ip);
    }
    // x: pod a accepts ingress from pods of y only; y: default deny ingress. Both nodes program both.
    await kubectlOk(cp, ['apply', '-f', '-'], JSON.stringify({
      apiVersion: 'v1', kind: 'List', items: [
        { apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name: 'from-y', namespace: 'x' }, spec: { podSelector: {}, policyTypes: ['Ingress'], ingress: [{ from: [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'y' } } }] }] } },
        { apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name: 'deny', namespace: 'y' }, spec: { podSelector: {}, policyTypes: ['Ingress'] } },
      ],
    }));
    procs.push(startCli(cp, 'operator', ['operator', '--metrics-bind-address', '127.0.0.1:0', '--metrics-secure=false', '--leader-elect=false']));
    for (const k of [1, 2]) {
      // A full resync every 5 s: an idle resync must write nothing either.
      procs.push(startCli(cp, `agent-n${k}`, ['agent', '--node-name', `n${k}`, '--netns', cluster.nodeNs(k), '--metrics-bind-address', '127.0.0.1:0', '--metrics-secure=false', '--resync-seconds', '5', '--lease-namespace', SYSTEM]));
    }
    for (const [ns, name] of [['x', 'from-y'], ['y', 'deny']] as const) {
      await waitFor(`${ns}/${name} Programmed on both nodes`, async () => {
        const r = await cp!.kubectl(['-n', ns, 'get', 'nrs', name, '-o', 'json']);
        if (r.code !== 0) return false;
        const o = JSON.parse(r.stdout) as { status?: { nodesProgrammed?: string; conditions?: { type: string; status: string }[] } };
        return o.status?.nodesProgrammed === '2/2' && o.status.conditions?.some((c) => c.type === 'Programmed' && c.status === 'True');
      }, 60_000, 200);
    }
    // The verdicts the idle cluster keeps: y -> x allowed, x -> y denied.
    expect(await cluster.probe('y/b', 'x/a', 80, 'TCP', 700)).to.equal(true);
    expect(await cluster.probe('x/b', 'y/a', 80, 'TCP', 700)).to.equal(false);
  });

  after(async () => {
    for (const p of procs) await p.stop().catch(() => undefined);
    await cluster?.destroy();
    await cp?.stop();
  });

  it('0 NpmRuleSet / NpmIPSet / NpmNode writes in 30 s of idling (agents full-resync every 5 s); leases are the only heartbeat', async () => {
    // Let the last status writes of the setup land (the operator's Programmed, the agents' reports).
    await new Promise((r) => setTimeout(r, 3000));
    // Lease writes are counted on a watch of the agents' namespace: the API server's metric also
    // counts its own identity Leases (kube-system, renewed every 10 s).
    const kc = new KubeConfig();
    kc.loadFromFile(cp!.kubeconfigPath);
    const leases = new Informer<KubernetesObject & { spec?: { holderIdentity?: string } }>({
      kc, resource: { group: 'coordination.k8s.io', version: 'v1', plural: 'leases', namespaced: true, kind: 'Lease' }, namespace: SYSTEM, resyncMs: 0, log: () => undefined,
    });
    const renewals = new Map<string, number>();
    leases.onUpdate((l) => void renewals.set(`${l.metadata!.name}:${l.spec?.holderIdentity}`, (renewals.get(`${l.metadata!.name}:${l.spec?.holderIdentity}`) ?? 0) + 1));
    await leases.start();
    const before = await apiWrites(cp!);
    await new Promise((r) => setTimeout(r, 30_000));
    const d = writesBetween(before, await apiWrites(cp!));
    await leases.stop();
    console.log(`      API writes in 30 s idle, by resource: ${JSON.stringify(d)}; agent Lease renewals: ${JSON.stringify(Object.fromEntries(renewals))}`);
    for (const r of ['npmrulesets', 'npmrulesets/status', 'npmipsets', 'npmnodes', 'npmnodes/status']) expect(d[r] ?? 0, `${r} writes while idle`).to.equal(0);
    // The agents' heartbeat: one Lease per node, held by the node; a 30 s lease is renewed every 10 s.
    expect([...renewals.keys()].sort()).to.deep.equal(['kube-npm-agent-n1:n1', 'kube-npm-agent-n2:n2']);
    for (const [k, n] of renewals) expect(n, `${k} renewals in 30 s`).to.be.within(2, 4);
    // Still enforced.
    expect(await cluster!.probe('x/b', 'y/a', 80, 'TCP', 700)).to.equal(false);
  });
});

describe('scale: a stopped agent does not look healthy (operator side, e2e)', function () {
  this.timeout(0);
  const LEASE_S = 4;
  let cp: ControlPlane | undefined;
  let cluster: Cluster | undefined;
  const procs: Proc[] = [];
  let agent: Proc | undefined;

  const nodeReady = async () => {
    const r = await cp!.kubectl(['get', 'npmnode', 'n1', '-o', 'jsonpath={.status.conditions[?(@.type=="Ready")]}']);
    return r.code === 0 && r.stdout ? (JSON.parse(r.stdout) as { status: string; reason: string; message: string }) : undefined;
  };
  const programmed = async () => {
    const r = await cp!.kubectl(['-n', 'x', 'get', 'nrs', 'guard', '-o', 'jsonpath={.status.conditions[?(@.type=="Programmed")]}']);
    return r.code === 0 && r.stdout ? (JSON.parse(r.stdout) as { status: string; reason: string; message: string }) : undefined;
  };

  before(async function () {
    if (!isRoot) {
      console.warn('      !!! SKIPPED: e2e needs root (network namespaces, iptables)');
      this.skip();
    }
    cp = await startControlPlane({ log: () => undefined });
    cluster = await createCluster({ nodes: 1, pods: [{ name: 'x/a', node: 1, ip: '10.244.1.10' }], defaultTimeoutMs: 700 });
    await kubectlOk(cp, ['create', 'namespace', SYSTEM]);
    await kubectlOk(cp, ['create', 'namespace', 'x']);
    await kubectlOk(cp, ['apply', '-f', '-'], JSON.stringify(podManifest('x', 'a', 'n1', { pod: 'a' })));
    await setPodRunning(cp, 'x', 'a', '10.244.1.10');
    await kubectlOk(cp, ['apply', '-f', '-'], JSON.stringify({ apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name: 'guard', namespace: 'x' }, spec: { podSelector: {}, policyTypes: ['Ingress'] } }));
    procs.push(startCli(cp, 'operator', ['operator', '--metrics-bind-address', '127.0.0.1:0', '--metrics-secure=false', '--leader-elect=false', '--agent-lease-namespace', SYSTEM]));
    agent = startCli(cp, 'agent-n1', ['agent', '--node-name', 'n1', '--netns', cluster.nodeNs(1), '--metrics-bind-address', '127.0.0.1:0', '--metrics-secure=false', '--lease-namespace', SYSTEM, '--lease-duration', String(LEASE_S)]);
    procs.push(agent);
    await waitFor('x/guard Programmed and n1 Ready', async () => (await programmed())?.status === 'True' && (await nodeReady())?.status === 'True', 60_000, 200);
  });

  after(async () => {
    for (const p of procs) await p.stop().catch(() => undefined);
    await cluster?.destroy();
    await cp?.stop();
  });

  it(`a killed agent: its NpmNode turns Ready=False (AgentNotReporting) within 2 lease periods (${2 * LEASE_S} s) of its last renewal, and the policy it programs is not Programmed`, async () => {
    await agent!.stop('SIGKILL');
    const lease = JSON.parse(await kubectlOk(cp!, ['-n', SYSTEM, 'get', 'lease', 'kube-npm-agent-n1', '-o', 'json'])) as { spec: { renewTime: string } };
    const renewedAt = Date.parse(lease.spec.renewTime);
    let flippedAt = 0;
    await waitFor('n1 Ready=False', async () => {
      const c = await nodeReady();
      if (c?.status !== 'False') return false;
      flippedAt = Date.now();
      return true;
    }, 6 * LEASE_S * 1000, 100);
    const c = (await nodeReady())!;
    const p = (await programmed())!;
    console.log(`      Ready=False ${flippedAt - renewedAt} ms after the last Lease renewal (2 periods = ${2 * LEASE_S * 1000} ms); Programmed: ${p.status} ${p.reason}: ${p.message}`);
    expect(c.reason).to.equal('AgentNotReporting');
    expect(c.message).to.contain('node n1 is not reporting');
    // 2 periods, plus the time to write and to see it (the poll, a loaded 2-core CI machine).
    expect(flippedAt - renewedAt).to.be.within(2 * LEASE_S * 1000, 2 * LEASE_S * 1000 + 3000);
    expect(p).to.include({ status: 'False', reason: 'AgentNotReporting' });
    expect(p.message).to.contain('the agent on node n1 is not reporting');
  });
});
