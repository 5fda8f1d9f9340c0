// Pods start isolated, end to end (issue #9 item 16, docs/adr/0009-pod-startup.md): the real agent
// daemon with --pod-startup=strict against a real API server and the operator; a pod's network is
// up well before the "kubelet" writes its IP; other pods probe it (same node and across nodes) and
// it probes out, all along. Under a deny-all policy nothing ever reaches it; it reaches out once the
// node is programmed for it, never before; a pod without a policy becomes reachable; the agent's
// npm_pod_unprotected_seconds histogram counts both. Figures are printed.
import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import { startControlPlane, type ControlPlane } from '../support/controlplane.js';
import { kubectlOk, podManifest, setPodRunning, startCli, waitFor, type Proc } from '../support/e2e.js';
import { createCluster, type Cluster } from '../kernel/harness/cluster.js';

const isRoot = process.getuid?.() === 0;
const CLIENT = { name: 'y/client', node: 1, ip: '10.244.1.10' };
const REMOTE = { name: 'z/remote', node: 2, ip: '10.244.2.10' };
/** Time between the pod's network coming up and the "kubelet" writing its IP. */
const NETWORK_BEFORE_STATUS_MS = 500;

interface Rec {
  at: number;
  reached: boolean;
}

describe('pod startup with the agent daemon, strict (e2e)', function () {
  this.timeout(0);
  let cp: ControlPlane | undefined;
  let cluster: Cluster | undefined;
  const procs: Proc[] = [];
  let agent: Proc | undefined;

  before(async function () {
    if (!isRoot) {
      console.warn('      !!! SKIPPED: e2e needs root (network namespaces, iptables)');
      this.skip();
    }
    cp = await startControlPlane({ log: () => undefined });
    cluster = await createCluster({ nodes: 2, pods: [CLIENT, REMOTE], defaultTimeoutMs: 300 });
    for (const ns of ['x', 'y', 'z', 'w']) await kubectlOk(cp, ['create', 'namespace', ns]);
    for (const p of [CLIENT, REMOTE]) {
      const [ns, name] = p.name.split('/') as [string, string];
      await kubectlOk(cp, ['apply', '-f', '-'], JSON.stringify(podManifest(ns, name, `n${p.node}`, { pod: name })));
      await setPodRunning(cp, ns, name, p.ip);
    }
    await kubectlOk(cp, ['apply', '-f', '-'], JSON.stringify({ apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name: 'deny', namespace: 'x' }, spec: { podSelector: {}, policyTypes: ['Ingress'] } }));
    procs.push(startCli(cp, 'operator', ['operator', '--metrics-bind-address', '127.0.0.1:0', '--metrics-secure=false', '--leader-elect=false']));
    agent = startCli(cp, 'agent-n1', [
      'agent', '--node-name', 'n1', '--netns', cluster.nodeNs(1), '--metrics-bind-address', '127.0.0.1:0', '--metrics-secure=false',
      '--min-sync-interval-ms', '20', '--pod-startup=strict', '--pod-cidr=10.244.1.0/25',
    ]);
    procs.push(agent);
    await waitFor('agent n1 Ready', async () => {
      const r = await cp!.kubectl(['get', 'npmnode', 'n1', '-o', 'json']);
      return r.code === 0 && (JSON.parse(r.stdout) as { status?: { conditions?: { type: string; status: string }[] } }).status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True');
    });
    expect(readFileSync(agent.log, 'utf8')).to.contain('pod-startup strict: addresses of 10.244.1.0/25 (from --pod-cidr)');
  });

  after(async () => {
    for (const p of procs) await p.stop().catch(() => undefined);
    await cluster?.destroy();
    await cp?.stop();
  });

  function probing(from: string, to: string): { stop: () => Promise<Rec[]> } {
    const recs: Promise<Rec>[] = [];
    let on = true;
    const loop = (async () => {
      while (on) {
        const at = performance.now();
        recs.push(cluster!.probeDetailed(from, to, 80, 'TCP', 300).then((r) => ({ at, reached: r.ok || r.error === 'ECONNREFUSED' }), () => ({ at, reached: false })));
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    return {
      async stop() {
        on = false;
        await loop;
        return Promise.all(recs);
      },
    };
  }

  /** Starts x|w/<name> on node 1: network first, the IP in its status NETWORK_BEFORE_STATUS_MS later. */
  async function startPod(ns: string, name: string, ip: string, settle: (t: { statusAt: number }) => Promise<void>) {
    const inLocal = probing(CLIENT.name, ip);
    const inRemote = probing(REMOTE.name, ip);
    const created = performance.now();
    await cluster!.addPod({ name: `${ns}/${name}`, node: 1, ip });
    const out = probing(`${ns}/${name}`, REMOTE.ip);
    await kubectlOk(cp!, ['apply', '-f', '-'], JSON.stringify(podManifest(ns, name, 'n1', { pod: name })));
    await new Promise((r) => setTimeout(r, Math.max(0, NETWORK_BEFORE_STATUS_MS - (performance.now() - created))));
    const statusAt = performance.now();
    await setPodRunning(cp!, ns, name, ip);
    await settle({ statusAt });
    await new Promise((r) => setTimeout(r, 500));
    return { created, statusAt, inLocal: await inLocal.stop(), inRemote: await inRemote.stop(), out: await out.stop() };
  }

  const firstReached = (rs: Rec[]) => rs.find((r) => r.reached)?.at;
  const fmt = (x: number | undefined, from: number) => (x === undefined ? 'never' : `${(x - from).toFixed(0)} ms`);

  it('a pod under deny-all is never reached; it reaches out only once programmed', async () => {
    let outAt = 0;
    const r = await startPod('x', 'guarded', '10.244.1.30', async () => {
      await waitFor('x/guarded reaches out', async () => (await cluster!.probe('x/guarded', REMOTE.name, 80, 'TCP', 300)) || undefined, 20_000, 20);
      outAt = performance.now();
    });
    console.log(
      `      [strict, deny-all] from pod creation: IP written ${fmt(r.statusAt, r.created)}, first outgoing probe through ${fmt(firstReached(r.out), r.created)} ` +
        `(reachable out ${fmt(outAt, r.statusAt)} after its IP was written); ${r.inLocal.length + r.inRemote.length} probes in, ${r.inLocal.concat(r.inRemote).filter((x) => x.reached).length} reached`,
    );
    expect(r.inLocal.filter((x) => x.reached), 'same-node probes into the pod that got through').to.deep.equal([]);
    expect(r.inRemote.filter((x) => x.reached), 'cross-node probes into the pod that got through').to.deep.equal([]);
    expect(r.out.filter((x) => x.reached && x.at < r.statusAt), 'outgoing before its IP was known').to.deep.equal([]);
  });

  it('a pod without a policy is dropped until known, then reachable; npm_pod_unprotected_seconds counts both pods', async () => {
    const r = await startPod('w', 'plain', '10.244.1.31', async () => {
      await waitFor('w/plain reachable', async () => (await cluster!.probe(CLIENT.name, '10.244.1.31', 80, 'TCP', 300)) || undefined, 20_000, 20);
    });
    console.log(`      [strict, no policy] from pod creation: IP written ${fmt(r.statusAt, r.created)}, first reached in ${fmt(firstReached(r.inLocal), r.created)}, out ${fmt(firstReached(r.out), r.created)}`);
    for (const [what, rs] of [['same-node in', r.inLocal], ['cross-node in', r.inRemote], ['out', r.out]] as const) {
      expect(rs.filter((x) => x.reached && x.at < r.statusAt), `${what}: reached before the pod's IP was known`).to.deep.equal([]);
      expect(rs.some((x) => x.reached), `${what}: never reached`).to.equal(true);
    }
    const port = Number(/serving \/node-metrics.* on 127\.0\.0\.1:(\d+)/.exec(readFileSync(agent!.log, 'utf8'))?.[1]);
    const text = await (await fetch(`http://127.0.0.1:${port}/node-metrics`)).text();
    const value = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1]);
    console.log(`      npm_pod_unprotected_seconds: count ${value('npm_pod_unprotected_seconds_count')}, sum ${value('npm_pod_unprotected_seconds_sum').toFixed(3)} s`);
    expect(value('npm_pod_unprotected_seconds_count')).to.equal(2);
    expect(value('kubenpm_pod_startup_strict')).to.equal(1);
    expect(value('kubenpm_pod_startup_waiting')).to.equal(0);
  });

  // Last: the suspension lasts until the agent restarts.
  it('a local pod outside the pod CIDR suspends strict (the CNI does not allocate from it), loudly', async () => {
    const ip = '10.244.1.200'; // outside 10.244.1.0/25
    await cluster!.addPod({ name: 'w/odd', node: 1, ip });
    await kubectlOk(cp!, ['apply', '-f', '-'], JSON.stringify(podManifest('w', 'odd', 'n1', { pod: 'odd' })));
    await setPodRunning(cp!, 'w', 'odd', ip);
    await waitFor('strict suspended', async () => readFileSync(agent!.log, 'utf8').includes('pod-startup strict SUSPENDED') || undefined, 20_000);
    expect(readFileSync(agent!.log, 'utf8')).to.contain(`pod w/odd has address ${ip} outside the pod CIDR 10.244.1.0/25`);
    await waitFor('w/odd reachable', async () => (await cluster!.probe(CLIENT.name, ip, 80, 'TCP', 300)) || undefined, 20_000, 50);
    const port = Number(/serving \/node-metrics.* on 127\.0\.0\.1:(\d+)/.exec(readFileSync(agent!.log, 'utf8'))?.[1]);
    const text = await (await fetch(`http://127.0.0.1:${port}/node-metrics`)).text();
    expect(/^kubenpm_pod_startup_strict (\S+)$/m.exec(text)?.[1]).to.equal('0');
    try {
      await waitFor('strict rules removed', async () => !(await cluster!.exec(cluster!.nodeNs(1), ['iptables-save', '-t', 'filter'])).stdout.includes('pod-startup=strict') || undefined, 5_000);
    } catch (err) {
      console.log(readFileSync(agent!.log, 'utf8').split('\n').slice(-15).join('\n'));
      console.log((await cluster!.exec(cluster!.nodeNs(1), ['iptables-save', '-t', 'filter'])).stdout);
      throw err;
    }
  });
});
