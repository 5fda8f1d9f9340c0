// Warnings (issue #12 item 4): valid parts of a policy that allow nothing right now, named by rule as
// `kubectl describe nrs` numbers them. Table cases for each reason, then a seeded property test:
// after any sequence of events, the policies drain() names as `warned` are exactly those whose
// warnings changed, and the incremental engine agrees with a fresh one.
import { expect } from 'chai';
import type { RuleWarning } from '../../../operator/src/api/types.js';
import { TranslationEngine } from '../../../operator/src/translate/engine.js';
import type { Namespace, NetworkPolicy, Pod } from '../../../operator/src/translate/k8s.js';
import { WARNING } from '../../../operator/src/translate/policy.js';
import { randomLabels, randomSelector } from '../../support/random-selectors.js';
import { rng } from '../../support/rng.js';

function pod(ns: string, name: string, ip: string, labels: Record<string, string>, ports: { name: string; containerPort: number; protocol?: string }[] = []): Pod {
  return { metadata: { name, namespace: ns, labels }, spec: { containers: [{ ports }] }, status: { phase: 'Running', podIP: ip } };
}

function policy(ns: string, name: string, spec: NetworkPolicy['spec']): NetworkPolicy {
  return { metadata: { name, namespace: ns }, spec };
}

const brief = (ws: RuleWarning[]) => ws.map((w) => `${w.rule} ${w.reason}`);
const warnedKeys = (e: TranslationEngine) => e.drain().warned.map((w) => `${w.namespace}/${w.name}`);

