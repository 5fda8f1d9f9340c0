// `agent --once` input that must never weaken the kernel (issue #9 items 2 and 3), on the fake
// kernel: a wrong, empty or incomplete file is refused before anything is written; a missing peer
// set costs only the allow rules that use it. The same rules in the daemon's selection (selectLocal).
import { expect } from 'chai';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { runOnce } from '../../../operator/src/agent/once.js';
import { selectLocal } from '../../../operator/src/agent/select.js';
import { RULESET_KIND, type NpmIPSet, type NpmRuleSet } from '../../../operator/src/api/types.js';
import { FakeKernel } from './fakekernel.js';
import { objects, snapshot } from './fixtures.js';

const shape = { namespaces: 2, podsPerNamespace: 3, policiesPerNamespace: 1 };
const items = objects(shape) as (NpmRuleSet | NpmIPSet)[];
const rulesets = items.filter((o): o is NpmRuleSet => o.kind === RULESET_KIND);
const ipsets = items.filter((o): o is NpmIPSet => o.kind !== RULESET_KIND);
const pol = rulesets[0]!;
const target = pol.spec.chains[0]!.targetSet;
/** A pod-selector peer set of pol that no chain of pol uses as a target. */
const peer = pol.spec.chains.flatMap((c) => c.rules.map((r) => r.match.peerSet)).find((s): s is string => !!s && s.startsWith('KNPM-S-') && !pol.spec.chains.some((c) => c.targetSet === s))!;

function kernelSnapshot(k: FakeKernel): string {
  return JSON.stringify({ sets: [...k.sets].map(([n, s]) => [n, s.type, [...s.members.keys()].sort()]).sort(), chains: [...k.chains].sort() });
}

/** A fake kernel holding the fixture's policies, as a previous good run left it. */
async function programmed(): Promise<FakeKernel> {
  const k = new FakeKernel();
  const r = await runOnce({ objects: items, nodeName: 'n1', backend: 'nft', exec: k.exec });
  expect(r.exitCode, r.summary).to.equal(0);
  expect(k.chains.size).to.be.greaterThan(5);
  return k;
}

