/**
 * Pod startup with real packets (issue #9 item 16, docs/adr/0009-pod-startup.md): a pod is started
 * on node 1 of a namespace-made cluster while other pods probe it, and it probes out; the agent
 * learns of it some hundreds of ms after its network is up, and the operator's set update arrives
 * later still. The agent's side is driven as the daemon drives it (agent/daemon.ts syncNow):
 * selectLocal -> PodStartup.admit -> buildDesired(localPods, podCidrs) -> Converger.sync ->
 * PodStartup.synced, with a follow-up sync when a waiting pod became ready; the operator's side is
 * translate() over the cluster as the operator has seen it.
 *
 *   open   : probes reach the pod before the agent knows it (the window exists), and a pod under a
 *            deny-all policy is reachable until the operator's update is programmed;
 *   strict : every probe to or from the pod is dropped until the node is programmed for it; then a
 *            pod without a policy is reachable, and one under a deny-all policy never is.
 * A probe counts as "reached" when it connected or was refused (the RST came from the pod: before
 * its server listens, a refused connection still proves the packet got through).
 * The window figures are printed, not asserted.
 */
import { expect } from 'chai';
import { detectBackend, type Backend } from '../../operator/src/agent/backend.js';
import { Converger } from '../../operator/src/agent/converge.js';
import { realExec } from '../../operator/src/agent/exec.js';
import { buildDesired, type SetCache } from '../../operator/src/agent/model.js';
import { planIsEmpty } from '../../operator/src/agent/plan.js';
import { PodStartup, appliedView, localPodsOf, policyTargets, selectionView, type PodStartupMode, type ProgrammedView } from '../../operator/src/agent/podstartup.js';
import { selectLocal } from '../../operator/src/agent/select.js';
import { runOnce } from '../../operator/src/agent/once.js';
import { IPSET_KIND, RULESET_KIND, type NpmIPSet, type NpmRuleSet } from '../../operator/src/api/types.js';
import { translate } from '../../operator/src/translate/engine.js';
import type { NetworkPolicy, Pod } from '../../operator/src/translate/k8s.js';
import { createCluster, nodePodSubnet, type Cluster } from './harness/cluster.js';

const isRoot = process.getuid?.() === 0;
const backend = (process.env.KNPM_BACKEND ?? 'auto') as 'auto' | 'nft' | 'legacy';

const CLIENT = { name: 'y/client', node: 1, ip: '10.244.1.10' };
const REMOTE = { name: 'z/remote', node: 2, ip: '10.244.2.10' };
/** How long after the new pod's network is up (and its server listens) the agent learns of it. */
const AGENT_LAG_MS = 400;
/** How much later the operator's view (its NpmIPSet write) includes the pod. */
const OPERATOR_LAG_MS = 400;
const PROBE_EVERY_MS = 40;
const PROBE_TIMEOUT_MS = 250;

function pod(name: string, ip: string, node: number, labels: Record<string, string>): Pod {
  const [namespace, n] = name.split('/') as [string, string];
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { namespace, name: n, uid: `uid-${name}-${ip}`, labels },
    spec: { nodeName: `n${node}`, containers: [{ name: 'c', ports: [{ containerPort: 80, protocol: 'TCP' }] }] },
    status: { phase: 'Running', podIP: ip, podIPs: [{ ip }] },
  };
}

const DENY_INGRESS: NetworkPolicy = {
  apiVersion: 'networking.k8s.io/v1',
  kind: 'NetworkPolicy',
  metadata: { namespace: 'x', name: 'deny-ingress', uid: 'uid-deny-ingress' },
  spec: { podSelector: { matchLabels: { app: 'guarded' } }, policyTypes: ['Ingress'] },
};

/** Node 1's agent as the daemon runs it, minus the API server. */
class NodeAgent {
  readonly startup: PodStartup;
  private readonly conv: Converger;
  private readonly lastApplied = new Map<string, NpmRuleSet>();
  private readonly cache: SetCache = new Map();
  private programmed: ProgrammedView | undefined;
  syncs = 0;

  constructor(
    readonly mode: PodStartupMode,
    netns: string,
    kernel: Backend,
  ) {
    this.startup = new PodStartup(mode);
    this.conv = new Converger({ exec: realExec({ netns }), backend: kernel, retry: { attempts: 2, initialDelayMs: 100 } });
  }

