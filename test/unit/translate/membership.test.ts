// Set members against a brute-force oracle. The engine computes members through indexes and, for
// many new sets at once, in one pass over the pods (engine.fill); incremental == full cannot catch
// a mistake both paths share. Here every NpmIPSet's members (all shards) are compared with a
// direct evaluation of its selector over every pod, for clusters loaded in three orders: pods
// before policies (one pass over the pods), policies before pods (pod events), and interleaved
// with drains (a few new sets at a time: each visits its scope).
import { expect } from 'chai';
import type { NpmIPSet } from '../../../operator/src/api/types.js';
import { defaultPolicy } from '../../../operator/src/translate/defaults.js';
import { TranslationEngine } from '../../../operator/src/translate/engine.js';
import { NAMESPACE_NAME_LABEL, type Namespace, type NetworkPolicy, type Pod } from '../../../operator/src/translate/k8s.js';
import { compilePolicy, type SetDemand } from '../../../operator/src/translate/policy.js';
import { matches } from '../../../operator/src/translate/selector.js';
import { randomLabels, randomSelector } from '../../support/random-selectors.js';
import { rng } from '../../support/rng.js';

const NSS = ['a', 'b', 'c', 'd', 'e'];

function cluster(seed: number) {
  const r = rng(seed);
  const labels = () => randomLabels(r, 0.6);
  const selector = () => randomSelector(r);
  const peer = () => {
    const k = r.int(3);
    if (k === 0) return { podSelector: selector() };
    if (k === 1) return { namespaceSelector: selector() };
    return { namespaceSelector: selector(), podSelector: selector() };
  };
  const namespaces: Namespace[] = NSS.filter(() => r.next() < 0.8).map((name) => ({ metadata: { name, labels: labels() } }));
  const pods: Pod[] = [];
  for (let i = 0; i < 150; i++) {
    const ns = r.pick(NSS);
    const phase = r.next() < 0.9 ? 'Running' : r.pick(['Pending', 'Succeeded']);
    const ports = Array.from({ length: r.int(3) }, () => ({ name: r.pick(['http', 'dns']), containerPort: 8000 + r.int(3), protocol: r.pick(['TCP', 'UDP', undefined]) }));
    pods.push({
      metadata: { name: `p${i}`, namespace: ns, labels: labels() },
      spec: { hostNetwork: r.next() < 0.05, containers: [{ ports }] },
      // Some IPs collide: two pods, one member.
      status: phase === 'Pending' ? { phase } : { phase, podIP: `10.244.${NSS.indexOf(ns)}.${r.int(60) + 2}` },
    });
  }
  const policies: NetworkPolicy[] = Array.from({ length: 40 }, (_, i) => ({
    metadata: { name: `np${i}`, namespace: r.pick(NSS) },
    spec: {
      podSelector: selector(),
      ingress: [{ from: Array.from({ length: r.int(3) + 1 }, peer), ports: r.next() < 0.5 ? [{ port: r.pick(['http', 'dns']), protocol: r.pick(['TCP', 'UDP']) }] : undefined }],
    },
  }));
  return { namespaces, pods, policies };
}

/** What the set of one demand holds, evaluated directly over every pod. */
function oracle(d: SetDemand, namespaces: Namespace[], pods: Pod[]): string[] {
  const nsLabels = (ns: string) => ({ ...(namespaces.find((n) => n.metadata.name === ns)?.metadata.labels ?? {}), [NAMESPACE_NAME_LABEL]: ns });
  const out = new Set<string>();
  for (const p of pods) {
    const ip = p.status?.podIP;
    if (!ip || p.spec?.hostNetwork || p.status?.phase === 'Succeeded' || p.status?.phase === 'Failed') continue;
    const ns = p.metadata.namespace!;
    if (d.kind === 'PodSelector') {
      const inScope = 'ns' in d.scope ? d.scope.ns === ns : matches(d.scope.nsSel, nsLabels(ns));
      if (inScope && matches(d.pods, p.metadata.labels ?? {})) out.add(ip);
    } else if (d.kind === 'NamedPort') {
      for (const port of p.spec?.containers?.[0]?.ports ?? []) {
        if (port.name === d.portName && (port.protocol ?? 'TCP') === d.protocol) out.add(`${ip},${d.protocol.toLowerCase()}:${port.containerPort}`);
      }
    }
  }
  return [...out].sort();
}

function check(seed: number, engine: TranslationEngine, c: ReturnType<typeof cluster>, order: string): void {
  const members = new Map<string, string[]>();
  for (const o of engine.all()) if (o.kind === 'NpmIPSet') members.set(o.spec.setName, [...(members.get(o.spec.setName) ?? []), ...(o as NpmIPSet).spec.members]);
  const demands = new Map<string, SetDemand>();
  for (const np of c.policies) for (const d of compilePolicy(defaultPolicy(np)).demands) if (d.kind !== 'IPBlock') demands.set(d.ref.name, d);
  expect([...members.keys()].sort(), `seed ${seed} (${order}): sets`).to.deep.equal([...demands.keys()].sort());
  for (const [name, d] of demands) {
    expect([...members.get(name)!].sort(), `seed ${seed} (${order}): members of ${d.ref.meaning}`).to.deep.equal(oracle(d, c.namespaces, c.pods));
  }
}

describe('set members == brute-force evaluation of each selector', () => {
  for (let seed = 1; seed <= 25; seed++) {
    it(`seed ${seed}: pods first, policies first, interleaved`, () => {
      const c = cluster(seed);
      const podsFirst = new TranslationEngine();
      for (const n of c.namespaces) podsFirst.upsertNamespace(n);
      for (const p of c.pods) podsFirst.upsertPod(p);
      for (const p of c.policies) podsFirst.upsertPolicy(p);
      check(seed, podsFirst, c, 'pods first');

      const policiesFirst = new TranslationEngine();
      for (const p of c.policies) policiesFirst.upsertPolicy(p);
      policiesFirst.drain();
      for (const p of c.pods) policiesFirst.upsertPod(p);
      for (const n of c.namespaces) policiesFirst.upsertNamespace(n);
      check(seed, policiesFirst, c, 'policies first');

      const interleaved = new TranslationEngine();
      for (const n of c.namespaces) interleaved.upsertNamespace(n);
      c.pods.forEach((p, i) => {
        interleaved.upsertPod(p);
        const policy = c.policies[i % c.policies.length]!;
        if (i % 4 === 0) interleaved.upsertPolicy(policy);
        if (i % 9 === 0) interleaved.drain();
      });
      for (const p of c.policies) interleaved.upsertPolicy(p);
      check(seed, interleaved, c, 'interleaved');
    });
  }
});
