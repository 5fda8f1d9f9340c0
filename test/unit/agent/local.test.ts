// Node-local judging: with the node's pod IPs, the direction chains are entered only for local
// pods, so a node that holds only its own pods' policies never judges a remote pod by a partial view.
import { expect } from 'chai';
import { LOCAL_PODS_SET } from '../../../operator/src/api/names.js';
import { buildDesired } from '../../../operator/src/agent/model.js';
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