describe('translate: warnings (empty selections are visible)', () => {
  it('a peer that selects no pod: NoPeersSelected on that peer, cleared when a pod matches, listed by drain only when it flips', () => {
    const e = new TranslationEngine();
    e.upsertPod(pod('prod', 'web', '10.244.1.10', { app: 'web' }));
    e.upsertPod(pod('prod', 'api', '10.244.1.11', { app: 'api' }));
    e.upsertPolicy(policy('prod', 'web', {
      podSelector: { matchLabels: { app: 'web' } },
      ingress: [{ from: [{ podSelector: { matchLabels: { app: 'api' } } }, { podSelector: { matchLabels: { app: 'wbe' } } }] }],
    }));
    expect(warnedKeys(e)).to.deep.equal(['prod/web']);
    const ws = e.warnings('prod', 'web');
    expect(ws).to.deep.equal([{ rule: 'ingress[0].from[1]', reason: WARNING.NoPeersSelected, message: 'selects no pod right now: pods with app=wbe in namespace prod' }]);
    // Another pod that joins no watched set changes nothing: no recheck reported.
    e.upsertPod(pod('prod', 'db', '10.244.1.12', { app: 'db' }));
    expect(warnedKeys(e)).to.deep.equal([]);
    // A second api pod: the set changes but stays non-empty: nothing flips.
    e.upsertPod(pod('prod', 'api2', '10.244.1.13', { app: 'api' }));
    expect(warnedKeys(e)).to.deep.equal([]);
    e.upsertPod(pod('prod', 'typo', '10.244.1.14', { app: 'wbe' }));
    expect(warnedKeys(e)).to.deep.equal(['prod/web']);
    expect(e.warnings('prod', 'web')).to.deep.equal([]);
    e.deletePod('prod', 'typo');
    expect(warnedKeys(e)).to.deep.equal(['prod/web']);
    expect(brief(e.warnings('prod', 'web'))).to.deep.equal(['ingress[0].from[1] NoPeersSelected']);
  });

  it('a namespaceSelector that picks no namespace with pods, and egress peers, are named by direction and index', () => {
    const e = new TranslationEngine();
    e.upsertNamespace({ metadata: { name: 'prod', labels: { team: 'a' } } });
    e.upsertPod(pod('prod', 'web', '10.244.1.10', { app: 'web' }));
    e.upsertPolicy(policy('prod', 'p', {
      podSelector: {},
      policyTypes: ['Ingress', 'Egress'],
      ingress: [{}, { from: [{ namespaceSelector: { matchLabels: { team: 'a' } } }] }],
      egress: [{ to: [{ ipBlock: { cidr: '10.0.0.0/8' } }, { namespaceSelector: { matchLabels: { team: 'b' } }, podSelector: { matchLabels: { app: 'db' } } }] }],
    }));
    expect(brief(e.warnings('prod', 'p'))).to.deep.equal(['egress[0].to[1] NoPeersSelected']);
    expect(e.warnings('prod', 'p')[0]!.message).to.equal('selects no pod right now: pods with app=db in namespaces with team=b');
    e.upsertNamespace({ metadata: { name: 'prod', labels: { team: 'b' } } });
    expect(brief(e.warnings('prod', 'p'))).to.deep.equal(['egress[0].to[1] NoPeersSelected', 'ingress[1].from[0] NoPeersSelected']);
    e.drain();
    e.upsertPod(pod('prod', 'db', '10.244.1.11', { app: 'db' }));
    expect(warnedKeys(e)).to.deep.equal(['prod/p']);
    expect(brief(e.warnings('prod', 'p'))).to.deep.equal(['ingress[1].from[0] NoPeersSelected']);
  });

  it('an ingress named port that no selected pod declares: NamedPortNotDeclared, cleared when one declares it', () => {
    const e = new TranslationEngine();
    e.upsertPod(pod('prod', 'web', '10.244.1.10', { app: 'web' }, [{ name: 'metrics', containerPort: 9090 }]));
    // Another namespace's pod declares "http": it is not a pod this policy selects.
    e.upsertPod(pod('other', 'srv', '10.244.2.10', { app: 'web' }, [{ name: 'http', containerPort: 8080 }]));
    e.upsertPolicy(policy('prod', 'web', { podSelector: { matchLabels: { app: 'web' } }, ingress: [{ ports: [{ port: 80 }, { port: 'http' }] }] }));
    e.drain();
    expect(e.warnings('prod', 'web')).to.deep.equal([
      { rule: 'ingress[0].ports[1]', reason: WARNING.NamedPortNotDeclared, message: 'no pod this policy selects declares TCP port "http": it matches nothing' },
    ]);
    // A UDP "http" is another port.
    e.upsertPod(pod('prod', 'web', '10.244.1.10', { app: 'web' }, [{ name: 'http', containerPort: 8080, protocol: 'UDP' }]));
    expect(warnedKeys(e)).to.deep.equal([]);
    e.upsertPod(pod('prod', 'web', '10.244.1.10', { app: 'web' }, [{ name: 'http', containerPort: 8080 }]));
    expect(warnedKeys(e)).to.deep.equal(['prod/web']);
    expect(e.warnings('prod', 'web')).to.deep.equal([]);
  });

  it('an egress named port: declared by some peer pod (pod peers), by any pod (ipBlock or any peer)', () => {
    const e = new TranslationEngine();
    e.upsertPod(pod('prod', 'web', '10.244.1.10', { app: 'web' }));
    e.upsertPod(pod('prod', 'db', '10.244.1.11', { app: 'db' }));
    e.upsertPod(pod('prod', 'cache', '10.244.1.12', { app: 'cache' }, [{ name: 'db', containerPort: 5432 }]));
    e.upsertPolicy(policy('prod', 'out', {
      podSelector: { matchLabels: { app: 'web' } },
      policyTypes: ['Egress'],
      egress: [{ to: [{ podSelector: { matchLabels: { app: 'db' } } }], ports: [{ port: 'db' }] }, { ports: [{ port: 'dns', protocol: 'UDP' }] }],
    }));
    expect(e.warnings('prod', 'out')).to.deep.equal([
      { rule: 'egress[0].ports[0]', reason: WARNING.NamedPortNotDeclared, message: 'no pod of this rule\'s peers declares TCP port "db": it matches nothing' },
      { rule: 'egress[1].ports[0]', reason: WARNING.NamedPortNotDeclared, message: 'no pod declares UDP port "dns": it matches nothing' },
    ]);
    e.drain();
    e.upsertPod(pod('kube-system', 'coredns', '10.244.0.2', { k8s: 'dns' }, [{ name: 'dns', containerPort: 53, protocol: 'UDP' }]));
    e.upsertPod(pod('prod', 'db', '10.244.1.11', { app: 'db' }, [{ name: 'db', containerPort: 5432 }]));
    expect(warnedKeys(e)).to.deep.equal(['prod/out']);
    expect(e.warnings('prod', 'out')).to.deep.equal([]);
  });

  it('no warning about a named port where there is no destination pod at all (Programmed says NoSelectedPods)', () => {
    const e = new TranslationEngine();
    e.upsertPolicy(policy('prod', 'web', { podSelector: { matchLabels: { app: 'web' } }, ingress: [{ ports: [{ port: 'http' }] }] }));
    expect(e.warnings('prod', 'web')).to.deep.equal([]);
  });

  it('an IPv6 ipBlock: IPv6NotEnforced on that peer (always, whatever the pods), next to the enforced IPv4 block', () => {
    const e = new TranslationEngine();
    const problems = e.upsertPolicy(policy('prod', 'v6', {
      podSelector: {},
      policyTypes: ['Egress'],
      egress: [{ to: [{ ipBlock: { cidr: '10.0.0.0/8' } }, { ipBlock: { cidr: '2001:db8::/32', except: ['2001:db8:1::/48'] } }] }],
    }));
    expect(problems).to.deep.equal([]);
    expect(warnedKeys(e)).to.deep.equal(['prod/v6']);
    expect(e.warnings('prod', 'v6')).to.deep.equal([
      { rule: 'egress[0].to[1]', reason: WARNING.IPv6NotEnforced, message: 'ipBlock 2001:db8::/32 is IPv6: the IPv4 dataplane cannot enforce it, so this peer allows nothing' },
    ]);
    // Unchanged on re-upsert: not listed again.
    e.upsertPolicy(policy('prod', 'v6', { podSelector: {}, policyTypes: ['Egress'], egress: [{ to: [{ ipBlock: { cidr: '10.0.0.0/8' } }, { ipBlock: { cidr: '2001:db8::/32', except: ['2001:db8:1::/48'] } }] }] }));
    expect(warnedKeys(e)).to.deep.equal([]);
  });

  it('a rule dropped as invalid warns nothing (its problem says it); a deleted policy has no warnings', () => {
    const e = new TranslationEngine();
    e.upsertPolicy(policy('prod', 'bad', { podSelector: {}, ingress: [{ from: [{ podSelector: { matchLabels: { app: 'x' } } }], ports: [{ port: 0 }] }] }));
    expect(e.warnings('prod', 'bad')).to.deep.equal([]);
    e.upsertPolicy(policy('prod', 'p', { podSelector: {}, ingress: [{ from: [{ podSelector: { matchLabels: { app: 'x' } } }] }] }));
    expect(warnedKeys(e)).to.deep.equal(['prod/p']);
    e.deletePolicy('prod', 'p');
    expect(e.warnings('prod', 'p')).to.deep.equal([]);
    expect(warnedKeys(e)).to.deep.equal([]);
  });

  it('NpmIPSet shards carry memberCount (the MEMBERS column)', () => {
    const e = new TranslationEngine();
    e.upsertPod(pod('prod', 'a', '10.244.1.10', { app: 'web' }));
    e.upsertPod(pod('prod', 'b', '10.244.1.11', { app: 'web' }));
    e.upsertPolicy(policy('prod', 'p', { podSelector: { matchLabels: { app: 'web' } }, ingress: [{ from: [{ podSelector: { matchLabels: { app: 'none' } } }] }] }));
    const counts = e.all().flatMap((o) => (o.kind === 'NpmIPSet' ? [[o.spec.meaning, o.spec.memberCount, o.spec.members.length]] : []));
    expect(counts.sort()).to.deep.equal([
      ['pods with app=none in namespace prod', 0, 0],
      ['pods with app=web in namespace prod', 2, 2],
    ]);
    for (const [, count, len] of counts) expect(count).to.equal(len);
  });
});

