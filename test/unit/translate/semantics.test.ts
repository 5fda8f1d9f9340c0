// Table-driven NetworkPolicy semantics, asserted as verdicts of the rule walker over the translated
// objects (plus the spec where the shape itself is the point).
import { expect } from 'chai';
import type { Protocol } from '../../../operator/src/api/types.js';
import { RuleWalker } from '../../../operator/src/debug/trace.js';
import { translate } from '../../../operator/src/translate/engine.js';
import type { NetworkPolicy, Pod } from '../../../operator/src/translate/k8s.js';

interface P {
  ns: string;
  name: string;
  ip?: string;
  labels?: Record<string, string>;
  ports?: { name: string; port: number; protocol?: string }[];
  hostNetwork?: boolean;
  phase?: string;
}

const NS: Record<string, Record<string, string>> = {
  prod: { env: 'prod', team: 'a' },
  dev: { env: 'dev', team: 'a' },
  ops: { team: 'b' },
  bare: {},
};

const BASE: P[] = [
  { ns: 'prod', name: 'web', ip: '10.244.1.1', labels: { app: 'web' }, ports: [{ name: 'http', port: 8080 }] },
  { ns: 'prod', name: 'web2', ip: '10.244.1.2', labels: { app: 'web' }, ports: [{ name: 'http', port: 9090 }] },
  { ns: 'prod', name: 'db', ip: '10.244.1.3', labels: { app: 'db', tier: 'data' }, ports: [{ name: 'http', port: 5432, protocol: 'UDP' }] },
  { ns: 'prod', name: 'plain', ip: '10.244.1.4' },
  { ns: 'dev', name: 'web', ip: '10.244.2.1', labels: { app: 'web' } },
  { ns: 'dev', name: 'tool', ip: '10.244.2.2', labels: { app: 'tool', tier: 'x' } },
  { ns: 'ops', name: 'mon', ip: '10.244.3.1', labels: { app: 'mon' } },
  { ns: 'bare', name: 'b', ip: '10.244.4.1', labels: { app: 'web' } },
];

function pod(p: P): Pod {
  return {
    metadata: { name: p.name, namespace: p.ns, labels: p.labels ?? {} },
    spec: {
      ...(p.hostNetwork ? { hostNetwork: true } : {}),
      containers: [{ name: 'c', ports: (p.ports ?? []).map((x) => ({ name: x.name, containerPort: x.port, protocol: x.protocol ?? 'TCP' })) }],
    },
    status: { phase: p.phase ?? 'Running', ...(p.ip ? { podIP: p.ip } : {}) },
  };
}

function np(name: string, ns: string, spec: NetworkPolicy['spec']): NetworkPolicy {
  return { metadata: { name, namespace: ns }, spec };
}

function world(policies: NetworkPolicy[], pods: P[] = BASE) {
  const r = translate({
    namespaces: Object.entries(NS).map(([name, labels]) => ({ metadata: { name, labels } })),
    pods: pods.map(pod),
    policies,
  });
  const w = new RuleWalker(r.items);
  const ipOf = (k: string) => {
    const [ns, name] = k.split('/');
    const found = pods.find((p) => p.ns === ns && p.name === name);
    return found?.ip ?? k;
  };
  const allowed = (from: string, to: string, port = 80, protocol: Protocol = 'TCP') =>
    w.verdict({ src: ipOf(from), dst: ipOf(to), port, protocol }).allowed;
  return { ...r, allowed, walker: w };
}