describe('agent --once: input that must not touch the kernel (#9 item 2)', () => {
  let dir = '';
  before(() => (dir = mkdtempSync(join(tmpdir(), 'knpm-input-'))));
  after(() => rmSync(dir, { recursive: true, force: true }));

  const cases: [string, string][] = [
    ['the translate input (Namespaces, Pods, NetworkPolicies)', stringify({ apiVersion: 'v1', kind: 'List', items: [...snapshot(shape).namespaces.map((n) => ({ apiVersion: 'v1', kind: 'Namespace', ...n })), ...snapshot(shape).policies.map((p) => ({ apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', ...p }))] })],
    ['an empty file', ''],
    ['a file of comments and empty documents', '# nothing\n---\n---\n'],
    ['an empty List', JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [] })],
    ['only set members (no NpmRuleSet)', stringify({ apiVersion: 'v1', kind: 'List', items: ipsets })],
    ['unparseable YAML', 'apiVersion: v1\nkind: List\nitems: [\n'],
    ['unparseable JSON', '{"apiVersion": "v1", "kind": "List", "items": [}'],
    ['one foreign object among valid ones', stringify({ apiVersion: 'v1', kind: 'List', items: [...items, { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'x' } }] })],
    ['a duplicate NpmRuleSet', stringify({ apiVersion: 'v1', kind: 'List', items: [...items, pol] })],
  ];
  for (const [name, text] of cases) {
    it(`${name}: exit 2, the file named, nothing written, the kernel as it was`, async () => {
      const k = await programmed();
      const before = kernelSnapshot(k);
      const writes = k.writes().length;
      const file = join(dir, `${name.replace(/\W+/g, '-')}.yaml`);
      writeFileSync(file, text);
      const r = await runOnce({ file, nodeName: 'n1', backend: 'nft', exec: k.exec });
      expect(r.exitCode, r.summary).to.equal(2);
      expect(r.summary).to.contain('nothing written').and.contain(file);
      expect(k.writes().length, 'restore calls').to.equal(writes);
      expect(kernelSnapshot(k)).to.equal(before);
    });
  }

  it('a missing file: exit 2, nothing written', async () => {
    const k = await programmed();
    const writes = k.writes().length;
    const r = await runOnce({ file: join(dir, 'no-such-file.yaml'), nodeName: 'n1', backend: 'nft', exec: k.exec });
    expect(r.exitCode, r.summary).to.equal(2);
    expect(k.writes().length).to.equal(writes);
  });

  it('--allow-empty: "no policy" is meant, the policies go and the base layout stays', async () => {
    const k = await programmed();
    const file = join(dir, 'empty-allowed.yaml');
    writeFileSync(file, '');
    const r = await runOnce({ file, nodeName: 'n1', backend: 'nft', exec: k.exec, allowEmpty: true });
    expect(r.exitCode, r.summary).to.equal(0);
    expect([...k.chains.keys()].filter((c) => /^KNPM-[IE]-/.test(c))).to.deep.equal([]);
    expect(k.chains.has('KNPM-FORWARD')).to.equal(true);
  });
});

describe('a missing member list must not isolate nobody (#9 item 3)', () => {
  it('--once: a target set without its NpmIPSet is refused (exit 2, ruleset and set named), nothing written', async () => {
    const k = await programmed();
    const before = kernelSnapshot(k);
    const writes = k.writes().length;
    const r = await runOnce({ objects: items.filter((o) => !(o.kind === 'NpmIPSet' && o.spec.setName === target)), nodeName: 'n1', backend: 'nft', exec: k.exec });
    expect(r.exitCode, r.summary).to.equal(2);
    expect(r.summary).to.contain(`NpmRuleSet ${pol.metadata.namespace}/${pol.metadata.name}`).and.contain(`target set ${target}`);
    expect(k.writes().length).to.equal(writes);
    expect(kernelSnapshot(k)).to.equal(before);
  });

  it('--once: a target set with a shard missing is refused too', async () => {
    const sharded = ipsets.find((s) => s.spec.setName === target)!;
    const twoShards = [{ ...sharded, spec: { ...sharded.spec, shardCount: 2 } }];
    const rest = items.filter((o) => !(o.kind === 'NpmIPSet' && o.spec.setName === target));
    const r = await runOnce({ objects: [...twoShards, ...rest], nodeName: 'n1', backend: 'nft', exec: new FakeKernel().exec });
    expect(r.exitCode, r.summary).to.equal(2);
    expect(r.summary).to.contain(`target set ${target}`);
  });

  it('--once: a peer set without its NpmIPSet keeps the isolation and loses only the rules using it (exit 1, named)', async () => {
    const k = new FakeKernel();
    const r = await runOnce({ objects: items.filter((o) => !(o.kind === 'NpmIPSet' && o.spec.setName === peer)), nodeName: 'n1', backend: 'nft', exec: k.exec });
    expect(r.exitCode, r.summary).to.equal(1);
    expect(r.summary).to.contain('left out').and.contain(peer);
    const full = new FakeKernel();
    await runOnce({ objects: items, nodeName: 'n1', backend: 'nft', exec: full.exec });
    for (const c of pol.spec.chains) {
      const rules = k.chains.get(c.name)!;
      expect(rules, `chain ${c.name} exists`).to.not.equal(undefined);
      expect(rules.some((x) => x.includes(peer)), `no rule of ${c.name} uses ${peer}`).to.equal(false);
      // Everything else of the chain is there, the isolation included.
      const others = full.chains.get(c.name)!.filter((x) => !x.includes(peer));
      expect(rules).to.deep.equal(others);
    }
    expect(k.sets.has(target)).to.equal(true);
    expect(k.sets.get(target)!.members.size).to.be.greaterThan(0);
  });

  it('daemon: selectLocal programs the ruleset without the rule (not skipped whole) and does not report it applied', () => {
    const local = new Set(ipsets.find((s) => s.spec.setName === target)!.spec.members);
    const s = selectLocal(rulesets, ipsets.filter((x) => x.spec.setName !== peer), local, new Map());
    const chosen = s.objects.filter((o): o is NpmRuleSet => o.kind === RULESET_KIND);
    const mine = chosen.find((x) => x.metadata.name === pol.metadata.name && x.metadata.namespace === pol.metadata.namespace)!;
    expect(mine, 'programmed, not held back').to.not.equal(undefined);
    expect(mine.spec.chains.map((c) => c.name)).to.deep.equal(pol.spec.chains.map((c) => c.name));
    expect(mine.spec.chains.flatMap((c) => c.rules).some((r) => r.match.peerSet === peer)).to.equal(false);
    expect(mine.spec.chains.flatMap((c) => c.rules).length).to.be.greaterThan(0);
    expect(s.applied.some((a) => a.name === pol.metadata.name && a.namespace === pol.metadata.namespace)).to.equal(false);
    expect(s.heldBack.join('\n')).to.contain(peer);
  });
});
