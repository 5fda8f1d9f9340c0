import { expect } from 'chai';
import type { Operation } from 'fast-json-patch';
import { ACK_ANNOTATION, type NpmIPSet, type NpmNode, type NpmRuleSet, type NpmRuleSetStatus } from '../../../operator/src/api/types.js';
import type { NpmApi, OurKind } from '../../../operator/src/controller/api.js';
import { Reconciler, RetryLater, ipsetKey, rulesetKey, statusKey } from '../../../operator/src/controller/reconciler.js';
import { TranslationEngine } from '../../../operator/src/translate/engine.js';
import { selectLocal } from '../../../operator/src/agent/select.js';

/** A fake API server: stores objects, bumps resourceVersion and generation, applies JSON patches. */
class FakeApi implements NpmApi {
  readonly objects = new Map<string, NpmRuleSet | NpmIPSet>();
  readonly calls: string[] = [];
  private rv = 1;
  fail?: { code: number };

  private k(kind: string, ns: string | undefined, name: string) {
    return `${kind}/${ns ?? ''}/${name}`;
  }
  private check(): void {
    if (this.fail) throw Object.assign(new Error('injected'), { code: this.fail.code });
  }
  async create(kind: OurKind, obj: { metadata: { namespace?: string; name: string } }) {
    this.check();
    const key = this.k(kind, obj.metadata.namespace, obj.metadata.name);
    if (this.objects.has(key)) throw Object.assign(new Error('exists'), { code: 409 });
    const stored = structuredClone(obj) as NpmRuleSet;
    stored.metadata.resourceVersion = String(++this.rv);
    stored.metadata.generation = 1;
    stored.metadata.uid = `uid-${this.rv}`;
    this.objects.set(key, stored);
    this.calls.push(`create ${key}`);
  }
  async patch(kind: OurKind, ns: string | undefined, name: string, ops: Operation[]) {
    this.check();
    const key = this.k(kind, ns, name);
    const o = this.objects.get(key);
    if (!o) throw Object.assign(new Error('nf'), { code: 404 });
    const [test, ...rest] = ops;
    if (test?.op !== 'test' || (test as { value: unknown }).value !== o.metadata.resourceVersion) throw Object.assign(new Error('test failed'), { code: 422 });
    const jp = (await import('fast-json-patch')).default;
    // validate: an op below a missing parent fails like on the API server (422).
    let next: typeof o;
    try {
      next = jp.applyPatch(structuredClone(o), rest, true).newDocument;
    } catch (err) {
      throw Object.assign(new Error(String(err)), { code: 422 });
    }
    next.metadata.resourceVersion = String(++this.rv);
    if (rest.some((op) => op.path.startsWith('/spec'))) next.metadata.generation = (o.metadata.generation ?? 1) + 1;
    this.objects.set(key, next);
    this.calls.push(`patch ${key} ${rest.length} ops`);
  }
  async delete(kind: OurKind, ns: string | undefined, name: string) {
    this.check();
    this.objects.delete(this.k(kind, ns, name));
    this.calls.push(`delete ${this.k(kind, ns, name)}`);
  }
  async get(kind: OurKind, ns: string | undefined, name: string) {
    this.check();
    const o = this.objects.get(this.k(kind, ns, name));
    return o && structuredClone(o);
  }
  async patchNodeConditions(name: string) {
    this.calls.push(`node conditions ${name}`);
  }
  async patchRuleSetStatus(ns: string, name: string, status: NpmRuleSetStatus) {
    this.check();
    const o = this.objects.get(this.k('NpmRuleSet', ns, name)) as NpmRuleSet | undefined;
    if (!o) throw Object.assign(new Error(`npmrulesets.kubenpm.io "${name}" not found`), { code: 404 });
    o.status = status;
    this.calls.push(`status ${ns}/${name}`);
  }
}

