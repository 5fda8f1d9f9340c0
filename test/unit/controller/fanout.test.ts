import { expect } from 'chai';
import sinon from 'sinon';
import type { NpmRuleSet } from '../../../operator/src/api/types.js';
import { Reconciler } from '../../../operator/src/controller/reconciler.js';
import { FakeCluster, ns, pod, policy } from './harness.js';

const NODES = ['n1', 'n2', 'n3'];
const POLICIES = 12;

/** 12 policies, policy i selecting one pod on node n(i % 3 + 1): each node concerns 4 rulesets. */
function cluster(): FakeCluster {
  const pods = [];
  const policies = [];
  for (let i = 0; i < POLICIES; i++) {
    pods.push(pod('prod', `web${i}`, NODES[i % 3]!, `10.244.${i % 3}.${10 + i}`, { app: `web${i}` }));
    policies.push(policy('prod', `p${i}`, { app: `web${i}` }));
  }
  pods.push(pod('prod', 'client', 'n1', '10.244.0.200', { role: 'client' }));
  return new FakeCluster({
    namespaces: [ns('prod')],
    pods,
    networkpolicies: policies,
    npmnodes: NODES.map((n) => ({ apiVersion: 'kubenpm.io/v1alpha1', kind: 'NpmNode', metadata: { name: n }, status: {} })),
  });
}

const concerned = (node: string) => [...Array(POLICIES).keys()].filter((i) => NODES[i % 3] === node).map((i) => `prod/p${i}`);
const programmed = (c: FakeCluster, name: string) => (c.get('npmrulesets', 'prod', name) as NpmRuleSet).status?.conditions?.find((x) => x.type === 'Programmed');

describe('operator: status fan-out of an NpmNode update (in-memory API server)', function () {
  this.timeout(20_000);
  let c: FakeCluster;
  let reconcile: sinon.SinonSpy;
  const statusRuns = () => reconcile.getCalls().filter((x) => String(x.args[0]).startsWith('Status/')).length;

  beforeEach(async () => {
    c = cluster();
    await c.start();
    // Every node but n1 reports everything it concerns; n1 reports all but p0.
    c.report('n1', concerned('n1').filter((k) => k !== 'prod/p0'));
    c.report('n2', concerned('n2'));
    c.report('n3', concerned('n3'));
    await c.settle();
    expect(programmed(c, 'p0')?.status).to.equal('False');
    expect(programmed(c, 'p1')?.status).to.equal('True');
    reconcile = sinon.spy(Reconciler.prototype, 'reconcile');
    c.writes.length = 0;
  });
  afterEach(async () => {
    reconcile.restore();
    await c.op.stop();
  });

  it('a node reporting one more ruleset: that ruleset\'s status alone is computed and written', async () => {
    c.report('n1', concerned('n1'));
    await c.settle();
    expect(programmed(c, 'p0')?.status).to.equal('True');
    expect(statusRuns()).to.equal(1);
    expect(c.writes).to.deep.equal(['status NpmRuleSet p0']);
  });

  it('a node\'s error: only the rulesets that node concerns are computed (and written: their message names it)', async () => {
    c.report('n2', concerned('n2'), { lastError: 'ipset restore: line 3: boom' });
    await c.settle();
    // The error flips no condition (n2 still holds each ruleset's generation): it is progress, which
    // is written within the reconciler's statusProgressMs (1 s) of the previous status write.
    await new Promise((r) => setTimeout(r, 1100));
    await c.settle();
    // Which rulesets were computed (a held-back status may be computed again when it comes due).
    const computed = new Set(reconcile.getCalls().map((x) => String(x.args[0])).filter((k) => k.startsWith('Status/')));
    expect([...computed].sort()).to.deep.equal(concerned('n2').map((k) => `Status/${k}`).sort());
    expect(c.writes.sort()).to.deep.equal(concerned('n2').map((k) => `status NpmRuleSet ${k.slice(5)}`).sort());
  });

  it('a report that moves nothing a status reads (watch positions): no computation, no write', async () => {
    c.report('n3', concerned('n3'), { observed: { ipsets: '12345' } });
    await c.settle();
    expect(statusRuns()).to.equal(0);
    expect(c.writes).to.deep.equal([]);
  });
});
