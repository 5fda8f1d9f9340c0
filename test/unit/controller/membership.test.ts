import { expect } from 'chai';
import type { NpmIPSet, NpmNode, NpmRuleSet } from '../../../operator/src/api/types.js';
import { indexShards, membershipCondition, rvAtLeast, setProgrammers, type PodMembership } from '../../../operator/src/controller/membership.js';
import { TranslationEngine } from '../../../operator/src/translate/engine.js';

const pod = (name: string, ip: string, labels: Record<string, string>, node: string) => ({
  metadata: { name, namespace: 'prod', labels },
  spec: { nodeName: node },
  status: { phase: 'Running', podIP: ip },
});
const node = (name: string, observed?: { ipsets?: string; pods?: string }, applied: NpmNode['status'] extends infer S ? S extends { applied?: infer A } ? A : never : never = []): NpmNode => ({
  apiVersion: 'kubenpm.io/v1alpha1', kind: 'NpmNode', metadata: { name }, status: { applied, ...(observed ? { observed } : {}) },
});

/** The operator's view: engine (desired) and API server objects (actual) with resourceVersions. */
function world() {
  const engine = new TranslationEngine();
  engine.upsertPod(pod('web', '10.244.1.10', { app: 'web' }, 'n1'));
  engine.upsertPod(pod('db', '10.244.2.20', { app: 'db' }, 'n2'));
  // db isolates its pods and allows app=web: the peer set (app=web) is programmed on n2.
  engine.upsertPolicy({ metadata: { name: 'db', namespace: 'prod', uid: 'u1' }, spec: { podSelector: { matchLabels: { app: 'db' } }, ingress: [{ from: [{ podSelector: { matchLabels: { app: 'web' } } }] }] } });
  engine.drain();
  let rv = 100;
  const stamp = <T extends NpmIPSet | NpmRuleSet>(o: T): T => ({ ...structuredClone(o), metadata: { ...structuredClone(o.metadata), resourceVersion: String(++rv) } });
  const actualSets = new Map<string, NpmIPSet>();
  const rulesets: NpmRuleSet[] = [];
  const writeAll = () => {
    for (const n of engine.ipSetObjectNames()) {
      const want = engine.ipSetObject(n)!;
      const have = actualSets.get(n);
      if (!have || JSON.stringify(have.spec) !== JSON.stringify(want.spec)) actualSets.set(n, stamp(want));
    }
    for (const n of [...actualSets.keys()]) if (!engine.ipSetObject(n)) actualSets.delete(n);
    rulesets.length = 0;
    for (const k of engine.policyKeys()) {
      const [ns, name] = k.split('/') as [string, string];
      rulesets.push(stamp(engine.ruleset(ns, name)!));
    }
  };
  writeAll();
  const condition = (p: PodMembership, nodes: Map<string, NpmNode>) =>
    membershipCondition(
      p,
      indexShards(engine.ipSetObjectNames().map((n) => engine.ipSetObject(n)!)),
      indexShards(actualSets.values()),
      (n) => actualSets.get(n),
      setProgrammers(rulesets, nodes, (ns, name) => engine.concernedNodes(ns, name)),
      nodes,
    );
  const webShardRv = () => [...actualSets.values()].find((s) => s.spec.members.includes('10.244.1.10'))?.metadata.resourceVersion;
  return { engine, actualSets, writeAll, condition, webShardRv, rv: () => rv };
}

