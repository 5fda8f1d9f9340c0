// Node-local judging: with the node's pod IPs, the direction chains are entered only for local
// pods, so a node that holds only its own pods' policies never judges a remote pod by a partial view.
import { expect } from 'chai';
import { LOCAL_PODS_SET } from '../../../operator/src/api/names.js';
import { buildDesired } from '../../../operator/src/agent/model.js';
import { planIpsets } from '../../../operator/src/agent/ipset/plan.js';
import { deltaOf } from '../../../operator/src/agent/ipset/render.js';
import { translate } from '../../../operator/src/translate/engine.js';

const objects = translate({
  namespaces: [],
  pods: [{ metadata: { name: 'a', namespace: 'x' }, status: { phase: 'Running', podIP: '10.244.1.10' } }],
  policies: [{ metadata: { name: 'deny', namespace: 'x' }, spec: { podSelector: {} } }],
}).items;

describe('agent: node-local judging', () => {
  it('daemon mode: KNPM-FORWARD enters the direction chains only for local pods', () => {
    const d = buildDesired(objects, { localPods: ['10.244.1.10', '10.244.1.11'] });
    expect([...d.sets.get(LOCAL_PODS_SET)!.members.values()]).to.deep.equal(['10.244.1.10', '10.244.1.11']);
    const fwd = d.chains.get('KNPM-FORWARD')!;
    expect(fwd).to.include(`-m set --match-set ${LOCAL_PODS_SET} src -j KNPM-EGRESS`);
    expect(fwd).to.include(`-m set --match-set ${LOCAL_PODS_SET} dst -j KNPM-INGRESS`);
  });

  it('--once mode (every policy of the cluster on every node): every packet is judged', () => {
    const d = buildDesired(objects);
    expect(d.sets.has(LOCAL_PODS_SET)).to.equal(false);
    expect(d.chains.get('KNPM-FORWARD')).to.include('-j KNPM-INGRESS');
  });
});

describe('agent: set cache across builds', () => {
  it('reuses the member map of a set whose shard objects are unchanged, rebuilds a changed one', () => {
    const cache = new Map();
    const a = buildDesired(objects, { cache });
    const b = buildDesired(objects, { cache });
    const name = [...a.sets.keys()].find((n) => n.startsWith('KNPM-S-'))!;
    expect(b.sets.get(name)!.members).to.equal(a.sets.get(name)!.members);
    const changed = objects.map((o) => (o.kind === 'NpmIPSet' ? { ...o, spec: { ...o.spec, members: ['10.244.1.10', '10.244.1.99'] } } : o));
    const c = buildDesired(changed, { cache });
    expect(c.sets.get(name)!.members).to.not.equal(a.sets.get(name)!.members);
    expect([...c.sets.get(name)!.members.values()]).to.deep.equal(['10.244.1.10', '10.244.1.99']);
  });
});

describe('agent: member deltas from changed shards', () => {
  it('a changed shard becomes an O(delta) plan that equals a full rebuild', () => {
    const pods = Array.from({ length: 3000 }, (_, i) => ({
      metadata: { name: `p${i}`, namespace: 'x' },
      status: { phase: 'Running', podIP: `10.244.${1 + (i >> 8)}.${i & 255}` },
    }));
    const policies = [{ metadata: { name: 'deny', namespace: 'x' }, spec: { podSelector: {} } }];
    const before = translate({ namespaces: [], pods, policies }).items;
    const cache = new Map();
    const d1 = buildDesired(before, { cache });
    // Pod p5 goes, a new pod comes: one shard (or two) of the 4 changes; keep the others' identity.
    const after = translate({ namespaces: [], pods: [...pods.filter((p) => p.metadata.name !== 'p5'), { metadata: { name: 'new', namespace: 'x' }, status: { phase: 'Running', podIP: '10.244.99.1' } }], policies }).items;
    const mixed = after.map((o) => before.find((b) => b.kind === o.kind && b.metadata.name === o.metadata.name && JSON.stringify(b) === JSON.stringify(o)) ?? o);
    const d2 = buildDesired(mixed, { cache });
    const name = [...d2.sets.keys()].find((n) => n.startsWith('KNPM-S-'))!;
    expect(deltaOf(d2.sets.get(name)!.members)?.base, 'derived from the cached map').to.equal(d1.sets.get(name)!.members);
    const plan = planIpsets(d2.sets, new Map([...d1.sets].map(([n, s]) => [n, { name: n, type: s.type, family: 'inet', maxelem: 65536, options: [], members: s.members }])) as never);
    expect(plan.apply).to.deep.equal([`add -exist ${name} 10.244.99.1`, `del -exist ${name} ${pods[5]!.status.podIP}`]);
    const full = buildDesired(after);
    expect(new Map([...d2.sets.get(name)!.members].sort())).to.deep.equal(new Map([...full.sets.get(name)!.members].sort()));
  });
});