function setup() {
  const engine = new TranslationEngine();
  const api = new FakeApi();
  const nodes = new Map<string, NpmNode>();
  const reconciler = new Reconciler(
    engine,
    api,
    {
      ruleset: (ns, name) => api.objects.get(`NpmRuleSet/${ns}/${name}`) as NpmRuleSet | undefined,
      ipset: (name) => api.objects.get(`NpmIPSet//${name}`) as NpmIPSet | undefined,
      rulesets: () => [...api.objects.values()].filter((o): o is NpmRuleSet => o.kind === 'NpmRuleSet'),
      nodes: () => nodes,
    },
    () => new Date('2026-11-26T00:00:00Z'),
  );
  /** Runs the keys until nothing is RetryLater or waiting, like the work queue would. */
  const converge = async () => {
    const ch = engine.drain();
    let keys = [
      ...ch.upserts.map((o) => (o.kind === 'NpmRuleSet' ? rulesetKey(o.metadata.namespace!, o.metadata.name) : ipsetKey(o.metadata.name))),
      ...ch.deletes.map((d) => (d.kind === 'NpmRuleSet' ? rulesetKey(d.namespace!, d.name) : ipsetKey(d.name))),
    ];
    for (let round = 0; keys.length && round < 5; round++) {
      const retry: string[] = [];
      for (const k of keys) {
        try {
          if ((await reconciler.reconcile(k)).action === 'wait') retry.push(k);
        } catch (e) {
          if (e instanceof RetryLater) retry.push(k);
          else throw e;
        }
      }
      keys = retry;
    }
    expect(keys, 'keys still waiting').to.deep.equal([]);
  };
  return { engine, api, nodes, reconciler, converge };
}

/** A reconciler whose clock moves only by `c.nowMs += ms`. */
function clocked() {
  const engine = new TranslationEngine();
  const api = new FakeApi();
  const nodes = new Map<string, NpmNode>();
  const c = { engine, api, nodes, nowMs: Date.parse('2026-11-26T00:00:00Z'), r: undefined as unknown as Reconciler };
  c.r = new Reconciler(engine, api, {
    ruleset: (ns, name) => api.objects.get(`NpmRuleSet/${ns}/${name}`) as NpmRuleSet | undefined,
    ipset: (name) => api.objects.get(`NpmIPSet//${name}`) as NpmIPSet | undefined,
    rulesets: () => [...api.objects.values()].filter((o): o is NpmRuleSet => o.kind === 'NpmRuleSet'),
    nodes: () => nodes,
  }, () => new Date(c.nowMs));
  return c;
}

const pod = (name: string, ip: string, labels: Record<string, string>, node = 'n1') => ({
  metadata: { name, namespace: 'prod', labels },
  spec: { nodeName: node },
  status: { phase: 'Running', podIP: ip },
});

