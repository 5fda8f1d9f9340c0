// The seeded benchmark generator emits only objects the API server accepts (issue #10): the
// benches measure clusters that can exist, checked as `kube-npm translate` checks its input.
import { expect } from 'chai';
import { syntheticCluster } from '../../bench/synthetic.js';
import { assertValidSnapshot, snapshotErrors } from '../../bench/validate.js';

describe('bench generator (test/bench/synthetic.ts)', () => {
  it('emits a valid cluster at the benches\' seed and policy count (no ipBlock except outside its cidr)', () => {
    const snap = syntheticCluster({ namespaces: 100, pods: 2000, policies: 1000, seed: 42 });
    expect(snapshotErrors(snap)).to.deep.equal([]);
    // The mix the benches rely on is still there: ipBlocks with except.
    const excepts = snap.policies.flatMap((p) => (p.spec.egress ?? []).flatMap((r) => (r.to ?? []).flatMap((t) => t.ipBlock?.except ?? [])));
    expect(excepts.length).to.be.greaterThan(100);
  });

  it('is valid for other seeds too', () => {
    for (const seed of [1, 7, 1234]) expect(snapshotErrors(syntheticCluster({ namespaces: 10, pods: 100, policies: 300, seed })), `seed ${seed}`).to.deep.equal([]);
  });

  it('validation names the problem, as the CLI does', () => {
    const snap = syntheticCluster({ namespaces: 2, pods: 4, policies: 0, seed: 1 });
    snap.policies.push({ metadata: { name: 'bad', namespace: 'ns-000', uid: 'u' }, spec: { podSelector: {}, policyTypes: ['Egress'], egress: [{ to: [{ ipBlock: { cidr: '10.0.0.0/16', except: ['10.1.0.0/24'] } }] }] } });
    expect(() => assertValidSnapshot(snap)).to.throw(/NetworkPolicy ns-000\/bad: .*except/);
  });
});
