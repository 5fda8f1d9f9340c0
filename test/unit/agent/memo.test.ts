/**
 * The agent's planning memoizes by object identity (issue #10: a sync re-planned ~750 rulesets
 * from scratch). Each memo must give what the uncached computation gives: property-style over the
 * seeded cluster of the benchmarks, a sequence of random changes made the way the informers make
 * them (a changed object is a new object; an unchanged one keeps its identity) is planned with the
 * daemon's caches and, at every step, compared with a plan of deep copies without any cache.
 */
import { expect } from 'chai';
import { buildDesired, type DesiredState, type SetCache } from '../../../operator/src/agent/model.js';
import { selectLocal } from '../../../operator/src/agent/select.js';
import { localPodsOf, policyTargets, selectionView } from '../../../operator/src/agent/podstartup.js';
import { IPSET_KIND, RULESET_KIND, type NpmIPSet, type NpmRuleSet } from '../../../operator/src/api/types.js';
import { translate } from '../../../operator/src/translate/engine.js';
import type { NetworkPolicy, Pod } from '../../../operator/src/translate/k8s.js';
import { rng, syntheticCluster } from '../../bench/synthetic.js';

interface Caches {
  rulesets: NpmRuleSet[];
  ipsets: NpmIPSet[];
  pods: Pod[];
  policies: NetworkPolicy[];
}

/** Node-0 of a small seeded cluster (3 nodes): its rulesets, the sets they use, its pods, every policy. */
function node0(): Caches {
  const snap = syntheticCluster({ namespaces: 6, pods: 300, policies: 60, seed: 7 });
  snap.pods.forEach((p, i) => (p.spec!.nodeName = `node-${i % 3}`));
  const nodeOfIP = new Map(snap.pods.map((p) => [p.status!.podIP!, p.spec!.nodeName!]));
  const { items } = translate(snap);
  const sets = items.filter((x): x is NpmIPSet => x.kind === IPSET_KIND);
  const rulesets = items.filter((x): x is NpmRuleSet => x.kind === RULESET_KIND).filter((rs) =>
    rs.spec.chains.some((c) => sets.some((s) => s.spec.setName === c.targetSet && s.spec.members.some((m) => nodeOfIP.get(m) === 'node-0'))),
  );
  const used = new Set(rulesets.flatMap((rs) => rs.spec.ipsets.map((r) => r.name)));
  return { rulesets, ipsets: sets.filter((s) => used.has(s.spec.setName)), pods: snap.pods.filter((p) => p.spec!.nodeName === 'node-0'), policies: snap.policies };
}

/**
 * A DesiredState as plain data. Member Maps as sorted entry lists: a Map derived from the previous
 * one by a shard delta (model.ts deriveMembers) holds the same entries, new ones last.
 */
function plain(d: DesiredState): unknown {
  return {
    sets: [...d.sets.values()].map((s) => ({ name: s.name, type: s.type, meaning: s.meaning, members: [...s.members].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)) })),
    chains: [...d.chains],
    hook: d.hook,
    policies: d.policies,
    problems: d.problems,
  };
}

/** The daemon's plan (daemon.ts plan(), open mode) with its caches, or without any (fresh objects, no cache). */
class Planner {
  readonly lastApplied = new Map<string, NpmRuleSet>();
  readonly cache: SetCache = new Map();

  plan(c: Caches, cached: boolean): { desired: DesiredState; sel: ReturnType<typeof selectLocal>; targets: unknown } {
    const pods = localPodsOf(c.pods);
    const local = new Set(pods.map((p) => p.ip));
    const sel = selectLocal(c.rulesets, c.ipsets, local, cached ? this.lastApplied : new Map(this.lastApplied));
    const targets = policyTargets(c.policies).map((t) => ({ ...t, selector: JSON.stringify(t.selector) }));
    const desired = buildDesired(sel.objects, { localPods: [...local], ...(cached ? { cache: this.cache } : {}) });
    if (cached) {
      this.lastApplied.clear();
      for (const o of sel.objects) if (o.kind === RULESET_KIND) this.lastApplied.set(`${o.metadata.namespace}/${o.metadata.name}`, o);
    }
    return { desired, sel, targets };
  }
}

type Change = (c: Caches, r: ReturnType<typeof rng>, step: number) => Caches;

const replaceAt = <T>(xs: T[], i: number, x: T): T[] => xs.map((y, j) => (j === i ? x : y));

