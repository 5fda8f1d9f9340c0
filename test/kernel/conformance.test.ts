// Packet-level conformance: every upstream e2e case, every TCP/UDP cell of every step, through
// translate -> agent --once on each node -> real TCP/UDP probes between pod network namespaces.
// Two nodes (pods spread so same-node and cross-node pairs both occur); the kernel is never reset
// between cases: each apply converges from whatever the previous case left.
import { expect } from 'chai';
import { realExec } from '../../operator/src/agent/exec.js';
import { runOnce } from '../../operator/src/agent/once.js';
import { translate } from '../../operator/src/translate/engine.js';
import { Model, POD_IPS, PODS, expectedMatrix, loadCases, nodeOf, type Probe } from '../support/conformance.js';
import { createCluster, diffMatrix, type Cluster } from './harness/cluster.js';

const isRoot = process.getuid?.() === 0;
const backend = (process.env.KNPM_BACKEND ?? 'auto') as 'auto' | 'nft' | 'legacy';
const TIMEOUT_MS = 800;

describe(`upstream e2e cases, packet level (backend ${backend})`, function () {
  this.timeout(0);
  let cluster: Cluster | undefined;

  before(async function () {
    if (!isRoot) {
      console.warn('      !!! SKIPPED: packet-level conformance needs root (network namespaces, iptables)');
      this.skip();
    }
    cluster = await createCluster({ nodes: 2, pods: PODS.map((name) => ({ name, node: nodeOf(name), ip: POD_IPS[name]! })), defaultTimeoutMs: TIMEOUT_MS });
  });

  after(async () => {
    if (!cluster) return;
    for (const k of [1, 2]) await runOnce({ cleanup: true, nodeName: `n${k}`, backend, exec: realExec({ netns: cluster.nodeNs(k) }) });
    await cluster.destroy();
  });

  async function applyEverywhere(model: Model): Promise<void> {
    const { items, problems } = translate(model.snapshot());
    expect(problems).to.deep.equal([]);
    for (const k of [1, 2]) {
      // allowEmpty: a step may delete every policy ("no policy" is meant; agent --once refuses it otherwise).
      const r = await runOnce({ objects: items, nodeName: `n${k}`, backend, exec: realExec({ netns: cluster!.nodeNs(k) }), allowEmpty: true });
      expect(r.exitCode, r.summary).to.equal(0);
    }
  }

  async function check(probe: Probe, label: string): Promise<string[]> {
    const want = expectedMatrix(probe);
    const got = await cluster!.probeMatrix(probe.port, probe.protocol as 'TCP' | 'UDP', { timeoutMs: TIMEOUT_MS });
    // An allowed connection that timed out once may be the machine being slow: ask again, once.
    // A denied connection that got through is a leak and is never retried.
    for (const [pair, ok] of got) {
      if (!ok && want.get(pair)) {
        const [from, to] = pair.split('->') as [string, string];
        got.set(pair, await cluster!.probe(from, to, probe.port, probe.protocol as 'TCP' | 'UDP', 3000));
      }
    }
    return diffMatrix(got, want).map((d) => `${label} ${probe.protocol}/${probe.port}: ${d}`);
  }

  for (const c of loadCases()) {
    it(c.id, async () => {
      const model = new Model();
      model.apply(c.policies.map((p) => ({ createPolicy: p })));
      const failures: string[] = [];
      for (const [i, step] of c.steps.entries()) {
        model.apply(step.actions);
        await applyEverywhere(model);
        const probes = step.expected.filter((p) => p.protocol === 'TCP' || p.protocol === 'UDP');
        const results = await Promise.all(probes.map((p) => check(p, `step ${i}`)));
        failures.push(...results.flat());
      }
      expect(failures).to.deep.equal([]);
    });
  }
});
