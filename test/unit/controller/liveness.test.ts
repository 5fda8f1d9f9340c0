import { expect } from 'chai';
import type { KubernetesObject } from '@kubernetes/client-node';
import type { Condition, NpmNode, NpmRuleSet } from '../../../operator/src/api/types.js';
import type { Clock } from '../../../operator/src/framework/backoff.js';
import { FakeCluster, ns, pod, policy } from './harness.js';

/** Time moves only when the test says so. */
class ManualClock implements Clock {
  t = Date.parse('2026-12-01T12:00:00Z');
  private sleepers: { at: number; wake: () => void }[] = [];
  now = () => this.t;
  sleep = (ms: number, signal?: AbortSignal) =>
    new Promise<void>((resolve) => {
      this.sleepers.push({ at: this.t + ms, wake: resolve });
      signal?.addEventListener('abort', () => resolve());
    });
  advance(ms: number): void {
    this.t += ms;
    const due = this.sleepers.filter((s) => s.at <= this.t);
    this.sleepers = this.sleepers.filter((s) => s.at > this.t);
    for (const s of due) s.wake();
  }
}

const lease = (node: string, renewedAt: number): KubernetesObject =>
  ({ apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name: `kube-npm-agent-${node}`, namespace: 'kube-npm-system' }, spec: { holderIdentity: node, leaseDurationSeconds: 4, renewTime: new Date(renewedAt).toISOString() } }) as KubernetesObject;
const ready: Condition = { type: 'Ready', status: 'True', reason: 'Synced', message: 'programmed 1 rulesets', lastTransitionTime: '2026-12-01T11:00:00Z' };

describe('operator: agent liveness from the agents\' Leases (in-memory API server, manual clock)', function () {
  this.timeout(20_000);
  let c: FakeCluster;
  let clock: ManualClock;
  const node = (n: string) => c.get('npmnodes', undefined, n) as NpmNode;
  const readyOf = (n: string) => node(n).status?.conditions?.find((x) => x.type === 'Ready');
  const programmed = (name: string) => (c.get('npmrulesets', 'prod', name) as NpmRuleSet).status?.conditions?.find((x) => x.type === 'Programmed');

  beforeEach(async () => {
    clock = new ManualClock();
    c = new FakeCluster({
      namespaces: [ns('prod')],
      pods: [pod('prod', 'a', 'n1', '10.244.1.10', { app: 'a' }), pod('prod', 'b', 'n2', '10.244.2.10', { app: 'b' })],
      networkpolicies: [policy('prod', 'pa', { app: 'a' }), policy('prod', 'pb', { app: 'b' })],
      npmnodes: ['n1', 'n2'].map((n) => ({ apiVersion: 'kubenpm.io/v1alpha1', kind: 'NpmNode', metadata: { name: n }, status: { lastError: '', conditions: [ready] } }) as unknown as KubernetesObject),
      leases: [lease('n1', clock.t), lease('n2', clock.t), { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name: 'kube-npm-operator', namespace: 'kube-npm-system' }, spec: { holderIdentity: 'op-1', leaseDurationSeconds: 1, renewTime: new Date(clock.t - 60_000).toISOString() } } as KubernetesObject],
    });
    await c.start({ clock });
    c.report('n1', ['prod/pa'], { conditions: [ready] });
    c.report('n2', ['prod/pb'], { conditions: [ready] });
    await c.settle();
    expect(programmed('pa')?.status).to.equal('True');
    c.writes.length = 0;
  });
  afterEach(async () => {
    await c.op.stop();
  });

  it('a node whose Lease is not renewed for 2 lease periods: NpmNode Ready False and its rulesets not Programmed (AgentNotReporting, naming it); back when it renews', async () => {
    clock.advance(6_000);
    c.put('leases', lease('n2', clock.t)); // n2's agent lives on
    await c.settle();
    expect(c.writes, 'nothing before 2 periods').to.deep.equal([]);
    clock.advance(2_001); // 8.001 s after n1's last renewal
    await c.settle();
    expect(readyOf('n1')).to.include({ status: 'False', reason: 'AgentNotReporting' });
    expect(readyOf('n1')!.message).to.contain('node n1 is not reporting').and.contain('2026-12-01T12:00:00.000Z');
    expect(programmed('pa')).to.include({ status: 'False', reason: 'AgentNotReporting' });
    expect(programmed('pa')!.message).to.contain('the agent on node n1 is not reporting (last seen 2026-12-01T12:00:00.000Z)');
    // Nothing else: n2 and the ruleset it alone concerns are left alone (the operator's own lease too).
    expect(c.writes.sort()).to.deep.equal(['status NpmNode n1 Ready=False/AgentNotReporting', 'status NpmRuleSet pa']);
    expect(readyOf('n2')?.status).to.equal('True');
    c.writes.length = 0;
    c.put('leases', lease('n1', clock.t));
    await c.settle();
    expect(readyOf('n1')).to.include({ status: 'True', reason: 'Synced' });
    expect(programmed('pa')?.status).to.equal('True');
    expect(c.writes.sort()).to.deep.equal(['status NpmNode n1 Ready=True/Synced', 'status NpmRuleSet pa']);
  });
});
