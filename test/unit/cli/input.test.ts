// Input that must be refused (issue #9 item 10): `kube-npm translate` and `debug trace` exit 2,
// name the file, the object and the field, and print nothing on stdout; never a TypeError (exit 1).
// The operator translates objects from the API server through the same engine: an invalid object
// there is a problem on that policy (Accepted=False with the field), never an exception.
import { expect } from 'chai';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runDebug } from '../../../operator/src/cli/debug.js';
import { runTranslate } from '../../../operator/src/cli/translate.js';
import { TranslationEngine } from '../../../operator/src/translate/engine.js';
import type { NetworkPolicy } from '../../../operator/src/translate/k8s.js';
import { rng } from '../../support/rng.js';

const NS = 'apiVersion: v1\nkind: Namespace\nmetadata: {name: prod}\n';
const POD = 'apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: prod, labels: {app: web}}\nstatus: {phase: Running, podIP: 10.244.1.1}\n';
const DB = 'apiVersion: v1\nkind: Pod\nmetadata: {name: db, namespace: prod, labels: {app: db}}\nstatus: {phase: Running, podIP: 10.244.1.2}\n';
const policy = (spec: string, name = 'p'): string => `apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: ${name}, namespace: prod}\nspec: ${spec}\n`;

let dir = '';
async function run(cmd: 'translate' | 'trace', docs: string[]): Promise<{ code: number; out: string; err: string; file: string }> {
  const file = join(dir, `in-${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(file, docs.join('---\n'));
  let out = '';
  let err = '';
  const io = { stdout: (s: string) => void (out += s), stderr: (s: string) => void (err += s) };
  const code = cmd === 'translate' ? runTranslate(['-f', file], io) : await runDebug(['trace', '-f', file, '--from', 'prod/web', '--to', 'prod/db', '--port', '80'], io);
  return { code, out, err, file };
}

// [name, documents, object, field]
const REFUSED: [string, string[], string, string][] = [
  ['matchExpressions given as an object', [policy('{podSelector: {matchExpressions: {key: app, operator: In, values: [web]}}}')], 'NetworkPolicy prod/p', 'spec.podSelector.matchExpressions'],
  ['values given as a string', [policy('{podSelector: {matchExpressions: [{key: app, operator: In, values: web}]}}')], 'NetworkPolicy prod/p', 'spec.podSelector.matchExpressions[0].values'],
  ['values holding a non-string', [policy('{podSelector: {matchExpressions: [{key: app, operator: In, values: [{a: 1}]}]}}')], 'NetworkPolicy prod/p', 'spec.podSelector.matchExpressions[0].values[0]'],
  ['a peer selector with matchExpressions as an object', [policy('{podSelector: {}, ingress: [{from: [{podSelector: {matchExpressions: {key: app}}}]}]}')], 'NetworkPolicy prod/p', 'spec.ingress[0].from[0].podSelector.matchExpressions'],
  ['spec: "hello"', [policy('"hello"')], 'NetworkPolicy prod/p', 'spec'],
  ['podSelector: "app=web"', [policy('{podSelector: "app=web"}')], 'NetworkPolicy prod/p', 'spec.podSelector'],
  ['matchLabels: [a]', [policy('{podSelector: {matchLabels: [a]}}')], 'NetworkPolicy prod/p', 'spec.podSelector.matchLabels'],
  ['a label value with separators (b,c=d)', [policy('{podSelector: {matchLabels: {a: "b,c=d"}}}')], 'NetworkPolicy prod/p', 'spec.podSelector.matchLabels.a'],
  ['a label value of 64 characters', [policy(`{podSelector: {matchLabels: {a: ${'v'.repeat(64)}}}}`)], 'NetworkPolicy prod/p', 'spec.podSelector.matchLabels.a'],
  ['a label key starting with a dash', [policy('{podSelector: {matchLabels: {"-a": b}}}')], 'NetworkPolicy prod/p', 'spec.podSelector.matchLabels.-a'],
  ['a label key with an upper-case prefix', [policy('{podSelector: {matchLabels: {"Example.com/a": b}}}')], 'NetworkPolicy prod/p', 'spec.podSelector.matchLabels.Example.com/a'],
  ['a label key name of 64 characters', [policy(`{podSelector: {matchExpressions: [{key: ${'k'.repeat(64)}, operator: Exists}]}}`)], 'NetworkPolicy prod/p', 'spec.podSelector.matchExpressions[0].key'],
  ['a NotIn value with a space', [policy('{podSelector: {matchExpressions: [{key: a, operator: NotIn, values: ["x y"]}]}}')], 'NetworkPolicy prod/p', 'spec.podSelector.matchExpressions[0].values[0]'],
  ['an ingress rule that is a string (would read as allow-all)', [policy('{podSelector: {}, ingress: ["everyone"]}')], 'NetworkPolicy prod/p', 'spec.ingress[0]'],
  ['a malformed IPv6 CIDR (:::/64)', [policy('{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: ":::/64"}}]}]}')], 'NetworkPolicy prod/p', 'spec.ingress[0].from[0].ipBlock.cidr'],
  ['a malformed IPv6 CIDR (1::2::3/64)', [policy('{podSelector: {}, egress: [{to: [{ipBlock: {cidr: "1::2::3/64"}}]}]}')], 'NetworkPolicy prod/p', 'spec.egress[0].to[0].ipBlock.cidr'],
  ['a malformed IPv6 except', [policy('{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: "2001:db8::/32", except: ["2001:db8:::/64"]}}]}]}')], 'NetworkPolicy prod/p', 'spec.ingress[0].from[0].ipBlock.except[0]'],
  ['an invalid pod label', ['apiVersion: v1\nkind: Pod\nmetadata: {name: x, namespace: prod, labels: {"a b": c}}\n'], 'Pod prod/x', 'metadata.labels.a b'],
  ['pod labels as a list', ['apiVersion: v1\nkind: Pod\nmetadata: {name: x, namespace: prod, labels: [a]}\n'], 'Pod prod/x', 'metadata.labels'],
  ['pod containers as a string', ['apiVersion: v1\nkind: Pod\nmetadata: {name: x, namespace: prod}\nspec: {containers: web}\n'], 'Pod prod/x', 'spec.containers'],
  ['pod podIPs as a string', ['apiVersion: v1\nkind: Pod\nmetadata: {name: x, namespace: prod}\nstatus: {podIPs: 10.0.0.1}\n'], 'Pod prod/x', 'status.podIPs'],
  ['an invalid namespace label value', ['apiVersion: v1\nkind: Namespace\nmetadata: {name: x, labels: {team: "a/b"}}\n'], 'Namespace x', 'metadata.labels.team'],
  ['two Pods with one name', [POD, POD.replace('10.244.1.1', '10.244.1.9')], 'Pod prod/web', 'duplicate'],
  ['two NetworkPolicies with one name', [policy('{podSelector: {}}'), policy('{podSelector: {matchLabels: {app: web}}}')], 'NetworkPolicy prod/p', 'duplicate'],
  ['a Pod without namespace and one in "default" with the same name', ['apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n', 'apiVersion: v1\nkind: Pod\nmetadata: {name: x, namespace: default}\n'], 'Pod default/x', 'duplicate'],
];

describe('input that must be refused (translate and debug trace)', () => {
  before(() => (dir = mkdtempSync(join(tmpdir(), 'knpm-refuse-'))));
  after(() => rmSync(dir, { recursive: true, force: true }));

  for (const [name, docs, object, field] of REFUSED) {
    it(`${name}: exit 2, file/object/field named, nothing on stdout`, async () => {
      for (const cmd of ['translate', 'trace'] as const) {
        const r = await run(cmd, [NS, POD, DB, ...docs]);
        expect(r.code, `${cmd}: ${r.err}`).to.equal(2);
        expect(r.out, cmd).to.equal('');
        expect(r.err, cmd).to.contain(r.file).and.contain(object).and.contain(field);
      }
    });
  }

  it('valid edge cases are accepted: prefixed keys, empty values, IPv6 blocks (no IPv4 effect), embedded IPv4', async () => {
    const ok = await run('translate', [
      NS,
      POD,
      policy('{podSelector: {matchLabels: {"app.kubernetes.io/name": web, tier: ""}}, ingress: [{from: [{ipBlock: {cidr: "2001:db8::/64"}}, {ipBlock: {cidr: "::ffff:10.0.0.0/104"}}, {podSelector: {matchExpressions: [{key: "example.com/x_y.z", operator: NotIn, values: [a-b, A.1]}]}}]}]}'),
    ]);
    expect(ok.code, ok.err).to.equal(0);
    expect(ok.out).to.contain('kind: NpmRuleSet');
  });

  it('JSON input: parse errors name the file with line and column; YAML flow style starting with { still reads', () => {
    const file = join(dir, 'bad.json');
    writeFileSync(file, '{\n  "apiVersion": "v1",\n  "kind": "List",\n  "items": [}\n}\n');
    let err = '';
    let out = '';
    expect(runTranslate(['-f', file], { stdout: (s) => void (out += s), stderr: (s) => void (err += s) })).to.equal(2);
    expect(out).to.equal('');
    expect(err).to.contain(file).and.match(/invalid JSON: .*line 4, column 13/);
    const flow = join(dir, 'flow.yaml');
    writeFileSync(flow, '{apiVersion: v1, kind: List, items: [{apiVersion: v1, kind: Namespace, metadata: {name: a}}]}\n');
    expect(runTranslate(['-f', flow], { stdout: () => undefined, stderr: () => undefined })).to.equal(0);
  });
});

describe('the operator path: invalid objects become problems on that policy, never exceptions', () => {
  it('each refused shape is reported on its policy (spec.problems: Accepted=False) and the others translate', () => {
    const e = new TranslationEngine();
    e.upsertPod({ metadata: { name: 'web', namespace: 'prod', labels: { app: 'web' } }, status: { phase: 'Running', podIP: '10.244.1.1' } });
    const good: NetworkPolicy = { metadata: { name: 'good', namespace: 'prod' }, spec: { podSelector: { matchLabels: { app: 'web' } } } };
    const bad: [unknown, string][] = [
      ['hello', 'spec'],
      [{ podSelector: 'app=web' }, 'spec.podSelector'],
      [{ podSelector: { matchExpressions: { key: 'app' } } }, 'spec.podSelector.matchExpressions'],
      [{ podSelector: { matchExpressions: [{ key: 'app', operator: 'In', values: 'web' }] } }, 'spec.podSelector.matchExpressions[0].values'],
      [{ podSelector: { matchLabels: ['a'] } }, 'spec.podSelector.matchLabels'],
      [{ podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: ':::/64' } }] }] }, 'spec.ingress[0].from[0].ipBlock.cidr'],
    ];
    bad.forEach(([spec, field], i) => {
      const problems = e.upsertPolicy({ metadata: { name: `bad${i}`, namespace: 'prod' }, spec } as unknown as NetworkPolicy);
      expect(problems.map((p) => p.field), JSON.stringify(spec)).to.include(field);
      expect(e.problems('prod', `bad${i}`).join('\n')).to.contain(field);
      // Fail closed: the policy still isolates (its chains exist).
      expect(e.ruleset('prod', `bad${i}`)!.spec.chains.length).to.be.greaterThan(0);
    });
    expect(e.upsertPolicy(good)).to.deep.equal([]);
    expect(e.problems('prod', 'good')).to.deep.equal([]);
  });

  it('fuzz (seeded): random shapes in every field never throw', () => {
    const r = rng(99);
    const junk = (depth: number): unknown => {
      const make: (() => unknown)[] = [
        () => null, () => undefined, () => 'x', () => 7, () => true, () => ':::/64',
        () => [junk(depth + 1)],
        () => ({ matchLabels: junk(depth + 1), matchExpressions: junk(depth + 1) }),
        () => ({ key: junk(depth + 1), operator: r.pick(['In', 'Exists', 3]), values: junk(depth + 1) }),
      ];
      return make[r.int(depth > 2 ? 6 : make.length)]!();
    };
    const e = new TranslationEngine();
    for (let i = 0; i < 3000; i++) {
      const spec = {
        podSelector: junk(0),
        policyTypes: r.pick([undefined, ['Ingress'], 'Egress', junk(0)]),
        ingress: r.pick([undefined, junk(0), [{ from: [{ podSelector: junk(0), namespaceSelector: junk(0) }], ports: junk(0) }], [{ from: [{ ipBlock: junk(0) }] }]]),
        egress: r.pick([undefined, junk(0), [{ to: junk(0), ports: [{ port: junk(0), protocol: junk(0), endPort: junk(0) }] }]]),
      };
      expect(() => e.upsertPolicy({ metadata: { name: `p${i}`, namespace: 'prod' }, spec } as unknown as NetworkPolicy), JSON.stringify(spec)).to.not.throw();
      expect(() => e.upsertPod({ metadata: { name: `q${i}`, namespace: 'prod', labels: junk(0) }, spec: { containers: junk(0) }, status: junk(0) } as never)).to.not.throw();
    }
    expect(() => e.all()).to.not.throw();
  });
});