describe('membership signal (pod condition kubenpm.io/PolicyProgrammed)', () => {
  it('resourceVersions compare as integers; anything else never satisfies', () => {
    expect(rvAtLeast('10', '9')).to.equal(true);
    expect(rvAtLeast('9', '10')).to.equal(false);
    expect(rvAtLeast('123456789012345678901', '123456789012345678900')).to.equal(true);
    expect(rvAtLeast(undefined, '1')).to.equal(false);
    expect(rvAtLeast('abc', '1')).to.equal(false);
  });

  it('a relabel is Pending until the set is written, then until every node programming it reports the shard\'s resourceVersion', () => {
    const w = world();
    const before = w.webShardRv()!;
    // n2 programs the peer set (app=web) of policy db; n1 hosts web. Both caught up: True.
    const nodes = new Map([['n1', node('n1', { ipsets: before, pods: '50' })], ['n2', node('n2', { ipsets: before, pods: '50' }, [{ namespace: 'prod', name: 'db', generation: 1, uid: 'u1' }])]]);
    expect(w.condition({ ip: '10.244.1.10', node: 'n1', podRV: '50', since: '50' }, nodes)).to.include({ status: 'True', reason: 'Programmed' });

    // web is relabelled (rv 60): it leaves app=web, so db must stop allowing it. The operator notes
    // the shards that held its IP when it saw the change.
    const former = [...w.actualSets.values()].filter((s) => s.spec.members.includes('10.244.1.10')).map((s) => s.metadata.name);
    expect(former).to.have.length(1);
    w.engine.upsertPod(pod('web', '10.244.1.10', { app: 'other' }, 'n1'));
    const p: PodMembership = { ip: '10.244.1.10', node: 'n1', podRV: '60', since: '60', former };
    const c1 = w.condition(p, nodes);
    expect(c1).to.include({ status: 'False', reason: 'Pending' });
    expect(c1.message).to.match(/not written yet/);
    w.writeAll();
    const after = [...w.actualSets.values()].find((s) => s.spec.meaning.includes('app=web'))!.metadata.resourceVersion!;
    expect(Number(after)).to.be.greaterThan(Number(before));
    // Written, but n2 (which programs the set) and n1 (own node) have not caught up.
    expect(w.condition(p, nodes).message).to.contain('waiting for n1, n2');
    nodes.set('n1', node('n1', { ipsets: after, pods: '60' }));
    expect(w.condition(p, nodes).message).to.contain('waiting for n2');
    expect(w.condition(p, nodes).status).to.equal('False');
    nodes.set('n2', node('n2', { ipsets: after, pods: '70' }, [{ namespace: 'prod', name: 'db', generation: 1, uid: 'u1' }]));
    const done = w.condition(p, nodes);
    expect(done).to.include({ status: 'True', reason: 'Programmed' });
    expect(done.message).to.equal('membership as of resourceVersion 60 enforced on n1, n2');
    // Without the former shards the set it left is invisible once written: only its own node counts.
    nodes.set('n2', node('n2', { ipsets: before, pods: '70' }, [{ namespace: 'prod', name: 'db', generation: 1, uid: 'u1' }]));
    expect(w.condition({ ...p, former: [] }, nodes).status).to.equal('True');
    expect(w.condition(p, nodes).status, 'with them, n2 is still waited for').to.equal('False');
  });

  it('a new pod entering a target set needs its own node to have seen it and the set', () => {
    const w = world();
    w.engine.upsertPod(pod('db2', '10.244.1.30', { app: 'db' }, 'n1'));
    w.writeAll();
    const rv = [...w.actualSets.values()].find((s) => s.spec.members.includes('10.244.1.30'))!.metadata.resourceVersion!;
    const p: PodMembership = { ip: '10.244.1.30', node: 'n1', podRV: '80', since: '80' };
    // n1 has the set at that version but has not yet seen the pod (its pods watch is behind).
    const nodes = new Map([['n1', node('n1', { ipsets: rv, pods: '79' })], ['n2', node('n2', { ipsets: rv, pods: '1' })]]);
    expect(w.condition(p, nodes)).to.include({ status: 'False' });
    expect(w.condition(p, nodes).message).to.contain('waiting for n1');
    nodes.set('n1', node('n1', { ipsets: rv, pods: '80' }));
    expect(w.condition(p, nodes)).to.include({ status: 'True' });
    // A pod still waiting for its address is not programmed; a hostNetwork or finished one needs nothing.
    expect(w.condition({ ip: undefined, node: 'n1', podRV: '90', since: '90', awaitingIP: true }, nodes)).to.include({ status: 'False' });
    expect(w.condition({ ip: undefined, node: 'n1', podRV: '90', since: '90' }, nodes)).to.include({ status: 'True' });
    // A node without any report vouches for nothing.
    nodes.delete('n2');
    expect(w.condition(p, nodes)).to.include({ status: 'False' });
  });
});