describe('translation semantics', () => {
  describe('isolation and policyTypes', () => {
    it('no policy: everything allowed', () => {
      const w = world([]);
      expect(w.allowed('dev/web', 'prod/db')).to.equal(true);
    });

    it('policyTypes missing: Ingress only, even with no rules; egress unaffected', () => {
      const w = world([np('deny', 'prod', { podSelector: {} })]);
      expect((w.items.find((i) => i.kind === 'NpmRuleSet')!.spec as { policyTypes: string[] }).policyTypes).to.deep.equal(['Ingress']);
      expect(w.allowed('dev/web', 'prod/db')).to.equal(false);
      expect(w.allowed('prod/db', 'dev/web')).to.equal(true);
    });

    it('policyTypes missing with egress rules: Ingress and Egress', () => {
      const w = world([np('p', 'prod', { podSelector: { matchLabels: { app: 'db' } }, egress: [{ to: [{ podSelector: {} }] }] })]);
      const rs = w.items.find((i) => i.kind === 'NpmRuleSet')!;
      expect((rs.spec as { policyTypes: string[] }).policyTypes).to.deep.equal(['Egress', 'Ingress']);
      expect(w.allowed('prod/db', 'prod/web')).to.equal(true);
      expect(w.allowed('prod/db', 'dev/web')).to.equal(false);
      expect(w.allowed('prod/web', 'prod/db')).to.equal(false);
    });

    it('policyTypesText is policyTypes joined with commas (the Types column of kubectl get nrs)', () => {
      const text = (spec: NetworkPolicy['spec']) => {
        const rs = world([np('p', 'prod', spec)]).items.find((i) => i.kind === 'NpmRuleSet')!;
        return (rs.spec as { policyTypesText?: string }).policyTypesText;
      };
      expect(text({ podSelector: {} })).to.equal('Ingress');
      expect(text({ podSelector: {}, policyTypes: ['Egress'] })).to.equal('Egress');
      expect(text({ podSelector: {}, policyTypes: ['Ingress', 'Egress'] })).to.equal('Egress,Ingress');
      expect(text({ podSelector: {}, policyTypes: ['Bogus'] as never })).to.equal('Egress,Ingress');
    });

    it('egress-only policy leaves ingress open and ignores ingress rules', () => {
      const w = world([np('p', 'prod', { podSelector: {}, policyTypes: ['Egress'], ingress: [{ from: [] }] })]);
      expect(w.allowed('dev/web', 'prod/db')).to.equal(true);
      expect(w.allowed('prod/db', 'dev/web')).to.equal(false);
    });

    it('a connection needs the source egress AND the destination ingress', () => {
      const w = world([
        np('eg', 'dev', { podSelector: {}, policyTypes: ['Egress'], egress: [{ to: [{ namespaceSelector: { matchLabels: { env: 'prod' } } }] }] }),
        np('in', 'prod', { podSelector: { matchLabels: { app: 'db' } }, ingress: [{ from: [{ podSelector: { matchLabels: { app: 'web' } } }] }] }),
      ]);
      expect(w.allowed('dev/web', 'prod/web')).to.equal(true);
      expect(w.allowed('dev/web', 'prod/db')).to.equal(false); // egress yes, ingress no
      expect(w.allowed('prod/web', 'prod/db')).to.equal(true);
      expect(w.allowed('dev/web', 'ops/mon')).to.equal(false); // egress no
    });

    it('allows are a union across policies', () => {
      const w = world([
        np('a', 'prod', { podSelector: { matchLabels: { app: 'db' } }, ingress: [{ from: [{ podSelector: { matchLabels: { app: 'web' } } }] }] }),
        np('b', 'prod', { podSelector: { matchLabels: { app: 'db' } }, ingress: [{ from: [{ namespaceSelector: { matchLabels: { team: 'b' } } }] }] }),
      ]);
      expect(w.allowed('prod/web', 'prod/db')).to.equal(true);
      expect(w.allowed('ops/mon', 'prod/db')).to.equal(true);
      expect(w.allowed('prod/plain', 'prod/db')).to.equal(false);
    });
  });

  describe('rules and peers: empty versus missing', () => {
    it('ingress: [{}] allows all; ingress: [] allows none', () => {
      expect(world([np('p', 'prod', { podSelector: {}, ingress: [{}] })]).allowed('ops/mon', 'prod/db')).to.equal(true);
      expect(world([np('p', 'prod', { podSelector: {}, ingress: [] })]).allowed('ops/mon', 'prod/db')).to.equal(false);
    });

    it('from: [] is every source; from missing is every source', () => {
      expect(world([np('p', 'prod', { podSelector: {}, ingress: [{ from: [], ports: [{ port: 80 }] }] })]).allowed('ops/mon', 'prod/db', 80)).to.equal(true);
      expect(world([np('p', 'prod', { podSelector: {}, ingress: [{ ports: [{ port: 80 }] }] })]).allowed('ops/mon', 'prod/db', 81)).to.equal(false);
    });

    it('every source includes addresses that are not pods', () => {
      expect(world([np('p', 'prod', { podSelector: {}, ingress: [{}] })]).allowed('192.168.250.9', 'prod/db')).to.equal(true);
    });

    it('podSelector: {} peer is every pod of the policy namespace only', () => {
      const w = world([np('p', 'prod', { podSelector: {}, ingress: [{ from: [{ podSelector: {} }] }] })]);
      expect(w.allowed('prod/web', 'prod/db')).to.equal(true);
      expect(w.allowed('dev/web', 'prod/db')).to.equal(false);
    });

    it('namespaceSelector: {} peer is every pod of every namespace, and nothing off-cluster', () => {
      const w = world([np('p', 'prod', { podSelector: {}, ingress: [{ from: [{ namespaceSelector: {} }] }] })]);
      expect(w.allowed('ops/mon', 'prod/db')).to.equal(true);
      expect(w.allowed('192.168.250.9', 'prod/db')).to.equal(false);
    });

    it('podSelector AND namespaceSelector in one peer; separate peers are OR', () => {
      const and = world([
        np('p', 'prod', { podSelector: { matchLabels: { app: 'db' } }, ingress: [{ from: [{ namespaceSelector: { matchLabels: { team: 'a' } }, podSelector: { matchLabels: { app: 'web' } } }] }] }),
      ]);
      expect(and.allowed('dev/web', 'prod/db')).to.equal(true);
      expect(and.allowed('dev/tool', 'prod/db')).to.equal(false);
      expect(and.allowed('bare/b', 'prod/db')).to.equal(false);
      const or = world([
        np('p', 'prod', { podSelector: { matchLabels: { app: 'db' } }, ingress: [{ from: [{ namespaceSelector: { matchLabels: { team: 'a' } } }, { podSelector: { matchLabels: { app: 'web' } } }] }] }),
      ]);
      expect(or.allowed('dev/tool', 'prod/db')).to.equal(true);
      expect(or.allowed('bare/b', 'prod/db')).to.equal(false);
    });
  });

  describe('selectors', () => {
    const ingressFrom = (peer: object) => world([np('p', 'prod', { podSelector: { matchLabels: { app: 'db' } }, ingress: [{ from: [peer] }] })]);

    it('multi-value NotIn excludes every listed value (Azure NPM #4662)', () => {
      const w = ingressFrom({ namespaceSelector: { matchExpressions: [{ key: 'env', operator: 'NotIn', values: ['prod', 'dev'] }] } });
      expect(w.allowed('dev/web', 'prod/db')).to.equal(false);
      expect(w.allowed('prod/web', 'prod/db')).to.equal(false);
      expect(w.allowed('ops/mon', 'prod/db')).to.equal(true); // absent key matches NotIn
      expect(w.allowed('bare/b', 'prod/db')).to.equal(true);
    });

    it('negation-only namespace selectors never admit off-cluster addresses (Azure NPM #4868)', () => {
      const w = ingressFrom({ namespaceSelector: { matchExpressions: [{ key: 'env', operator: 'DoesNotExist' }] } });
      expect(w.allowed('ops/mon', 'prod/db')).to.equal(true);
      expect(w.allowed('10.9.9.9', 'prod/db')).to.equal(false);
    });

    it('In with several values, Exists, DoesNotExist on pods', () => {
      expect(ingressFrom({ podSelector: { matchExpressions: [{ key: 'app', operator: 'In', values: ['web', 'x'] }] } }).allowed('prod/web', 'prod/db')).to.equal(true);
      expect(ingressFrom({ podSelector: { matchExpressions: [{ key: 'app', operator: 'Exists' }] } }).allowed('prod/plain', 'prod/db')).to.equal(false);
      expect(ingressFrom({ podSelector: { matchExpressions: [{ key: 'app', operator: 'DoesNotExist' }] } }).allowed('prod/plain', 'prod/db')).to.equal(true);
      expect(ingressFrom({ podSelector: { matchExpressions: [{ key: 'app', operator: 'NotIn', values: ['web'] }] } }).allowed('prod/plain', 'prod/db')).to.equal(true);
    });

    it('the same selector written two ways is one shared set', () => {
      const w = world([
        np('a', 'prod', { podSelector: { matchLabels: { app: 'web' } }, ingress: [{}] }),
        np('b', 'prod', { podSelector: { matchExpressions: [{ key: 'app', operator: 'In', values: ['web', 'web'] }] }, ingress: [{}] }),
      ]);
      expect(w.items.filter((i) => i.kind === 'NpmIPSet')).to.have.length(1);
    });

    it('a set is kind NamespaceSelector when a namespaceSelector picks its namespaces, PodSelector otherwise', () => {
      const w = world([
        np('p', 'prod', {
          podSelector: { matchLabels: { app: 'db' } },
          ingress: [
            { from: [{ podSelector: { matchLabels: { app: 'web' } } }] },
            { from: [{ namespaceSelector: { matchLabels: { team: 'a' } } }] },
            { from: [{ namespaceSelector: {}, podSelector: { matchLabels: { app: 'mon' } } }] },
          ],
        }),
      ]);
      const rs = w.items.find((i) => i.kind === 'NpmRuleSet')!.spec as { ipsets: { kind: string; meaning: string }[] };
      const kinds = Object.fromEntries(rs.ipsets.map((r) => [r.meaning, r.kind]));
      expect(kinds).to.deep.equal({
        'pods with app=db in namespace prod': 'PodSelector',
        'pods with app=web in namespace prod': 'PodSelector',
        'all pods in namespaces with team=a': 'NamespaceSelector',
        'pods with app=mon in all namespaces': 'NamespaceSelector',
      });
      // The NpmIPSet shards carry the same kind (what `kubectl describe nips` shows).
      const shardKinds = w.items.filter((i) => i.kind === 'NpmIPSet').map((i) => [(i.spec as { meaning: string }).meaning, (i.spec as { kind: string }).kind]);
      expect(Object.fromEntries(shardKinds)).to.deep.equal(kinds);
    });
  });

  describe('ports', () => {
    const onPorts = (ports: object[]) => world([np('p', 'prod', { podSelector: {}, ingress: [{ ports: ports as never }] })]);

    it('protocol defaults to TCP; UDP and SCTP are distinct', () => {
      const w = onPorts([{ port: 80 }]);
      expect(w.allowed('ops/mon', 'prod/db', 80, 'TCP')).to.equal(true);
      expect(w.allowed('ops/mon', 'prod/db', 80, 'UDP')).to.equal(false);
      const s = onPorts([{ protocol: 'SCTP', port: 80 }]);
      expect(s.allowed('ops/mon', 'prod/db', 80, 'SCTP')).to.equal(true);
      expect(s.allowed('ops/mon', 'prod/db', 80, 'TCP')).to.equal(false);
    });

    it('endPort ranges are inclusive', () => {
      const w = onPorts([{ port: 1000, endPort: 1010 }]);
      expect([999, 1000, 1005, 1010, 1011].map((p) => w.allowed('ops/mon', 'prod/db', p))).to.deep.equal([false, true, true, true, false]);
    });

    it('protocol-only entry allows every port of that protocol', () => {
      const w = onPorts([{ protocol: 'UDP' }]);
      expect(w.allowed('ops/mon', 'prod/db', 5353, 'UDP')).to.equal(true);
      expect(w.allowed('ops/mon', 'prod/db', 5353, 'TCP')).to.equal(false);
    });

    it('named ports resolve per destination pod, with the matching protocol, or to nothing', () => {
      const w = onPorts([{ port: 'http' }]);
      expect(w.allowed('ops/mon', 'prod/web', 8080)).to.equal(true);
      expect(w.allowed('ops/mon', 'prod/web', 9090)).to.equal(false);
      expect(w.allowed('ops/mon', 'prod/web2', 9090)).to.equal(true);
      expect(w.allowed('ops/mon', 'prod/db', 5432, 'TCP')).to.equal(false); // db's "http" is UDP
      expect(w.allowed('ops/mon', 'prod/plain', 8080)).to.equal(false); // no such port
      const u = onPorts([{ protocol: 'UDP', port: 'http' }]);
      expect(u.allowed('ops/mon', 'prod/db', 5432, 'UDP')).to.equal(true);
    });

    it('named ports in egress resolve on the destination pod', () => {
      const w = world([np('p', 'ops', { podSelector: {}, policyTypes: ['Egress'], egress: [{ ports: [{ port: 'http' }] }] })]);
      expect(w.allowed('ops/mon', 'prod/web', 8080)).to.equal(true);
      expect(w.allowed('ops/mon', 'prod/web2', 8080)).to.equal(false);
    });
  });

  describe('ipBlock', () => {
    const from = (ipBlock: object) => world([np('p', 'prod', { podSelector: {}, ingress: [{ from: [{ ipBlock: ipBlock as never }] }] })]);

    it('cidr with except, matching pod IPs too', () => {
      const w = from({ cidr: '10.244.0.0/16', except: ['10.244.2.0/24'] });
      expect(w.allowed('ops/mon', 'prod/db')).to.equal(true);
      expect(w.allowed('dev/web', 'prod/db')).to.equal(false);
      expect(w.allowed('10.244.9.9', 'prod/db')).to.equal(true);
      const set = w.items.find((i) => i.kind === 'NpmRuleSet')!.spec as { ipsets: { meaning: string; members?: string[] }[] };
      expect(set.ipsets.find((s) => s.members)).to.include({ meaning: '10.244.0.0/16 except 10.244.2.0/24' });
    });

    it('0.0.0.0/0 (which hash:net cannot hold) with excepts, including a whole /1 half', () => {
      const w = from({ cidr: '0.0.0.0/0', except: ['10.244.1.0/24', '128.0.0.0/1'] });
      expect(w.allowed('dev/web', 'prod/db')).to.equal(true);
      expect(w.allowed('prod/web', 'prod/db')).to.equal(false);
      expect(w.allowed('200.1.1.1', 'prod/db')).to.equal(false);
      expect(w.allowed('1.1.1.1', 'prod/db')).to.equal(true);
    });

    it('host bits in the cidr are masked; an IPv6 block has no IPv4 effect', () => {
      expect(from({ cidr: '10.244.3.7/24' }).allowed('ops/mon', 'prod/db')).to.equal(true);
      const v6 = from({ cidr: 'fd00::/8' });
      expect(v6.problems).to.deep.equal([]);
      expect(v6.allowed('ops/mon', 'prod/db')).to.equal(false);
    });
  });

  describe('pods', () => {
    it('only pods with an IP, not hostNetwork, not finished, are members', () => {
      const pods: P[] = [
        ...BASE,
        { ns: 'dev', name: 'pending', labels: { app: 'web' } },
        { ns: 'dev', name: 'host', ip: '192.168.250.1', labels: { app: 'web' }, hostNetwork: true },
        { ns: 'dev', name: 'done', ip: '10.244.2.99', labels: { app: 'web' }, phase: 'Succeeded' },
      ];
      const w = world([np('p', 'prod', { podSelector: {}, ingress: [{ from: [{ namespaceSelector: {}, podSelector: { matchLabels: { app: 'web' } } }] }] })], pods);
      const members = w.items.filter((i) => i.kind === 'NpmIPSet').flatMap((i) => (i.spec as { members: string[] }).members);
      expect(members).to.include('10.244.2.1');
      expect(members).to.not.include('192.168.250.1');
      expect(members).to.not.include('10.244.2.99');
    });

    it('dual-stack pods contribute their IPv4 address', () => {
      const p = pod({ ns: 'dev', name: 'ds', labels: { app: 'web' } });
      p.status = { phase: 'Running', podIP: 'fd00::5', podIPs: [{ ip: 'fd00::5' }, { ip: '10.244.2.55' }] };
      const r = translate({ namespaces: [], pods: [p], policies: [np('p', 'dev', { podSelector: {} })] });
      expect(r.items.flatMap((i) => (i.kind === 'NpmIPSet' ? i.spec.members : []))).to.deep.equal(['10.244.2.55']);
    });
  });

  describe('invalid input is reported with its field and enforced fail-closed', () => {
    const cases: [string, NetworkPolicy['spec'], string][] = [
      ['bad operator', { podSelector: {}, ingress: [{ from: [{ podSelector: { matchExpressions: [{ key: 'a', operator: 'Foo' }] } }] }] }, 'spec.ingress[0].from[0].podSelector.matchExpressions[0].operator'],
      ['In without values', { podSelector: {}, ingress: [{ from: [{ podSelector: { matchExpressions: [{ key: 'a', operator: 'In', values: [] }] } }] }] }, 'spec.ingress[0].from[0].podSelector.matchExpressions[0].values'],
      ['ipBlock with selector', { podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: '10.0.0.0/8' }, podSelector: {} }] }] }, 'spec.ingress[0].from[0]'],
      ['except outside cidr', { podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: '10.0.0.0/8', except: ['11.0.0.0/8'] } }] }] }, 'spec.ingress[0].from[0].ipBlock.except[0]'],
      ['port 0', { podSelector: {}, ingress: [{ ports: [{ port: 0 }] }] }, 'spec.ingress[0].ports[0].port'],
      ['endPort below port', { podSelector: {}, ingress: [{ ports: [{ port: 90, endPort: 80 }] }] }, 'spec.ingress[0].ports[0].endPort'],
      ['endPort with named port', { podSelector: {}, ingress: [{ ports: [{ port: 'http', endPort: 80 }] }] }, 'spec.ingress[0].ports[0].endPort'],
      ['bad protocol', { podSelector: {}, ingress: [{ ports: [{ protocol: 'ICMP', port: 1 }] }] }, 'spec.ingress[0].ports[0].protocol'],
      ['bad policyType', { podSelector: {}, policyTypes: ['ingress'] }, 'spec.policyTypes[0]'],
    ];
    for (const [what, spec, field] of cases) {
      it(`${what}: ${field}`, () => {
        const w = world([np('bad', 'prod', spec)]);
        expect(w.problems.map((p) => `${p.object} ${p.field}`)).to.include(`NetworkPolicy prod/bad ${field}`);
        // The invalid rule is dropped, never widened: nothing reaches prod/db.
        expect(w.allowed('ops/mon', 'prod/db', 1)).to.equal(false);
        expect(w.allowed('ops/mon', 'prod/db', 80)).to.equal(false);
      });
    }

    it('one invalid rule does not disable the valid ones, nor other policies', () => {
      const w = world([
        np('bad', 'prod', { podSelector: {}, ingress: [{ ports: [{ port: 0 }] }, { from: [{ namespaceSelector: { matchLabels: { team: 'b' } } }] }] }),
        np('good', 'dev', { podSelector: {}, ingress: [] }),
      ]);
      expect(w.allowed('ops/mon', 'prod/db')).to.equal(true);
      expect(w.allowed('prod/db', 'dev/web')).to.equal(false);
    });
  });
});
