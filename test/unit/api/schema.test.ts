// The TypeScript API types and the CRD schemas must agree both ways: a "complete" sample, typed so
// that the compiler demands every field of the interfaces (DeepRequired), must validate against the
// CRD, and must use every property the CRD declares.
import { expect } from 'chai';
import type { NpmIPSetSpec, NpmNodeStatus, NpmRuleSetSpec, NpmRuleSetStatus } from '../../../operator/src/api/types.js';
import { translate } from '../../../operator/src/translate/engine.js';
import { Model, loadCases } from '../../support/conformance.js';
import { crdSchema, schemaPaths, validate, valuePaths, type Schema } from '../../support/schema.js';

type DeepRequired<T> = T extends (infer U)[] ? DeepRequired<U>[] : T extends object ? { [K in keyof T]-?: DeepRequired<T[K]> } : T;

const fullRuleSetSpec: DeepRequired<NpmRuleSetSpec> = {
  policy: { name: 'web', namespace: 'prod', uid: '0b4f0c5e-0000-4000-8000-000000000001', generation: 3 },
  policyTypes: ['Ingress', 'Egress'],
  policyTypesText: 'Egress,Ingress',
  summary: 'Isolates pods with app=web in namespace prod for ingress (1 allow rule)',
  ipsets: [
    { name: 'KNPM-N-AAAAAAAAAAAAAAAAAAAAAAAA', type: 'hash:net', kind: 'IPBlock', family: 'IPv4', meaning: '10.0.0.0/16 except 10.0.5.0/24', members: ['10.0.0.0/16', '10.0.5.0/24 nomatch'] },
  ],
  chains: [
    {
      name: 'KNPM-I-AAAAAAAAAAAAAAAAAAAAA',
      direction: 'Ingress',
      targetSet: 'KNPM-S-AAAAAAAAAAAAAAAAAAAAAAAA',
      guards: 'pods with app=web in namespace prod',
      rules: [
        {
          description: 'rule 0: allow TCP ports 80-90 from 10.0.0.0/16',
          match: { peerSet: 'KNPM-N-AAAAAAAAAAAAAAAAAAAAAAAA', protocol: 'TCP', port: 80, endPort: 90, namedPortSet: 'KNPM-P-AAAAAAAAAAAAAAAAAAAAAAAA' },
        },
      ],
    },
  ],
  problems: ['spec.ingress[1].ports[0].port: 0 is not a port number in 1-65535'],
};

const fullStatus: DeepRequired<NpmRuleSetStatus> = {
  observedGeneration: 3,
  setCount: 2,
  ruleCount: 1,
  nodesProgrammed: '2/3',
  nodes: [{ node: 'n1', generation: 3, error: 'iptables-restore: line 4 failed' }],
  warnings: [{ rule: 'ingress[0].from[1]', reason: 'NoPeersSelected', message: 'selects no pod right now: pods with app=wbe in namespace prod' }],
  conditions: [{ type: 'Accepted', status: 'True', observedGeneration: 3, lastTransitionTime: '2026-01-01T00:00:00Z', reason: 'Translated', message: 'ok' }],
};

const fullIPSetSpec: DeepRequired<NpmIPSetSpec> = {
  setName: 'KNPM-S-AAAAAAAAAAAAAAAAAAAAAAAA',
  type: 'hash:ip',
  kind: 'PodSelector',
  family: 'IPv4',
  meaning: 'pods with app=web in namespace prod',
  shard: 0,
  shardCount: 1,
  memberCount: 1,
  members: ['10.244.1.10'],
};

const fullNodeStatus: DeepRequired<NpmNodeStatus> = {
  backend: 'nft',
  lastError: '',
  kernel: { ipsets: 3, chains: 2, rules: 5 },
  applied: [{ namespace: 'prod', name: 'web', generation: 2, uid: '0b4f0c5e-0000-4000-8000-000000000002' }],
  observed: { ipsets: '1234', pods: '1200' },
  conditions: [{ type: 'Ready', status: 'True', observedGeneration: 1, lastTransitionTime: '2026-01-01T00:00:00Z', reason: 'Synced', message: 'ok' }],
};

function sorted(a: string[]): string[] {
  return [...new Set(a)].sort();
}

describe('API types agree with the CRD schemas', () => {
  const rs = crdSchema('kubenpm.io_npmrulesets.yaml');
  const ips = crdSchema('kubenpm.io_npmipsets.yaml');
  const prop = (s: Schema, k: string): Schema => s.properties![k]!;

  it('NpmRuleSet spec: the complete sample validates and covers every schema property', () => {
    expect(validate(fullRuleSetSpec, prop(rs, 'spec'))).to.deep.equal([]);
    expect(sorted(valuePaths(fullRuleSetSpec))).to.deep.equal(sorted(schemaPaths(prop(rs, 'spec'))));
  });

  it('NpmRuleSet status: the complete sample validates and covers every schema property', () => {
    expect(validate(fullStatus, prop(rs, 'status'))).to.deep.equal([]);
    expect(sorted(valuePaths(fullStatus))).to.deep.equal(sorted(schemaPaths(prop(rs, 'status'))));
  });

  it('NpmIPSet spec: the complete sample validates and covers every schema property', () => {
    expect(validate(fullIPSetSpec, prop(ips, 'spec'))).to.deep.equal([]);
    expect(sorted(valuePaths(fullIPSetSpec))).to.deep.equal(sorted(schemaPaths(prop(ips, 'spec'))));
  });

  it('NpmNode status: the complete sample validates and covers every schema property', () => {
    const nodes = crdSchema('kubenpm.io_npmnodes.yaml');
    expect(validate(fullNodeStatus, prop(nodes, 'status'))).to.deep.equal([]);
    expect(sorted(valuePaths(fullNodeStatus))).to.deep.equal(sorted(schemaPaths(prop(nodes, 'status'))));
  });

  it('the validator rejects what the API server would prune or refuse', () => {
    expect(validate({ ...fullIPSetSpec, extra: 1 }, prop(ips, 'spec'))).to.have.length(1);
    expect(validate({ ...fullIPSetSpec, type: 'list:set' }, prop(ips, 'spec'))).to.have.length(1);
    expect(validate({ ...fullIPSetSpec, setName: 'X'.repeat(32) }, prop(ips, 'spec'))).to.have.length(1);
  });

  it('every object translated from every upstream case validates', () => {
    for (const c of loadCases()) {
      const m = new Model();
      m.apply(c.policies.map((p) => ({ createPolicy: p })));
      for (const o of translate(m.snapshot()).items) {
        const schema = o.kind === 'NpmRuleSet' ? rs : ips;
        expect(validate(o, schema), `${c.id} ${o.kind} ${o.metadata.name}`).to.deep.equal([]);
      }
    }
  });
});

describe('CRD files', () => {
  it('declare no property the schema parser would invent (every description is a plain string)', () => {
    for (const f of ['kubenpm.io_npmrulesets.yaml', 'kubenpm.io_npmipsets.yaml', 'kubenpm.io_npmnodes.yaml']) {
      const bad = schemaPaths(crdSchema(f)).filter((p) => / /.test(p));
      expect(bad, f).to.deep.equal([]);
    }
  });
});