describe('operator reconciler (fake API server)', () => {
  it('creates sets before the ruleset that references them, then patches minimally with a resourceVersion test', async () => {
    const t = setup();
    t.engine.upsertPod(pod('web', '10.244.1.2', { app: 'web' }));
    t.engine.upsertPolicy({ metadata: { name: 'p', namespace: 'prod', uid: 'u1' }, spec: { podSelector: { matchLabels: { app: 'web' } }, ingress: [{}] } });
    // Reconcile the ruleset first on purpose: it must create its set itself and wait, without
    // failing (an expected wait is no error: no failure log, no backoff), naming what wakes it.
    const res = await t.reconciler.reconcile(rulesetKey('prod', 'p'));
    expect(t.api.calls[0]).to.match(/^create NpmIPSet\/\/knpm-s-/);
    expect(res).to.include({ action: 'wait', waitFor: ipsetKey(t.api.calls[0]!.slice('create NpmIPSet//'.length)) });
    expect(res.requeueAfterMs).to.be.greaterThan(0);
    await t.converge();
    expect(t.api.calls.some((c) => c === 'create NpmRuleSet/prod/p')).to.equal(true);
    t.api.calls.length = 0;
    t.engine.upsertPod(pod('web2', '10.244.1.3', { app: 'web' }));
    await t.converge();
    expect(t.api.calls).to.have.length(1);
    expect(t.api.calls[0]).to.match(/^patch NpmIPSet\/\/knpm-s-.* 2 ops$/); // the member and memberCount
  });

  it('ADR 0015: a shard write asks for an acknowledgment only when a waiting pod is in it; an explicit ask stamps an unchanged shard', async () => {
    const t = setup();
    const waiting = new Set<string>();
    t.reconciler.ackWanted = (d, a) => [...d.spec.members, ...(a?.spec.members ?? [])].some((m) => waiting.has(m.split(',')[0]!));
    t.engine.upsertPod(pod('web', '10.244.1.2', { app: 'web' }));
    t.engine.upsertPolicy({ metadata: { name: 'p', namespace: 'prod', uid: 'u1' }, spec: { podSelector: { matchLabels: { app: 'web' } }, ingress: [{}] } });
    await t.converge();
    const shard = () => [...t.api.objects.values()].find((o): o is NpmIPSet => o.kind === 'NpmIPSet')!;
    const stamp = () => shard().metadata.annotations?.[ACK_ANNOTATION];
    expect(stamp(), 'nobody waits: no request').to.equal(undefined);
    // Nobody waits: the member change carries no request.
    t.engine.upsertPod(pod('web2', '10.244.1.3', { app: 'web' }));
    await t.converge();
    expect(stamp()).to.equal(undefined);
    // A gated pod waits: the write that adds it asks.
    waiting.add('10.244.1.4');
    t.engine.upsertPod(pod('web3', '10.244.1.4', { app: 'web' }));
    await t.converge();
    const first = stamp();
    expect(first).to.be.a('string');
    // Leaving the set while it waits: the removal asks again (a new stamp).
    t.engine.upsertPod(pod('web3', '10.244.1.4', { app: 'other' }));
    await t.converge();
    const second = stamp();
    expect(second).to.be.a('string').and.not.equal(first);
    // Nobody waits any more: a member change keeps the old stamp (asks nothing).
    waiting.clear();
    t.engine.upsertPod(pod('web4', '10.244.1.5', { app: 'web' }));
    await t.converge();
    expect(stamp()).to.equal(second);
    // Nothing to write: no write, unless asked for explicitly; then one write of the stamp only.
    t.api.calls.length = 0;
    expect((await t.reconciler.reconcile(ipsetKey(shard().metadata.name))).action).to.equal('none');
    t.reconciler.ask(shard().metadata.name);
    expect((await t.reconciler.reconcile(ipsetKey(shard().metadata.name))).action).to.equal('patch');
    expect(t.api.calls).to.deep.equal([`patch NpmIPSet//${shard().metadata.name} 1 ops`]);
    expect(stamp()).to.be.a('string').and.not.equal(second);
    expect((await t.reconciler.reconcile(ipsetKey(shard().metadata.name))).action, 'the ask is used up').to.equal('none');
  });

  it('a stale cache (resourceVersion moved) is a RetryLater, not a lost write', async () => {
    const t = setup();
    t.engine.upsertPolicy({ metadata: { name: 'p', namespace: 'prod' }, spec: { podSelector: {} } });
    await t.converge();
    const setObj = [...t.api.objects.values()].find((o) => o.kind === 'NpmIPSet')!;
    setObj.metadata.resourceVersion = '999'; // someone else wrote it
    t.engine.upsertPod(pod('a', '10.244.1.9', {}));
    const stale = { ...setObj, metadata: { ...setObj.metadata, resourceVersion: '998' } };
    const r = new Reconciler(t.engine, t.api, { ruleset: () => undefined, ipset: () => stale as NpmIPSet, rulesets: () => [], nodes: () => new Map() });
    let err: unknown;
    await r.reconcile(ipsetKey(setObj.metadata.name)).catch((e: unknown) => (err = e));
    expect(err).to.be.instanceOf(RetryLater);
  });

  it('a hand edit that removed the managed-by label (invisible to the label-selected informer) is patched back, not retried forever', async () => {
    const t = setup();
    t.engine.upsertPod(pod('web', '10.244.1.2', { app: 'web' }));
    // Selecting no pod: no node label (nodelabels.ts), so managed-by is its only label.
    t.engine.upsertPolicy({ metadata: { name: 'p', namespace: 'prod' }, spec: { podSelector: { matchLabels: { app: 'nobody' } }, ingress: [] } });
    await t.converge();
    const stored = t.api.objects.get('NpmRuleSet/prod/p') as NpmRuleSet;
    const original = structuredClone(stored);
    // Its only label: the API server then drops metadata.labels altogether.
    expect(Object.keys(stored.metadata.labels!)).to.deep.equal(['app.kubernetes.io/managed-by']);
    delete stored.metadata.labels;
    stored.spec.chains[0]!.rules.push({ description: 'hand edit: allow any', match: {} });
    stored.metadata.resourceVersion = '500';
    // The operator's caches select app.kubernetes.io/managed-by=kube-npm: the object is gone for them.
    const visible = (o: NpmRuleSet | NpmIPSet | undefined) => (o?.metadata.labels?.['app.kubernetes.io/managed-by'] === 'kube-npm' ? o : undefined);
    const r = new Reconciler(t.engine, t.api, {
      ruleset: (ns, name) => visible(t.api.objects.get(`NpmRuleSet/${ns}/${name}`)) as NpmRuleSet | undefined,
      ipset: (name) => visible(t.api.objects.get(`NpmIPSet//${name}`)) as NpmIPSet | undefined,
      rulesets: () => [],
      nodes: () => new Map(),
    });
    const res = await r.reconcile(rulesetKey('prod', 'p'));
    expect(res.action).to.equal('patch');
    const back = t.api.objects.get('NpmRuleSet/prod/p') as NpmRuleSet;
    expect(back.metadata.labels).to.deep.equal(original.metadata.labels);
    expect(back.spec).to.deep.equal(original.spec);
  });

  it('deletes a set only after no ruleset references it', async () => {
    const t = setup();
    t.engine.upsertPolicy({ metadata: { name: 'p', namespace: 'prod' }, spec: { podSelector: { matchLabels: { a: 'b' } } } });
    await t.converge();
    const setName = [...t.api.objects.values()].find((o) => o.kind === 'NpmIPSet')!.metadata.name;
    t.engine.deletePolicy('prod', 'p');
    expect(await t.reconciler.reconcile(ipsetKey(setName))).to.include({ action: 'wait', waitFor: rulesetKey('prod', 'p') });
    await t.reconciler.reconcile(rulesetKey('prod', 'p'));
    await t.reconciler.reconcile(ipsetKey(setName));
    expect([...t.api.objects.keys()]).to.deep.equal([]);
  });

  it('status: Accepted, Programmed n/N from NpmNodes, lastTransitionTime only on flips', async () => {
    const t = setup();
    t.engine.upsertPod(pod('a', '10.244.1.2', { app: 'web' }, 'n1'));
    t.engine.upsertPod(pod('b', '10.244.2.2', { app: 'web' }, 'n2'));
    t.engine.upsertPod(pod('c', '10.244.3.2', { app: 'db' }, 'n3'));
    t.engine.upsertPolicy({ metadata: { name: 'p', namespace: 'prod' }, spec: { podSelector: { matchLabels: { app: 'web' } }, ingress: [{ ports: [{ port: 0 }] }] } });
    await t.converge();
    await t.reconciler.reconcile(statusKey('prod', 'p'));
    const rs = () => t.api.objects.get('NpmRuleSet/prod/p') as NpmRuleSet;
    const cond = (type: string) => rs().status!.conditions!.find((c) => c.type === type)!;
    expect(cond('Accepted')).to.include({ status: 'False', reason: 'InvalidPolicy' });
    expect(cond('Accepted').message).to.contain('spec.ingress[0].ports[0].port');
    expect(rs().status!.nodesProgrammed).to.equal('0/2');
    expect(cond('Programmed')).to.include({ status: 'False', reason: 'Pending' });
    expect(cond('Programmed').message).to.contain('waiting for n1, n2');
    t.nodes.set('n1', { apiVersion: 'kubenpm.io/v1alpha1', kind: 'NpmNode', metadata: { name: 'n1' }, status: { applied: [{ namespace: 'prod', name: 'p', generation: 1, uid: rs().metadata.uid! }] } });
    t.nodes.set('n2', { apiVersion: 'kubenpm.io/v1alpha1', kind: 'NpmNode', metadata: { name: 'n2' }, status: { lastError: 'iptables-restore: line 3 failed' } });
    await t.reconciler.reconcile(statusKey('prod', 'p'));
    expect(rs().status!.nodesProgrammed).to.equal('1/2');
    expect(cond('Programmed')).to.include({ status: 'False', reason: 'NodeError' });
    expect(cond('Programmed').message).to.contain('failing on n2 (iptables-restore: line 3 failed)');
    t.nodes.set('n2', { apiVersion: 'kubenpm.io/v1alpha1', kind: 'NpmNode', metadata: { name: 'n2' }, status: { applied: [{ namespace: 'prod', name: 'p', generation: 1, uid: rs().metadata.uid! }] } });
    const r = await t.reconciler.reconcile(statusKey('prod', 'p'));
    expect(r.action).to.equal('status');
    expect(cond('Programmed')).to.include({ status: 'True', reason: 'Programmed' });
    expect((await t.reconciler.reconcile(statusKey('prod', 'p'))).action).to.equal('none');
  });

  it('status: progress alone (k/n nodes) is written at most once per statusProgressMs; flips at once', async () => {
    const c = clocked();
    const { engine, api, nodes, r } = c;
    for (const [i, n] of ['n1', 'n2', 'n3'].entries()) engine.upsertPod(pod(`w${i}`, `10.244.${i + 1}.2`, { app: 'web' }, n));
    engine.upsertPolicy({ metadata: { name: 'p', namespace: 'prod' }, spec: { podSelector: { matchLabels: { app: 'web' } }, ingress: [{}] } });
    for (const o of engine.drain().upserts) await r.reconcile(o.kind === 'NpmRuleSet' ? rulesetKey(o.metadata.namespace!, o.metadata.name) : ipsetKey(o.metadata.name));
    const rs = () => api.objects.get('NpmRuleSet/prod/p') as NpmRuleSet;
    const writes = () => api.calls.filter((c) => c === 'status prod/p').length;
    const report = (n: string) => nodes.set(n, { apiVersion: 'kubenpm.io/v1alpha1', kind: 'NpmNode', metadata: { name: n }, status: { applied: [{ namespace: 'prod', name: 'p', generation: 1, uid: rs().metadata.uid! }] } });
    expect((await r.reconcile(statusKey('prod', 'p'))).action).to.equal('status'); // first status: Pending 0/3
    expect(rs().status!.nodesProgrammed).to.equal('0/3');
    report('n1');
    c.nowMs += 200;
    const waited = await r.reconcile(statusKey('prod', 'p'));
    expect(waited).to.include({ action: 'wait', requeueAfterMs: 800 });
    expect(writes()).to.equal(1);
    c.nowMs += 800;
    expect((await r.reconcile(statusKey('prod', 'p'))).action).to.equal('status');
    expect(rs().status!.nodesProgrammed).to.equal('1/3');
    report('n2');
    report('n3');
    c.nowMs += 10; // a flip (Pending -> Programmed) is not held back
    expect((await r.reconcile(statusKey('prod', 'p'))).action).to.equal('status');
    expect(rs().status!.conditions!.find((c) => c.type === 'Programmed')).to.include({ status: 'True', reason: 'Programmed' });
    expect(writes()).to.equal(3);
  });

  it('status: a pod of an unchanged policy on a new node: Programmed stays True while that node reports within statusProgressMs, else turns False', async () => {
    const c = clocked();
    const { engine, api, nodes, r } = c;
    engine.upsertPod(pod('w0', '10.244.1.2', { app: 'web' }, 'n1'));
    engine.upsertPolicy({ metadata: { name: 'p', namespace: 'prod' }, spec: { podSelector: { matchLabels: { app: 'web' } }, ingress: [{}] } });
    for (const o of engine.drain().upserts) await r.reconcile(o.kind === 'NpmRuleSet' ? rulesetKey(o.metadata.namespace!, o.metadata.name) : ipsetKey(o.metadata.name));
    const rs = () => api.objects.get('NpmRuleSet/prod/p') as NpmRuleSet;
    const programmed = () => rs().status!.conditions!.find((c) => c.type === 'Programmed')!;
    const writes = () => api.calls.filter((c) => c === 'status prod/p').length;
    const report = (n: string) => nodes.set(n, { apiVersion: 'kubenpm.io/v1alpha1', kind: 'NpmNode', metadata: { name: n }, status: { applied: [{ namespace: 'prod', name: 'p', generation: 1, uid: rs().metadata.uid! }] } });
    report('n1');
    await r.reconcile(statusKey('prod', 'p'));
    expect(programmed()).to.include({ status: 'True' });
    expect(writes()).to.equal(1);
    // A pod on n2: n2 reports 300 ms later; nothing False is ever written, then one progress write.
    c.nowMs += 5000;
    engine.upsertPod(pod('w1', '10.244.2.2', { app: 'web' }, 'n2'));
    engine.drain();
    expect(await r.reconcile(statusKey('prod', 'p'))).to.include({ action: 'wait', requeueAfterMs: 1000 });
    c.nowMs += 300;
    expect(await r.reconcile(statusKey('prod', 'p'))).to.include({ action: 'wait', requeueAfterMs: 700 });
    report('n2');
    c.nowMs += 10;
    expect((await r.reconcile(statusKey('prod', 'p'))).action).to.equal('status');
    expect(programmed()).to.include({ status: 'True' });
    expect(rs().status!.nodesProgrammed).to.equal('2/2');
    expect(writes()).to.equal(2);
    // A pod on n3, which does not report within the grace: False, naming it.
    c.nowMs += 5000;
    engine.upsertPod(pod('w2', '10.244.3.2', { app: 'web' }, 'n3'));
    engine.drain();
    expect((await r.reconcile(statusKey('prod', 'p'))).action).to.equal('wait');
    c.nowMs += 1000;
    expect((await r.reconcile(statusKey('prod', 'p'))).action).to.equal('status');
    expect(programmed()).to.include({ status: 'False', reason: 'Pending' });
    expect(programmed().message).to.contain('waiting for n3');
    // A known node falling behind (a new generation is not this case either) is written at once.
    report('n3');
    c.nowMs += 5000;
    await r.reconcile(statusKey('prod', 'p'));
    expect(programmed()).to.include({ status: 'True' });
    nodes.set('n1', { apiVersion: 'kubenpm.io/v1alpha1', kind: 'NpmNode', metadata: { name: 'n1' }, status: { applied: [], lastError: 'ipset restore: boom' } });
    c.nowMs += 10;
    expect((await r.reconcile(statusKey('prod', 'p'))).action).to.equal('status');
    expect(programmed()).to.include({ status: 'False', reason: 'NodeError' });
  });

  it('status: a policy re-created under the same name is not Programmed by the old object\'s report (uid)', async () => {
    const t = setup();
    t.engine.upsertPod(pod('a', '10.244.1.2', { app: 'web' }, 'n1'));
    const np = (uid: string) => ({ metadata: { name: 'p', namespace: 'prod', uid }, spec: { podSelector: { matchLabels: { app: 'web' } }, ingress: [] } });
    t.engine.upsertPolicy(np('old'));
    await t.converge();
    const rs = () => t.api.objects.get('NpmRuleSet/prod/p') as NpmRuleSet;
    const oldUid = rs().metadata.uid!;
    // n1 enforces the old object, generation 1.
    t.nodes.set('n1', { apiVersion: 'kubenpm.io/v1alpha1', kind: 'NpmNode', metadata: { name: 'n1' }, status: { applied: [{ namespace: 'prod', name: 'p', generation: 1, uid: oldUid }] } });
    await t.reconciler.reconcile(statusKey('prod', 'p'));
    expect(rs().status!.conditions!.find((c) => c.type === 'Programmed')).to.include({ status: 'True' });
    // Deleted and re-created 30-60 ms later: a new object (new uid) at generation 1 again.
    t.engine.deletePolicy('prod', 'p');
    await t.converge();
    t.engine.upsertPolicy(np('new'));
    await t.converge();
    expect(rs().metadata.uid).to.not.equal(oldUid);
    expect(rs().metadata.generation).to.equal(1);
    await t.reconciler.reconcile(statusKey('prod', 'p'));
    const programmed = () => rs().status!.conditions!.find((c) => c.type === 'Programmed')!;
    expect(programmed()).to.include({ status: 'False', reason: 'Pending' });
    expect(rs().status!.nodesProgrammed).to.equal('0/1');
    // An agent too old to report uids vouches for nothing either.
    t.nodes.set('n1', { apiVersion: 'kubenpm.io/v1alpha1', kind: 'NpmNode', metadata: { name: 'n1' }, status: { applied: [{ namespace: 'prod', name: 'p', generation: 1 }] } });
    await t.reconciler.reconcile(statusKey('prod', 'p'));
    expect(programmed()).to.include({ status: 'False', reason: 'Pending' });
    t.nodes.set('n1', { apiVersion: 'kubenpm.io/v1alpha1', kind: 'NpmNode', metadata: { name: 'n1' }, status: { applied: [{ namespace: 'prod', name: 'p', generation: 1, uid: rs().metadata.uid! }] } });
    await t.reconciler.reconcile(statusKey('prod', 'p'));
    expect(programmed()).to.include({ status: 'True', reason: 'Programmed' });
  });

  it('status: a ruleset deleted between the cache read and the status patch (404) is done, not failed', async () => {
    const t = setup();
    t.engine.upsertPod(pod('a', '10.244.1.2', { app: 'web' }, 'n1'));
    t.engine.upsertPolicy({ metadata: { name: 'p', namespace: 'prod' }, spec: { podSelector: { matchLabels: { app: 'web' } }, ingress: [] } });
    await t.converge();
    const cached = structuredClone(t.api.objects.get('NpmRuleSet/prod/p') as NpmRuleSet);
    t.api.objects.delete('NpmRuleSet/prod/p'); // deleted on the server; the informer has not seen it yet
    const r = new Reconciler(t.engine, t.api, { ruleset: () => cached, ipset: () => undefined, rulesets: () => [cached], nodes: () => t.nodes });
    const res = await r.reconcile(statusKey('prod', 'p'));
    expect(res.action).to.equal('none');
    // Any other failure still fails.
    t.api.objects.set('NpmRuleSet/prod/p', structuredClone(cached));
    t.api.fail = { code: 500 };
    let err: unknown;
    await r.reconcile(statusKey('prod', 'p')).catch((e: unknown) => (err = e));
    expect(err).to.include({ code: 500 });
  });
});

