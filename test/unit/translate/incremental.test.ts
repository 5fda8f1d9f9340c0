// Seeded property test: random sequences of namespace, pod and policy events fed to the incremental
// engine must always give what a full translation of the resulting cluster gives, both as a whole
// (engine.all()) and as the store that applying every drain() to an empty API would hold.
import { expect } from 'chai';
import { TranslationEngine, translate, SHARD_TARGET } from '../../../operator/src/translate/engine.js';
import type { Namespace, NetworkPolicy, Pod } from '../../../operator/src/translate/k8s.js';
import { randomLabels, randomSelector } from '../../support/random-selectors.js';
import { rng } from '../../support/rng.js';

const NSS = ['a', 'b', 'c', 'd'];

function gen(seed: number) {
  const r = rng(seed);
  const labels = () => randomLabels(r, 0.5);
  const selector = () => randomSelector(r);
  const peer = () => {
    const k = r.int(4);
    if (k === 0) return { podSelector: selector() };
    if (k === 1) return { namespaceSelector: selector() };
    if (k === 2) return { namespaceSelector: selector(), podSelector: selector() };
    return { ipBlock: { cidr: '10.244.0.0/16', except: r.next() < 0.5 ? [`10.244.${r.int(4)}.0/24`] : [] } };
  };
  const ports = () =>
    r.next() < 0.4 ? undefined : [r.next() < 0.5 ? { port: r.pick([80, 81]) } : { port: r.pick(['http', 'dns']), protocol: r.pick(['TCP', 'UDP']) }];
  const policy = (ns: string, name: string): NetworkPolicy => ({
    metadata: { name, namespace: ns, uid: `uid-${ns}-${name}` },
    spec: {
      podSelector: selector(),
      ...(r.next() < 0.7 ? { ingress: Array.from({ length: r.int(3) }, () => ({ from: Array.from({ length: r.int(3) }, peer), ports: ports() })) } : {}),
      ...(r.next() < 0.4 ? { egress: Array.from({ length: r.int(3) }, () => ({ to: Array.from({ length: r.int(3) }, peer), ports: ports() })) } : {}),
    },
  });
  const pod = (ns: string, name: string, ip: string): Pod => ({
    metadata: { name, namespace: ns, labels: labels() },
    spec: { containers: [{ ports: r.next() < 0.5 ? [{ name: r.pick(['http', 'dns']), containerPort: 8000 + r.int(3), protocol: r.pick(['TCP', 'UDP']) }] : [] }] },
    status: r.next() < 0.9 ? { phase: 'Running', podIP: ip } : { phase: 'Pending' },
  });
  const ns = (name: string): Namespace => ({ metadata: { name, labels: labels() } });
  return { r, policy, pod, ns };
}

function key(o: { kind: string; metadata: { namespace?: string; name: string } }) {
  return `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`;
}

function run(seed: number, steps: number) {
  const g = gen(seed);
  const engine = new TranslationEngine();
  const store = new Map<string, unknown>();
  const nss = new Map<string, Namespace>();
  const pods = new Map<string, Pod>();
  const pols = new Map<string, NetworkPolicy>();
  const drainInto = () => {
    const ch = engine.drain();
    for (const d of ch.deletes) {
      const k = `${d.kind}/${d.namespace ?? ''}/${d.name}`;
      expect(store.has(k), `seed ${seed}: delete of unknown ${k}`).to.equal(true);
      store.delete(k);
    }
    for (const u of ch.upserts) store.set(key(u), u);
  };
  for (let i = 0; i < steps; i++) {
    const what = g.r.int(10);
    const ns = g.r.pick(NSS);
    if (what < 2) {
      const n = g.ns(ns);
      nss.set(ns, n);
      engine.upsertNamespace(n);
    } else if (what < 6) {
      const name = `p${g.r.int(12)}`;
      const k = `${ns}/${name}`;
      if (g.r.next() < 0.2 && pods.has(k)) {
        pods.delete(k);
        engine.deletePod(ns, name);
      } else {
        const p = g.pod(ns, name, `10.244.${NSS.indexOf(ns)}.${g.r.int(40) + 2}`); // IPs may collide: two pods, one IP
        pods.set(k, p);
        engine.upsertPod(p);
      }
    } else {
      const name = `np${g.r.int(5)}`;
      const k = `${ns}/${name}`;
      if (g.r.next() < 0.25 && pols.has(k)) {
        pols.delete(k);
        engine.deletePolicy(ns, name);
      } else {
        const p = g.policy(ns, name);
        pols.set(k, p);
        engine.upsertPolicy(p);
      }
    }
    if (g.r.next() < 0.5) drainInto();
    if (i % 25 === 24 || i === steps - 1) {
      drainInto();
      const full = translate({ namespaces: [...nss.values()], pods: [...pods.values()], policies: [...pols.values()] }).items;
      expect(engine.all(), `seed ${seed} step ${i}: engine.all() differs from full translation`).to.deep.equal(full);
      expect(new Map(full.map((o) => [key(o), o])), `seed ${seed} step ${i}: drained store differs`).to.deep.equal(store);
    }
  }
}

describe('incremental engine == full translation (seeded property test)', () => {
  const base = Number(process.env.PROPERTY_SEED ?? 20261126);
  for (let s = 0; s < 40; s++) {
    it(`seed ${base + s}: 300 random events`, () => run(base + s, 300));
  }

  it('large sets are sharded, and resharding keeps incremental == full', () => {
    const engine = new TranslationEngine();
    engine.upsertPolicy({ metadata: { name: 'all', namespace: 'big' }, spec: { podSelector: {}, ingress: [{ from: [{ namespaceSelector: {} }] }] } });
    const pods: Pod[] = [];
    const n = SHARD_TARGET * 2 + 10;
    for (let i = 0; i < n; i++) {
      const p: Pod = { metadata: { name: `p${i}`, namespace: 'big' }, status: { phase: 'Running', podIP: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}` } };
      pods.push(p);
      engine.upsertPod(p);
    }
    const sets = engine.all().filter((o) => o.kind === 'NpmIPSet');
    expect(sets.length).to.equal(8); // two sets (targets, peers) x 4 shards
    for (const s of sets) expect((s.spec as { members: string[] }).members.length).to.be.below(SHARD_TARGET * 2);
    expect(engine.all()).to.deep.equal(translate({ namespaces: [], pods, policies: [{ metadata: { name: 'all', namespace: 'big' }, spec: { podSelector: {}, ingress: [{ from: [{ namespaceSelector: {} }] }] } }] }).items);
  });
});
