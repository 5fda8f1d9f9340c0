// ADR 0015 at the operator: a shard write asks its nodes to acknowledge only when a gated pod
// waits for it, and a shard left unacknowledged by a reporting node is asked again after a grace.
import type { KubernetesObject } from '@kubernetes/client-node';
import { expect } from 'chai';
import { POD_CONDITION } from '../../../operator/src/api/types.js';
import type { MembershipCondition } from '../../../operator/src/controller/membership.js';
import { FakeCluster, ns, pod, policy } from './harness.js';

const NODES = ['n1', 'n2', 'n3'];
const ALL = '999999999';

const gated = (o: KubernetesObject): KubernetesObject => ({ ...o, spec: { ...(o as { spec: object }).spec, readinessGates: [{ conditionType: POD_CONDITION }] } }) as KubernetesObject;

describe('operator: acknowledgment requests (ADR 0015, in-memory API server)', function () {
  this.timeout(20_000);
  let c: FakeCluster;
  const conditions: { pod: string; cond: MembershipCondition }[] = [];
  const last = (name: string) => conditions.filter((x) => x.pod === `prod/${name}`).at(-1)?.cond;
  const shardWrites = () => c.writes.filter((w) => w.startsWith('patch NpmIPSet') || w.startsWith('create NpmIPSet'));
  const asks = () => shardWrites().filter((w) => w.includes('/metadata/annotations'));
  /** The newest resourceVersion the in-memory API server gave out. */
  const newest = () => String(Math.max(...[...c.store.values()].map((o) => Number(o.metadata?.resourceVersion ?? 0))));
  const seen = new Map<string, string>();
  /** Every node reports the rulesets it programs; all but the `lagging` ones acknowledge every shard written so far. */
  const reportAll = (lagging: string[] = []) => {
    const now = newest();
    for (const n of NODES) {
      if (!lagging.includes(n)) seen.set(n, now);
      c.report(n, n === 'n1' ? ['prod/p'] : [], { observed: { ipsets: seen.get(n) ?? '0', pods: ALL } });
    }
  };

  beforeEach(async () => {
    conditions.length = 0;
    seen.clear();
    c = new FakeCluster({
      namespaces: [ns('prod')],
      pods: [pod('prod', 'web', 'n1', '10.244.0.10', { app: 'web' }), pod('prod', 'client', 'n2', '10.244.1.10', { role: 'client' })],
      networkpolicies: [policy('prod', 'p', { app: 'web' })],
      npmnodes: NODES.map((n) => ({ apiVersion: 'kubenpm.io/v1alpha1', kind: 'NpmNode', metadata: { name: n }, status: {} })),
    });
    await c.start({
      askGraceMs: 100,
      patchPodCondition: async (namespace, name, cond) => void conditions.push({ pod: `${namespace}/${name}`, cond }),
    });
    reportAll();
    await c.settle();
    c.writes.length = 0;
  });
  afterEach(async () => {
    await c.op.stop();
  });

  it('an ungated pod joining a set: the shard write carries no request', async () => {
    c.put('pods', pod('prod', 'client2', 'n3', '10.244.2.10', { role: 'client' }));
    await c.settle();
    expect(shardWrites()).to.have.length(1);
    expect(asks()).to.deep.equal([]);
    expect(conditions).to.deep.equal([]);
  });

  it('a gated pod joining a set: the shard write asks; once the nodes acknowledge, the condition is True and nothing more is asked', async () => {
    c.put('pods', gated(pod('prod', 'client2', 'n3', '10.244.2.10', { role: 'client' })));
    await c.settle(30); // within the ask grace (100 ms)
    expect(shardWrites()).to.have.length(1);
    expect(asks(), 'the member write carries the request').to.have.length(1);
    expect(last('client2')?.status).to.equal('False');
    reportAll();
    await c.settle(300);
    expect(last('client2')?.status).to.equal('True');
    expect(last('client2')?.message).to.contain('n1');
    expect(asks()).to.have.length(1);
  });

  it('a reporting node that does not acknowledge is asked again after the grace, by a write of the request alone', async () => {
    c.put('pods', gated(pod('prod', 'client2', 'n3', '10.244.2.10', { role: 'client' })));
    await c.settle(50);
    reportAll(['n1']);
    // Past the grace (100 ms): one more request, written alone (the members did not change).
    await c.settle(400);
    expect(asks().length).to.be.at.least(2);
    expect(asks()[1]).to.match(/^patch NpmIPSet \S+ add \/metadata\/annotations\/kubenpm.io~1ack$/);
    expect(last('client2')?.status).to.equal('False');
    expect(last('client2')?.message).to.contain('waiting for n1');
    // n1 answers: True, and the asking stops.
    reportAll();
    await c.settle(300);
    expect(last('client2')?.status).to.equal('True');
    const n = asks().length;
    await c.settle(500);
    expect(asks()).to.have.length(n);
  });
});
