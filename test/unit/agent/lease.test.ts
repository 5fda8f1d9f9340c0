/** AgentLease (the agent's liveness heartbeat) against an in-memory Lease store, on sinon's fake clock. */
import { expect } from 'chai';
import sinon from 'sinon';
import { AgentLease } from '../../../operator/src/agent/lease.js';
import { agentLeaseName } from '../../../operator/src/api/names.js';
import { FakeLeaseStore, flush } from '../framework/fakes.js';

describe('AgentLease', () => {
  let clock: sinon.SinonFakeTimers;
  let store: FakeLeaseStore;
  let logs: string[];
  let lease: AgentLease | undefined;

  beforeEach(() => {
    clock = sinon.useFakeTimers({ now: Date.parse('2026-12-01T10:00:00Z'), toFake: ['setTimeout', 'clearTimeout', 'Date'] });
    store = new FakeLeaseStore();
    logs = [];
  });
  afterEach(async () => {
    const l = lease;
    lease = undefined;
    if (l) {
      const stopped = l.stop();
      await clock.tickAsync(0);
      await stopped;
    }
    clock.restore();
  });

  async function advance(ms: number): Promise<void> {
    for (let i = 0; i < ms; i += 500) {
      await clock.tickAsync(500);
      await flush(3);
    }
  }

  it('writes kube-npm-agent-<node> once per lease/3 (30 s lease: a create, then a renew every 10 s), holder = node', async () => {
    const api = store.api();
    const calls: string[] = [];
    const counting = {
      readNamespacedLease: (p: { name: string; namespace: string }) => (calls.push('read'), api.readNamespacedLease(p)),
      createNamespacedLease: (p: Parameters<typeof api.createNamespacedLease>[0]) => (calls.push('create'), api.createNamespacedLease(p)),
      replaceNamespacedLease: (p: Parameters<typeof api.replaceNamespacedLease>[0]) => (calls.push('replace'), api.replaceNamespacedLease(p)),
    };
    lease = new AgentLease({ node: 'n1', namespace: 'kube-npm-system', api: counting, log: (s) => logs.push(s) });
    lease.start();
    await flush();
    expect(store.writes).to.have.length(1);
    expect(store.lease!.metadata).to.include({ name: 'kube-npm-agent-n1', namespace: 'kube-npm-system' });
    expect(store.lease!.spec).to.include({ holderIdentity: 'n1', leaseDurationSeconds: 30 });
    await advance(60_000);
    // 0 s, then 10, 20, ..., 60 s: 7 writes; only the first call read (404, then create).
    expect(store.writes).to.have.length(7);
    expect(calls).to.deep.equal(['read', 'create', ...Array<string>(6).fill('replace')]);
    const renewed = Date.parse(String(store.lease!.spec!.renewTime));
    expect(renewed).to.equal(Date.parse('2026-12-01T10:01:00Z'));
    expect(logs).to.deep.equal([]);
  });

  it('a Lease written by someone else costs one read, then it is ours again; a long node name is hashed', async () => {
    lease = new AgentLease({ node: 'n1', namespace: 'ns', durationSeconds: 3, api: store.api(), log: (s) => logs.push(s) });
    lease.start();
    await flush();
    store.lease = { ...store.lease!, metadata: { ...store.lease!.metadata, resourceVersion: String(++store.rv) }, spec: { ...store.lease!.spec, holderIdentity: 'intruder' } };
    await advance(1000);
    expect(store.holder).to.equal('n1');
    expect(store.lease!.spec!.leaseTransitions).to.equal(1);
    const long = `${'a'.repeat(250)}.x`;
    expect(agentLeaseName(long)).to.match(/^kube-npm-agent-h-[a-z2-7]{40}$/);
    expect(agentLeaseName('n1')).to.equal('kube-npm-agent-n1');
  });

  it('an API outage is logged once and renewal resumes after it', async () => {
    const api = store.api();
    lease = new AgentLease({ node: 'n1', namespace: 'ns', durationSeconds: 3, api, log: (s) => logs.push(s) });
    lease.start();
    await flush();
    api.down = true;
    await advance(5000);
    expect(logs.filter((l) => l.includes('failed'))).to.have.length(1);
    api.down = false;
    const before = store.writes.length;
    await advance(1000);
    expect(store.writes.length).to.equal(before + 1);
    expect(logs.at(-1)).to.contain('renewed again');
  });
});