/** Changes as watch events bring them: only the changed object is new. */
const CHANGES: Record<string, Change> = {
  'member added': (c, r, step) => {
    const i = r.int(c.ipsets.length);
    const s = c.ipsets[i]!;
    const m = s.spec.type === 'hash:ip' ? `10.99.0.${step}` : s.spec.type === 'hash:ip,port' ? `10.99.0.${step},tcp:80` : `10.99.${step}.0/24`;
    return { ...c, ipsets: replaceAt(c.ipsets, i, { ...s, spec: { ...s.spec, members: [...s.spec.members, m] } }) };
  },
  'member removed': (c, r) => {
    const i = r.int(c.ipsets.length);
    const s = c.ipsets[i]!;
    return { ...c, ipsets: replaceAt(c.ipsets, i, { ...s, spec: { ...s.spec, members: s.spec.members.slice(1) } }) };
  },
  'ruleset rule changed': (c, r) => {
    const i = r.int(c.rulesets.length);
    const rs = c.rulesets[i]!;
    const chains = rs.spec.chains.map((ch) => ({ ...ch, rules: ch.rules.map((ru) => ({ ...ru, description: `${ru.description} (changed)` })) }));
    return { ...c, rulesets: replaceAt(c.rulesets, i, { ...rs, metadata: { ...rs.metadata, generation: (rs.metadata.generation ?? 1) + 1 }, spec: { ...rs.spec, chains } }) };
  },
  'ruleset removed': (c, r) => ({ ...c, rulesets: c.rulesets.filter((_, j) => j !== r.int(c.rulesets.length)) }),
  'ruleset added': (c, r, step) => {
    const src = c.rulesets[r.int(c.rulesets.length)]!;
    const rename = (s: string): string => `${s.slice(0, 20)}y${step}`;
    const name = `added-${step}`;
    const rs: NpmRuleSet = {
      ...src,
      metadata: { ...src.metadata, name, uid: `added-${step}` },
      spec: { ...src.spec, policy: { ...src.spec.policy, name }, chains: src.spec.chains.map((ch) => ({ ...ch, name: rename(ch.name) })) },
    };
    return { ...c, rulesets: [...c.rulesets, rs] };
  },
  'ruleset invalid': (c, r) => {
    const i = r.int(c.rulesets.length);
    const rs = c.rulesets[i]!;
    return { ...c, rulesets: replaceAt(c.rulesets, i, { ...rs, spec: { ...rs.spec, chains: [{ ...rs.spec.chains[0]!, name: 'FORWARD' }] } }) };
  },
  'target shard gone (incomplete: held back)': (c, r) => {
    const rs = c.rulesets[r.int(c.rulesets.length)]!;
    const t = rs.spec.chains[0]?.targetSet;
    return { ...c, ipsets: c.ipsets.filter((s) => s.spec.setName !== t) };
  },
  'local pod added': (c, r, step) => {
    const p = c.pods[r.int(c.pods.length)]!;
    return { ...c, pods: [...c.pods, { ...p, metadata: { ...p.metadata, name: `new-${step}`, uid: `new-${step}` }, status: { ...p.status, podIP: `10.98.0.${step}` } }] };
  },
  'local pod removed': (c, r) => ({ ...c, pods: c.pods.filter((_, j) => j !== r.int(c.pods.length)) }),
  'policy changed': (c, r) => {
    const i = r.int(c.policies.length);
    const np = c.policies[i]!;
    return { ...c, policies: replaceAt(c.policies, i, { ...np, spec: { ...np.spec, podSelector: { matchLabels: { tier: 'db' } } } }) };
  },
  'nothing changed': (c) => ({ ...c }),
};

