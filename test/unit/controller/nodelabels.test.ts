import { expect } from 'chai';
import { nodeLabelKey } from '../../../operator/src/api/names.js';
import type { NpmIPSet, NpmRuleSet } from '../../../operator/src/api/types.js';
import { FakeCluster, ns, pod, policy } from './harness.js';

const N2 = nodeLabelKey('n2');

describe('operator: node labels on rulesets and shards (in-memory API server)', function () {
  this.timeout(20_000);
  let c: FakeCluster;
  const rs = () => c.get('npmrulesets', 'prod', 'p') as NpmRuleSet;
  const shards = () => [...c.store.values()].filter((o): o is never => o.kind === 'NpmIPSet') as NpmIPSet[];
  const objectWrites = () => c.writes.filter((w) => !w.startsWith('status '));

  beforeEach(async () => {
    c = new FakeCluster({
      namespaces: [ns('prod')],
      pods: [pod('prod', 'web1', 'n1', '10.244.1.10', { app: 'web' }), pod('prod', 'client', 'n3', '10.244.3.10', { role: 'client' })],
      networkpolicies: [policy('prod', 'p', { app: 'web' })],
    });
    await c.start();
  });
  afterEach(async () => {
    await c.op.stop();
  });

  it('labels the ruleset and every shard of its sets for the nodes hosting a pod it selects', () => {
    expect(Object.keys(rs().metadata.labels!).filter((k) => k.startsWith('node.'))).to.deep.equal([nodeLabelKey('n1')]);
    expect(shards()).to.have.length(2); // the target set (app=web) and the peer set (role=client)
    // The peer set's own pod lives on n3: that does not make n3 program the policy.
    for (const s of shards()) expect(Object.keys(s.metadata.labels!).filter((k) => k.startsWith('node.'))).to.deep.equal([nodeLabelKey('n1')]);
  });

  it('a selected pod on a new node: its sets\' shards are labelled first, then the ruleset; no other writes', async () => {
    c.writes.length = 0;
    c.put('pods', pod('prod', 'web2', 'n2', '10.244.2.10', { app: 'web' }));
    await c.settle();
    const writes = objectWrites();
    const target = shards().find((s) => s.spec.members.some((m) => m.startsWith('10.244.1.10')))!.metadata.name;
    const peer = shards().find((s) => s.metadata.name !== target)!.metadata.name;
    const label = `/metadata/labels/${N2.replace('/', '~1')}`;
    // One patch per object: the target shard gains the member and the label at once.
    expect(writes).to.have.length(3);
    expect(writes.slice(0, 2).sort()).to.deep.equal([
      `patch NpmIPSet ${peer} add ${label}`,
      `patch NpmIPSet ${target} add /spec/members/1, replace /spec/memberCount, add ${label}`,
    ].sort());
    expect(writes[2]).to.equal(`patch NpmRuleSet p add ${label}`);
    for (const s of shards()) expect(s.metadata.labels).to.have.property(N2, '');
    expect(rs().metadata.labels).to.have.property(N2, '');
  });

  it('the last selected pod leaves a node: its member goes at once; the ruleset is unlabelled first, then the shards', async () => {
    c.put('pods', pod('prod', 'web2', 'n2', '10.244.2.10', { app: 'web' }));
    await c.settle();
    c.writes.length = 0;
    c.remove('pods', 'prod', 'web2');
    await c.settle();
    const writes = objectWrites();
    const label = `remove /metadata/labels/${N2.replace('/', '~1')}`;
    const rsAt = writes.findIndex((w) => w === `patch NpmRuleSet p ${label}`);
    expect(rsAt, writes.join('\n')).to.be.greaterThan(-1);
    const shardWrites = writes.filter((w) => w.startsWith('patch NpmIPSet') && w.includes(label));
    expect(shardWrites).to.have.length(2);
    for (const w of shardWrites) expect(writes.indexOf(w)).to.be.greaterThan(rsAt);
    // Plus the member leaving the target shard, at once (it does not wait for the label's order).
    expect(writes, writes.join('\n')).to.have.length(4);
    const rest = writes.filter((w) => !shardWrites.includes(w) && w !== `patch NpmRuleSet p ${label}`);
    expect(rest).to.have.length(1);
    expect(rest[0]).to.match(/^patch NpmIPSet \S+ remove \/spec\/members\/1, replace \/spec\/memberCount$/);
    for (const s of shards()) expect(s.metadata.labels).not.to.have.property(N2);
  });
});