  /** One sync, plus follow-ups while a waiting pod became ready (the daemon's `urgent`). */
  async sync(operatorItems: readonly unknown[], agentPods: readonly Pod[], policies: readonly NetworkPolicy[]): Promise<void> {
    for (let round = 0; round < 4; round++) {
      const rulesets = operatorItems.filter((o): o is NpmRuleSet => (o as { kind?: string }).kind === RULESET_KIND);
      const ipsets = operatorItems.filter((o): o is NpmIPSet => (o as { kind?: string }).kind === IPSET_KIND);
      const pods = localPodsOf(agentPods.filter((p) => p.spec?.nodeName === 'n1'));
      const sel = selectLocal(rulesets, ipsets, new Set(pods.map((p) => p.ip)), this.lastApplied);
      const targets = policyTargets(policies);
      const next = selectionView(
        sel.objects.filter((o): o is NpmRuleSet => o.kind === RULESET_KIND),
        sel.objects.filter((o): o is NpmIPSet => o.kind === IPSET_KIND),
      );
      const admission = this.startup.admit(pods, targets, this.programmed, next, performance.now());
      const desired = buildDesired(sel.objects, { localPods: admission.ips, cache: this.cache, ...(this.mode === 'strict' ? { podCidrs: [nodePodSubnet(1)] } : {}) });
      expect(desired.problems).to.deep.equal([]);
      await this.conv.sync(desired);
      this.syncs++;
      this.lastApplied.clear();
      for (const o of sel.objects) if (o.kind === RULESET_KIND) this.lastApplied.set(`${o.metadata.namespace}/${o.metadata.name}`, o);
      this.programmed = appliedView(new Map(this.lastApplied), desired.sets);
      const done = this.startup.synced(pods, targets, new Set(admission.ips), this.programmed, performance.now());
      if (!done.followUp) {
        // The kernel equals the desired state, read back (canonical form of the strict rules included).
        const verify = await this.conv.syncOnce(desired, { dryRun: true });
        expect(planIsEmpty(verify.plan), 'kernel differs after sync').to.equal(true);
        return;
      }
    }
    throw new Error('follow-up syncs did not settle');
  }
}

interface ProbeRecord {
  sentAt: number;
  reached: boolean;
  error?: string;
}

/** Probes `to` from `from` every PROBE_EVERY_MS until stopped; each probe stamped with its send time. */
function prober(c: Cluster, from: string, to: string): { stop: () => Promise<ProbeRecord[]> } {
  const records: Promise<ProbeRecord>[] = [];
  let timer: NodeJS.Timeout | undefined = setInterval(() => {
    const sentAt = performance.now();
    records.push(
      c.probeDetailed(from, to, 80, 'TCP', PROBE_TIMEOUT_MS).then(
        (r) => ({ sentAt, reached: r.ok || r.error === 'ECONNREFUSED', ...(r.error ? { error: r.error } : {}) }),
        (e: unknown) => ({ sentAt, reached: false, error: String(e) }),
      ),
    );
  }, PROBE_EVERY_MS);
  return {
    async stop() {
      if (timer) clearInterval(timer);
      timer = undefined;
      return Promise.all(records);
    },
  };
}

const between = (rs: readonly ProbeRecord[], from: number, to: number): ProbeRecord[] => rs.filter((r) => r.sentAt >= from && r.sentAt < to);
const ms = (x: number): string => `${x.toFixed(0)} ms`;

interface Run {
  /** Creation of the new pod's namespace and veth starts (its network is up a few ms later). */
  created: number;
  /** addPod resolved: its server listens. */
  up: number;
  /** The agent's first sync that sees the pod starts / ends. */
  agentSeesStart: number;
  agentSeesEnd: number;
  /** The sync with the operator's update starts / ends. */
  operatorStart: number;
  operatorEnd: number;
  /** Probes from the client (same node), the remote pod (other node), and from the new pod out. */
  inLocal: ProbeRecord[];
  inRemote: ProbeRecord[];
  out: ProbeRecord[];
}