describe('agent planning memos (issue #10)', () => {
  it('a sequence of random changes plans exactly as the uncached computation on fresh copies, at every step', function () {
    this.timeout(60_000);
    const r = rng(11);
    const names = Object.keys(CHANGES);
    let c = node0();
    expect(c.rulesets.length).to.be.greaterThan(10);
    const p = new Planner();
    for (let step = 1; step <= 120; step++) {
      const what = names[r.int(names.length)]!;
      c = CHANGES[what]!(c, r, step);
      const got = p.plan(c, true);
      const want = p.plan(structuredClone(c), false);
      const where = `step ${step} (${what})`;
      expect(plain(got.desired), where).to.deep.equal(plain(want.desired));
      expect(got.sel.applied, where).to.deep.equal(want.sel.applied);
      expect(got.sel.heldBack, where).to.deep.equal(want.sel.heldBack);
      expect(got.targets, where).to.deep.equal(want.targets);
    }
  });

  it('an unchanged ruleset keeps its rendered chains (same arrays); a changed one is rendered again', () => {
    const c = node0();
    const p = new Planner();
    const a = p.plan(c, true).desired;
    const b = p.plan({ ...c }, true).desired;
    for (const [name, rules] of a.chains) expect(b.chains.get(name), name).to.equal(rules);
    const rs = c.rulesets[0]!;
    const ch = rs.spec.chains[0]!;
    const changed = { ...rs, spec: { ...rs.spec, chains: [{ ...ch, rules: [] }, ...rs.spec.chains.slice(1)] } };
    const d = p.plan({ ...c, rulesets: [changed, ...c.rulesets.slice(1)] }, true).desired;
    expect(d.chains.get(ch.name)).to.not.equal(a.chains.get(ch.name));
    expect(d.chains.get(ch.name)).to.have.length(1);
    // The direction chains lost that chain's pair: new arrays; untouched policy chains are shared.
    expect(d.chains.get('KNPM-INGRESS')).to.not.equal(a.chains.get('KNPM-INGRESS'));
    const other = c.rulesets[1]!.spec.chains[0]!.name;
    expect(d.chains.get(other)).to.equal(a.chains.get(other));
  });

  it('KNPM-LOCAL keeps its Map while the local addresses are the same (in any order), and gets a new one when they change', () => {
    const c = node0();
    const cache: SetCache = new Map();
    const ips = localPodsOf(c.pods).map((x) => x.ip);
    const a = buildDesired([], { localPods: ips, cache });
    const b = buildDesired([], { localPods: [...ips].reverse(), cache });
    expect(b.sets.get('KNPM-LOCAL')!.members).to.equal(a.sets.get('KNPM-LOCAL')!.members);
    const d = buildDesired([], { localPods: ips.slice(1), cache });
    expect(d.sets.get('KNPM-LOCAL')!.members).to.not.equal(a.sets.get('KNPM-LOCAL')!.members);
    expect([...d.sets.get('KNPM-LOCAL')!.members.keys()]).to.deep.equal([...buildDesired([], { localPods: ips.slice(1) }).sets.get('KNPM-LOCAL')!.members.keys()]);
  });

  it('selection: a shard answer memoized for one set of local addresses is not reused for another', () => {
    const c = node0();
    const last = new Map<string, NpmRuleSet>();
    const none = selectLocal(c.rulesets, c.ipsets, new Set(), last);
    expect(none.applied).to.deep.equal([]);
    const ips = new Set(localPodsOf(c.pods).map((x) => x.ip));
    const all = selectLocal(c.rulesets, c.ipsets, ips, last);
    expect(all.applied.length).to.equal(c.rulesets.length);
    expect(selectLocal(c.rulesets, c.ipsets, new Set(), last).applied).to.deep.equal([]);
    // Equal content, another Set object: the same answers, as the same applied array.
    const again = selectLocal(c.rulesets, c.ipsets, new Set(ips), last);
    expect(again.applied).to.deep.equal(all.applied);
    expect(selectLocal(c.rulesets, c.ipsets, new Set(ips), last).applied).to.equal(again.applied);
    // One ruleset changed: a new array, with the other entries unchanged.
    const rs = c.rulesets[0]!;
    const changed = selectLocal([{ ...rs, metadata: { ...rs.metadata, generation: 9 } }, ...c.rulesets.slice(1)], c.ipsets, ips, last).applied;
    expect(changed).to.not.equal(again.applied);
    expect(changed.find((a) => a.name === rs.metadata.name)!.generation).to.equal(9);
  });

  it('policy targets and local pods: the same object gives the memoized result, a changed one a new result', () => {
    const c = node0();
    const np = c.policies[0]!;
    const [t1] = policyTargets([np]);
    expect(policyTargets([np])[0]).to.equal(t1);
    const changed = { ...np, spec: { ...np.spec, podSelector: { matchLabels: { app: 'other' } } } };
    const [t2] = policyTargets([changed]);
    expect(t2).to.not.equal(t1);
    expect(t2!.selector).to.not.deep.equal(t1!.selector);
    const pod = c.pods[0]!;
    expect(localPodsOf([pod])[0]).to.equal(localPodsOf([pod])[0]);
    const moved = { ...pod, status: { ...pod.status, podIP: '10.97.0.1' } };
    expect(localPodsOf([moved])[0]!.ip).to.equal('10.97.0.1');
    expect(localPodsOf([{ ...pod, status: { ...pod.status, phase: 'Succeeded' } }])).to.deep.equal([]);
  });

  it('selectionView gathers members on demand and answers as a full index would', () => {
    const c = node0();
    const v = selectionView(c.rulesets, c.ipsets);
    for (const s of c.ipsets.slice(0, 20)) {
      for (const m of s.spec.members.slice(0, 5)) expect(v.inSet(s.spec.setName, m)).to.equal(true);
      expect(v.inSet(s.spec.setName, '192.0.2.1')).to.equal(false);
    }
    expect(v.inSet('KNPM-NO-SUCH-SET', '10.0.0.1')).to.equal(false);
    const rs = c.rulesets[0]!;
    expect(v.ruleset(rs.metadata.namespace!, rs.metadata.name)).to.equal(rs);
  });
});
