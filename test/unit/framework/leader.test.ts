/** LeaderElector against an in-memory Lease store with resourceVersion checks, on sinon's fake clock. */
import { expect } from 'chai';
import sinon from 'sinon';
import { KubeConfig, V1MicroTime } from '@kubernetes/client-node';
import { LeaderElector, type LeaderOptions } from '../../../operator/src/framework/leader.js';
import { FakeLeaseStore, flush } from './fakes.js';

interface Candidate {
  le: LeaderElector;
  api: ReturnType<FakeLeaseStore['api']>;
  events: string[];
  done: Promise<void>;
}

describe('framework LeaderElector', () => {
  let clock: sinon.SinonFakeTimers;
  let store: FakeLeaseStore;
  let logs: string[];
  let t0: number;

  beforeEach(() => {
    clock = sinon.useFakeTimers({ now: Date.parse('2026-11-26T10:00:00Z'), toFake: ['setTimeout', 'clearTimeout', 'Date'] });
    t0 = Date.now();
    store = new FakeLeaseStore();
    logs = [];
  });
  afterEach(() => clock.restore());

  function candidate(identity: string, o: Partial<LeaderOptions> = {}): Candidate {
    const api = store.api();
    const events: string[] = [];
    const le = new LeaderElector({
      kc: new KubeConfig(),
      namespace: 'kube-npm',
      name: 'kube-npm-operator',
      identity,
      api,
      log: (m) => logs.push(m),
      ...o,
    });
    const done = le.run({
      onStartedLeading: () => void events.push(`started@${Date.now() - t0}`),
      onStoppedLeading: () => void events.push(`stopped@${Date.now() - t0} holder=${store.holder}`),
    });
    return { le, api, events, done };
  }

  /** Advance fake time in 100 ms steps, letting promise chains run in between. */
  async function advance(ms: number): Promise<void> {
    for (let i = 0; i < ms; i += 100) {
      await clock.tickAsync(100);
      await flush(3);
    }
  }

  it('creates the Lease when missing, leads, and renews every retryPeriod with microsecond times', async () => {
    const a = candidate('a');
    await flush();
    expect(a.le.isLeader()).to.equal(true);
    expect(a.events).to.deep.equal(['started@0']);
    const created = store.writes[0];
    expect(created?.spec?.renewTime).to.be.instanceOf(V1MicroTime);
    expect(store.lease?.spec).to.deep.include({ holderIdentity: 'a', leaseDurationSeconds: 15, leaseTransitions: 0 });
    expect(store.lease?.spec?.renewTime as unknown as string).to.match(/^2026-11-26T10:00:00\.\d{6}Z$/);
    await advance(2000);
    expect(store.writes).to.have.length(2);
    expect(Date.parse(store.lease?.spec?.renewTime as unknown as string) - t0).to.equal(2000);
    await advance(10_000);
    expect(store.writes).to.have.length(7);
    expect(store.lease?.spec?.leaseTransitions).to.equal(0);
    await a.le.stop();
    await a.done;
  });

  it('one of two candidates racing for a missing Lease wins; the other follows', async () => {
    const a = candidate('a');
    const b = candidate('b');
    await advance(30_000);
    expect([a.le.isLeader(), b.le.isLeader()].filter(Boolean)).to.have.length(1);
    expect(store.holder).to.equal(a.le.isLeader() ? 'a' : 'b');
    expect(a.events.length + b.events.length).to.equal(1);
    await Promise.all([a.le.stop(), b.le.stop()]);
  });

  it('stop(): the leader stops its work, then releases; the follower takes over within one retryPeriod', async () => {
    const a = candidate('a');
    await flush();
    const b = candidate('b');
    await advance(20_000);
    expect(b.le.isLeader()).to.equal(false);
    const stopAt = Date.now() - t0;
    await a.le.stop();
    await a.done;
    // onStoppedLeading ran while the lease still named a: no successor could start before it
    expect(a.events).to.deep.equal(['started@0', `stopped@${stopAt} holder=a`]);
    expect(a.le.isLeader()).to.equal(false);
    expect(store.lease?.spec).to.deep.include({ holderIdentity: '', leaseDurationSeconds: 1 });
    await advance(2000);
    expect(b.le.isLeader()).to.equal(true);
    const takeover = Number(/started@(\d+)/.exec(b.events[0] ?? '')?.[1]) - stopAt;
    expect(takeover).to.be.at.most(2000);
    expect(store.lease?.spec).to.deep.include({ holderIdentity: 'b', leaseTransitions: 1, leaseDurationSeconds: 15 });
    await b.le.stop();
  });

  it('a partitioned leader steps down after renewDeadline, before the lease expires for the others', async () => {
    const a = candidate('a');
    await flush();
    const b = candidate('b');
    await advance(4000);
    const lastRenew = Date.parse(store.lease?.spec?.renewTime as unknown as string) - t0;
    a.api.down = true;
    await advance(20_000);
    const aStopped = Number(/stopped@(\d+)/.exec(a.events[1] ?? '')?.[1]);
    const bStarted = Number(/started@(\d+)/.exec(b.events[0] ?? '')?.[1]);
    expect(a.le.isLeader()).to.equal(false);
    expect(b.le.isLeader()).to.equal(true);
    expect(aStopped - lastRenew).to.be.within(10_000, 12_000);
    expect(bStarted - lastRenew).to.be.within(15_000, 17_000);
    expect(aStopped).to.be.below(bStarted);
    // a is back: it sees b holding a fresh lease and stays a follower
    a.api.down = false;
    await advance(10_000);
    expect(a.le.isLeader()).to.equal(false);
    expect(store.holder).to.equal('b');
    await Promise.all([a.le.stop(), b.le.stop()]);
  });

  it('takes over a stale lease only after renewTime + leaseDuration AND a lease duration of observing it unchanged', async () => {
    const old = new V1MicroTime(t0 - 3600_000);
    store.lease = {
      metadata: { name: 'kube-npm-operator', namespace: 'kube-npm', resourceVersion: '1' },
      spec: { holderIdentity: 'dead', leaseDurationSeconds: 15, renewTime: old, acquireTime: old, leaseTransitions: 4 },
    };
    store.rv = 1;
    const c = candidate('c');
    await advance(14_000);
    expect(c.le.isLeader()).to.equal(false);
    await advance(4000);
    expect(c.le.isLeader()).to.equal(true);
    expect(store.lease?.spec).to.deep.include({ holderIdentity: 'c', leaseTransitions: 5 });
    expect(logs.join('\n')).to.contain('lease of dead expired');
    await c.le.stop();
  });

  it('a leader whose lease was taken over steps down at its next attempt', async () => {
    const a = candidate('a');
    await flush();
    // someone writes the lease behind a's back (kubectl edit, a skewed candidate)
    const l = store.lease;
    if (!l?.spec) throw new Error('no lease');
    store.lease = { ...l, metadata: { ...l.metadata, resourceVersion: String(++store.rv) }, spec: { ...l.spec, holderIdentity: 'intruder' } };
    await advance(2000);
    expect(a.le.isLeader()).to.equal(false);
    expect(a.events[1]).to.match(/^stopped@2000/);
    expect(logs.join('\n')).to.contain('lost the lease to intruder');
    await a.le.stop();
    expect(store.holder).to.equal('intruder'); // not released: it is not ours
  });

  it('a hung API call counts as a failure after renewDeadline', async () => {
    const a = candidate('a');
    await flush();
    a.api.readNamespacedLease = () => new Promise(() => {});
    await advance(13_000);
    expect(a.le.isLeader()).to.equal(false);
    expect(logs.join('\n')).to.contain('took longer than 10000 ms');
    await a.le.stop();
  });

  it('rejects inconsistent timings', () => {
    expect(() => new LeaderElector({ kc: new KubeConfig(), namespace: 'n', name: 'l', identity: 'x', api: store.api(), leaseDurationSeconds: 5, renewDeadlineSeconds: 10 })).to.throw(/leaseDuration > renewDeadline/);
  });
});