describe(`pod startup, real packets (backend ${backend})`, function () {
  this.timeout(120_000);
  let c: Cluster | undefined;
  let kernel: Backend = 'nft';
  let seq = 0;
  const newAgent = (mode: PodStartupMode): NodeAgent => new NodeAgent(mode, c!.nodeNs(1), kernel);

  before(async function () {
    if (!isRoot) {
      console.warn('      !!! SKIPPED: pod startup kernel test needs root (network namespaces, iptables)');
      this.skip();
    }
    c = await createCluster({ nodes: 2, pods: [CLIENT, REMOTE], defaultTimeoutMs: PROBE_TIMEOUT_MS });
    kernel = await detectBackend(realExec({ netns: c.nodeNs(1) }), backend, () => undefined);
    // Resolve the underlay neighbours (node 1 <-> node 2) before anything is measured: the first
    // cross-node packet of a fresh cluster triggers ARP between the nodes, and when that first
    // request is lost (seen in CI under load) the kernel retries only after ~1 s, so the open
    // window's cross-node probes all failed for a reason that has nothing to do with policy.
    for (const [from, to] of [[CLIENT.name, REMOTE.ip], [REMOTE.name, CLIENT.ip]] as const) {
      let ok = false;
      for (let i = 0; i < 20 && !ok; i++) ok = (await c.probeDetailed(from, to, 80, 'TCP', 500)).ok;
      if (!ok) throw new Error(`cross-node path ${from} -> ${to} never came up: the harness network is broken, not the policy`);
    }
  });

  after(async () => {
    if (!c) return;
    await runOnce({ cleanup: true, nodeName: 'n1', backend, exec: realExec({ netns: c.nodeNs(1) }) });
    await c.destroy();
  });

  /**
   * Starts pod x/<name> at `ip` on node 1 while probing it, lets the agent learn of it AGENT_LAG_MS
   * after its network is up and the operator OPERATOR_LAG_MS later, then keeps probing a while.
   */
  async function startPod(agent: NodeAgent, ip: string, labels: Record<string, string>, policies: NetworkPolicy[]): Promise<Run> {
    const cl = c!;
    const name = `x/p${++seq}`;
    const known = [pod(CLIENT.name, CLIENT.ip, 1, { app: 'client' }), pod(REMOTE.name, REMOTE.ip, 2, { app: 'remote' })];
    const ns = ['x', 'y', 'z'].map((n) => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: n, labels: { 'kubernetes.io/metadata.name': n } } }));
    const before = translate({ namespaces: ns, pods: known, policies }).items;
    await agent.sync(before, known, policies);

    const inLocal = prober(cl, CLIENT.name, ip);
    const created = performance.now();
    await cl.addPod({ name, node: 1, ip });
    const up = performance.now();
    // Cross-node probes start once the address exists: sent earlier, they leave node 1 with a
    // FAILED neighbour entry for it, which the kernel retries only after its retransmit time
    // (~1 s), so replies and inbound packets to the new pod would be lost for a reason that has
    // nothing to do with policy (the open window was then measured as 0 cross-node probes reached).
    const inRemote = prober(cl, REMOTE.name, ip);
    const out = prober(cl, name, REMOTE.ip);
    await new Promise((r) => setTimeout(r, AGENT_LAG_MS));
    const newPod = pod(name, ip, 1, labels);
    const agentSeesStart = performance.now();
    await agent.sync(before, [...known, newPod], policies); // the operator has not written the pod into its sets yet
    const agentSeesEnd = performance.now();
    await new Promise((r) => setTimeout(r, OPERATOR_LAG_MS));
    const operatorStart = performance.now();
    await agent.sync(translate({ namespaces: ns, pods: [...known, newPod], policies }).items, [...known, newPod], policies);
    const operatorEnd = performance.now();
    await new Promise((r) => setTimeout(r, 600));
    const run: Run = { created, up, agentSeesStart, agentSeesEnd, operatorStart, operatorEnd, inLocal: await inLocal.stop(), inRemote: await inRemote.stop(), out: await out.stop() };
    await cl.removePod(name);
    await agent.sync(before, known, policies);
    return run;
  }

  function report(label: string, r: Run, guarded: boolean): void {
    const first = (rs: ProbeRecord[], from = 0) => rs.find((x) => x.reached && x.sentAt >= from);
    const line = (what: string, rs: ProbeRecord[], inbound: boolean) => {
      const reached = rs.filter((x) => x.reached);
      const f = first(rs);
      const lastBlockedBeforeOk = f ? rs.filter((x) => !x.reached && x.sentAt < f.sentAt).length : rs.filter((x) => !x.reached).length;
      const open = f && guarded && inbound ? `; reached without its policies for ${ms(Math.max(0, r.operatorEnd - f.sentAt))} (first reached -> programmed)` : '';
      return `${what}: ${rs.length} probes, ${reached.length} reached; first reached ${f ? `at ${ms(f.sentAt - r.created)}` : 'never'}; ${lastBlockedBeforeOk} dropped before${open}`;
    };
    console.log(
      `      [${label}] times from pod creation: server listening ${ms(r.up - r.created)}, agent sync seeing it ${ms(r.agentSeesStart - r.created)}-${ms(r.agentSeesEnd - r.created)}, ` +
        `operator update programmed ${ms(r.operatorStart - r.created)}-${ms(r.operatorEnd - r.created)}`,
    );
    console.log(`      [${label}]   ${line('same-node in ', r.inLocal, true)}`);
    console.log(`      [${label}]   ${line('cross-node in', r.inRemote, true)}`);
    console.log(`      [${label}]   ${line('out          ', r.out, false)}`);
  }

  it('open: a new pod is reachable, and reaches out, before the agent knows it; under deny-all until the operator update is programmed', async () => {
    const agent = newAgent('open');
    const r = await startPod(agent, '10.244.1.20', { app: 'guarded' }, [DENY_INGRESS]);
    report('open, deny-all ingress', r, true);
    // The unprotected window exists: reached before the agent's first sync that sees the pod ...
    expect(between(r.inLocal, 0, r.agentSeesStart).some((x) => x.reached), 'same-node probes before the agent knew').to.equal(true);
    expect(between(r.inRemote, 0, r.agentSeesStart).some((x) => x.reached), 'cross-node probes before the agent knew').to.equal(true);
    expect(between(r.out, 0, r.agentSeesStart).some((x) => x.reached), 'outgoing probes before the agent knew').to.equal(true);
    // ... and lasts until the operator's update: the pod is judged without its own policy.
    expect(between(r.inLocal, r.agentSeesEnd, r.operatorStart).some((x) => x.reached), 'reached between agent and operator').to.equal(true);
    // Once programmed, the policy holds.
    expect(between(r.inLocal, r.operatorEnd, Infinity).filter((x) => x.reached)).to.deep.equal([]);
  });

  it('strict: nothing reaches a new pod or leaves it before the node is programmed for it; a pod without a policy is then allowed', async () => {
    const agent = newAgent('strict');
    const r = await startPod(agent, '10.244.1.21', { app: 'plain' }, [DENY_INGRESS]);
    report('strict, no policy', r, false);
    // The pod has no policy: it is admitted in the first sync that sees it.
    for (const [what, rs] of [['same-node in', r.inLocal], ['cross-node in', r.inRemote], ['out', r.out]] as const) {
      expect(between(rs, 0, r.agentSeesStart).filter((x) => x.reached), `${what}: reached before the agent knew the pod`).to.deep.equal([]);
      expect(between(rs, r.agentSeesEnd + 150, Infinity).filter((x) => !x.reached).length, `${what}: dropped after the pod was known`).to.equal(0);
      expect(between(rs, r.agentSeesEnd + 150, Infinity).length).to.be.greaterThan(0);
    }
  });

  it('strict: a new pod under a deny-all policy is never reachable, even while the operator lags; it reaches out once programmed', async () => {
    const agent = newAgent('strict');
    const r = await startPod(agent, '10.244.1.22', { app: 'guarded' }, [DENY_INGRESS]);
    report('strict, deny-all ingress', r, true);
    expect(r.inLocal.filter((x) => x.reached), 'same-node probes that reached the pod').to.deep.equal([]);
    expect(r.inRemote.filter((x) => x.reached), 'cross-node probes that reached the pod').to.deep.equal([]);
    // Egress is not restricted: it works once the node is programmed for the pod, never before.
    expect(between(r.out, 0, r.operatorStart).filter((x) => x.reached), 'out before programmed').to.deep.equal([]);
    expect(between(r.out, r.operatorEnd + 150, Infinity).filter((x) => !x.reached).length, 'out after programmed').to.equal(0);
  });

  it('strict: a pod reusing the address of a deleted pod starts unknown again', async () => {
    const agent = newAgent('strict');
    const first = await startPod(agent, '10.244.1.23', { app: 'plain' }, []);
    expect(between(first.inLocal, first.agentSeesEnd + 100, Infinity).every((x) => x.reached)).to.equal(true);
    const again = await startPod(agent, '10.244.1.23', { app: 'plain' }, []);
    report('strict, reused address', again, false);
    expect(between(again.inLocal, 0, again.agentSeesStart).filter((x) => x.reached), 'reached the new pod before the agent knew it').to.deep.equal([]);
    expect(between(again.out, 0, again.agentSeesStart).filter((x) => x.reached)).to.deep.equal([]);
  });
});