const NSS = ['a', 'b', 'c'];

/** Random events as the informers deliver them; after each drain, the reported flips are checked. */
function run(seed: number, steps: number) {
  const r = rng(seed);
  const peer = () => {
    const k = r.int(5);
    if (k === 0) return { podSelector: randomSelector(r) };
    if (k === 1) return { namespaceSelector: randomSelector(r) };
    if (k === 2) return { namespaceSelector: randomSelector(r), podSelector: randomSelector(r) };
    if (k === 3) return { ipBlock: { cidr: 'fd00::/64' } };
    return { ipBlock: { cidr: '10.244.0.0/16' } };
  };
  const ports = () => (r.next() < 0.4 ? undefined : [r.next() < 0.3 ? { port: 80 } : { port: r.pick(['http', 'dns']), protocol: r.pick(['TCP', 'UDP']) }]);
  const rules = (key: 'from' | 'to') => Array.from({ length: r.int(3) }, () => ({ [key]: Array.from({ length: r.int(3) }, peer), ports: ports() }));
  const engine = new TranslationEngine();
  const nss = new Map<string, Namespace>();
  const pods = new Map<string, Pod>();
  const pols = new Map<string, NetworkPolicy>();
  /** What a status writer following drain().warned would hold per policy. */
  const known = new Map<string, RuleWarning[]>();
  const check = (i: number) => {
    const { warned } = engine.drain();
    for (const { namespace, name } of warned) {
      const k = `${namespace}/${name}`;
      const now = engine.warnings(namespace, name);
      expect(now, `seed ${seed} step ${i}: ${k} listed as warned but unchanged`).not.to.deep.equal(known.get(k) ?? []);
      known.set(k, now);
    }
    for (const k of [...known.keys()]) if (!pols.has(k)) known.delete(k);
    const fresh = new TranslationEngine();
    for (const n of nss.values()) fresh.upsertNamespace(n);
    for (const p of pods.values()) fresh.upsertPod(p);
    for (const p of pols.values()) fresh.upsertPolicy(p);
    for (const k of pols.keys()) {
      const [ns, name] = k.split('/') as [string, string];
      const w = engine.warnings(ns, name);
      expect(known.get(k) ?? [], `seed ${seed} step ${i}: a flip of ${k} was not reported`).to.deep.equal(w);
      expect(w, `seed ${seed} step ${i}: ${k} differs from a fresh engine`).to.deep.equal(fresh.warnings(ns, name));
    }
  };
  for (let i = 0; i < steps; i++) {
    const what = r.int(10);
    const ns = r.pick(NSS);
    if (what < 2) {
      const n: Namespace = { metadata: { name: ns, labels: randomLabels(r, 0.5) } };
      nss.set(ns, n);
      engine.upsertNamespace(n);
    } else if (what < 7) {
      const name = `p${r.int(8)}`;
      const k = `${ns}/${name}`;
      if (r.next() < 0.3 && pods.has(k)) {
        pods.delete(k);
        engine.deletePod(ns, name);
      } else {
        const ports = r.next() < 0.5 ? [{ name: r.pick(['http', 'dns']), containerPort: 8000 + r.int(3), protocol: r.pick(['TCP', 'UDP']) }] : [];
        const p = pod(ns, name, `10.244.${NSS.indexOf(ns)}.${r.int(30) + 2}`, randomLabels(r, 0.5), ports);
        pods.set(k, p);
        engine.upsertPod(p);
      }
    } else {
      const name = `np${r.int(4)}`;
      const k = `${ns}/${name}`;
      if (r.next() < 0.25 && pols.has(k)) {
        pols.delete(k);
        engine.deletePolicy(ns, name);
      } else {
        const p = policy(ns, name, { podSelector: randomSelector(r), policyTypes: ['Ingress', 'Egress'], ingress: rules('from'), egress: rules('to') });
        pols.set(k, p);
        engine.upsertPolicy(p);
      }
    }
    if (r.next() < 0.4) check(i);
  }
  check(steps);
}

describe('translate: warnings follow pods incrementally (seeded property test)', () => {
  const base = Number(process.env.PROPERTY_SEED ?? 20261201);
  for (let s = 0; s < 20; s++) it(`seed ${base + s}: 200 random events`, () => run(base + s, 200));
});
