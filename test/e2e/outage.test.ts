// Catch-up after an API server outage (issue #9 item 6): the real kube-apiserver is stopped for
// ~20 s (etcd keeps the data) and started again on the same port; the operator and one agent run
// as processes of the built CLI throughout. A policy created right after the server is back must be
// Programmed quickly and enforced. Before the fix the informers' backoff had grown to 16-32 s during
// the outage (and a 429 from the fresh server doubled it), so this took ~40 s.
import { expect } from 'chai';
import { startControlPlane, type ControlPlane } from '../support/controlplane.js';
import { stopApiserver } from '../support/apiserver.js';
import { kubectlOk, podManifest, setPodRunning, startCli, waitFor, type Proc } from '../support/e2e.js';
import { createCluster, type Cluster } from '../kernel/harness/cluster.js';

const isRoot = process.getuid?.() === 0;
const OUTAGE_MS = Number(process.env.KNPM_OUTAGE_MS ?? 20_000);
/** Generous on a loaded 2-core CI machine; the goal (issue #9) is 5 s, the figure is printed. */
const BOUND_MS = 15_000;

describe('catch-up after an API server outage (e2e)', function () {
  this.timeout(0);
  let cp: ControlPlane | undefined;
  let cluster: Cluster | undefined;
  const procs: Proc[] = [];

  const programmedGeneration = async (ns: string, name: string) => {
    const r = await cp!.kubectl(['-n', ns, 'get', 'nrs', name, '-o', 'json'], { timeoutMs: 5000 });
    if (r.code !== 0) return false;
    const o = JSON.parse(r.stdout) as { metadata: { generation: number }; status?: { conditions?: { type: string; status: string; observedGeneration?: number }[] } };
    const c = o.status?.conditions?.find((x) => x.type === 'Programmed');
    return c?.status === 'True' && c.observedGeneration === o.metadata.generation;
  };
  const policy = (name: string) =>
    JSON.stringify({ apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name, namespace: 'x' }, spec: { podSelector: { matchLabels: { pod: 'b' } }, policyTypes: ['Ingress'] } });

  before(async function () {
    if (!isRoot) {
      console.warn('      !!! SKIPPED: e2e needs root (network namespaces, iptables)');
      this.skip();
    }
    cp = await startControlPlane({ log: () => undefined });
    cluster = await createCluster({ nodes: 1, pods: [{ name: 'x/a', node: 1, ip: '10.244.1.10' }, { name: 'x/b', node: 1, ip: '10.244.1.11' }], defaultTimeoutMs: 700 });
    await kubectlOk(cp, ['create', 'namespace', 'x']);
    await kubectlOk(cp, ['apply', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'List', items: ['a', 'b'].map((p) => podManifest('x', p, 'n1', { pod: p })) }));
    await setPodRunning(cp, 'x', 'a', '10.244.1.10');
    await setPodRunning(cp, 'x', 'b', '10.244.1.11');
    // No leader election: a 20 s outage outlives any lease, and the process would exit to be
    // restarted by its Deployment; here the informers' own recovery is under test.
    procs.push(startCli(cp, 'operator', ['operator', '--leader-elect=false', '--metrics-bind-address', '127.0.0.1:0', '--metrics-secure=false']));
    procs.push(startCli(cp, 'agent-n1', ['agent', '--node-name', 'n1', '--netns', cluster.nodeNs(1), '--metrics-bind-address', '127.0.0.1:0', '--metrics-secure=false', '--min-sync-interval-ms', '20']));
    await waitFor('NpmNode n1 Ready', async () => {
      const r = await cp!.kubectl(['get', 'npmnode', 'n1', '-o', 'jsonpath={.status.conditions[?(@.type=="Ready")].status}']);
      return r.stdout === 'True';
    });
    // A first policy proves the chain works before the outage.
    await kubectlOk(cp, ['apply', '-f', '-'], policy('before'));
    await waitFor('x/before Programmed', () => programmedGeneration('x', 'before'));
    await kubectlOk(cp, ['delete', 'networkpolicy', '-n', 'x', 'before']);
    await waitFor('x/b reachable again', () => cluster!.probe('x/a', 'x/b', 80, 'TCP'));
  });

  after(async () => {
    for (const p of procs) await p.stop().catch(() => undefined);
    await cluster?.destroy();
    await cp?.stop();
  });

  it(`a policy created right after a ${OUTAGE_MS / 1000} s outage is Programmed within ${BOUND_MS / 1000} s and enforced`, async () => {
    const outage = await stopApiserver(cp!);
    await new Promise((r) => setTimeout(r, OUTAGE_MS - (Date.now() - outage.stoppedAt)));
    const readyAt = await outage.restart();
    await kubectlOk(cp!, ['apply', '-f', '-'], policy('after'));
    const created = Date.now();
    await waitFor('x/after Programmed', () => programmedGeneration('x', 'after'), 90_000, 50);
    const ms = Date.now() - created;
    console.log(`      outage ${((readyAt - outage.stoppedAt) / 1000).toFixed(1)} s (apiserver down to /readyz ok); policy created ${created - readyAt} ms after /readyz; Programmed ${ms} ms after creation (bound ${BOUND_MS} ms, goal 5000 ms)`);
    expect(ms, 'ms from creating the policy to Programmed').to.be.below(BOUND_MS);
    expect(await cluster!.probe('x/a', 'x/b', 80, 'TCP'), 'x/a -> x/b after the policy').to.equal(false);
  });
});