describe('agent: node-local selection', () => {
  const engine = new TranslationEngine();
  engine.upsertPod(pod('a', '10.244.1.2', { app: 'web' }, 'n1'));
  engine.upsertPod(pod('b', '10.244.2.2', { app: 'db' }, 'n2'));
  engine.upsertPolicy({ metadata: { name: 'web', namespace: 'prod' }, spec: { podSelector: { matchLabels: { app: 'web' } }, ingress: [{ from: [{ podSelector: { matchLabels: { app: 'db' } } }] }] } });
  engine.upsertPolicy({ metadata: { name: 'db', namespace: 'prod' }, spec: { podSelector: { matchLabels: { app: 'db' } }, ingress: [] } });
  const all = engine.all();
  const rulesets = all.filter((o): o is NpmRuleSet => o.kind === 'NpmRuleSet').map((r) => ({ ...r, metadata: { ...r.metadata, generation: 1, uid: `uid-${r.metadata.name}` } }));
  const ipsets = all.filter((o): o is NpmIPSet => o.kind === 'NpmIPSet');

  it('programs only rulesets guarding a local pod, and only the sets they use', () => {
    const s = selectLocal(rulesets, ipsets, new Set(['10.244.1.2']), new Map());
    expect(s.applied.map((a) => a.name)).to.deep.equal(['web']);
    expect(s.applied[0]!.uid, 'the applied entry names the object (uid), not just its name').to.equal(rulesets.find((r) => r.metadata.name === 'web')!.metadata.uid);
    const used = new Set(rulesets.find((r) => r.metadata.name === 'web')!.spec.ipsets.map((r) => r.name));
    expect(s.objects.filter((o) => o.kind === 'NpmIPSet').every((o) => used.has((o as NpmIPSet).spec.setName))).to.equal(true);
    expect(selectLocal(rulesets, ipsets, new Set(['10.244.9.9']), new Map()).applied).to.deep.equal([]);
  });

  it('a peer set not yet arrived costs only its allow rule (fail closed), not the isolation; a missing target set holds the ruleset at its last applied version', () => {
    const web = rulesets.find((r) => r.metadata.name === 'web')!;
    const peerSet = web.spec.chains[0]!.rules[0]!.match.peerSet!;
    const withoutPeer = ipsets.filter((s) => s.spec.setName !== peerSet);
    const newer = { ...web, metadata: { ...web.metadata, generation: 2 } };
    const s = selectLocal([newer], withoutPeer, new Set(['10.244.1.2']), new Map());
    const programmed = s.objects.find((o): o is NpmRuleSet => o.kind === 'NpmRuleSet')!;
    expect(programmed.spec.chains.map((c) => c.rules.length), 'the chain still isolates, without the allow').to.deep.equal([0]);
    expect(s.applied, 'not reported as applied while a rule is left out').to.deep.equal([]);
    expect(s.heldBack[0]).to.contain('without 1 allow rule');
    // Generation 2 guards other pods (a new target set), whose members have not arrived yet.
    const retargeted = { ...newer, spec: { ...web.spec, chains: web.spec.chains.map((c) => ({ ...c, targetSet: 'KNPM-S-NEWTARGETAAAAAAAAAAAAAA' })) } };
    expect(selectLocal([retargeted], ipsets, new Set(['10.244.1.2']), new Map()).heldBack[0]).to.contain('not programmed yet');
    const held = selectLocal([retargeted], ipsets, new Set(['10.244.1.2']), new Map([['prod/web', web]]));
    expect(held.heldBack.join('\n')).to.contain('kept at generation 1');
    expect(held.applied.map((a) => a.generation)).to.deep.equal([1]);
  });
});
