// Every upstream e2e case evaluated at the translation level: translate the model cluster, walk the
// generated chains and sets for every ordered pod pair, and compare with the upstream verdicts.
// The incremental engine is fed the same steps as events and must reach the same verdicts.
import { expect } from 'chai';
import { RuleWalker } from '../../../operator/src/debug/trace.js';
import { TranslationEngine, translate } from '../../../operator/src/translate/engine.js';
import { Model, PODS, POD_IPS, expectedMatrix, loadCases } from '../../support/conformance.js';

const cases = loadCases();

function mismatches(walker: RuleWalker, probe: Parameters<typeof expectedMatrix>[0]): string[] {
  const bad: string[] = [];
  for (const [pair, want] of expectedMatrix(probe)) {
    const [from, to] = pair.split('->') as [string, string];
    const got = walker.verdict({ src: POD_IPS[from]!, dst: POD_IPS[to]!, protocol: probe.protocol, port: probe.port }).allowed;
    if (got !== want) bad.push(`${pair} ${probe.protocol}/${probe.port}: want ${want ? 'allow' : 'deny'}, got ${got ? 'allow' : 'deny'}`);
  }
  return bad;
}

describe('upstream NetworkPolicy e2e cases, translation level', () => {
  it(`has all ${cases.length} cases`, () => {
    expect(cases.length).to.equal(69);
  });

  for (const c of cases) {
    it(`${c.id}`, () => {
      const model = new Model();
      model.apply(c.policies.map((p) => ({ createPolicy: p })));
      const engine = new TranslationEngine();
      for (const n of model.snapshot().namespaces) engine.upsertNamespace(n);
      for (const p of PODS) engine.upsertPod(model.pod(p));
      for (const k of model.changed.policies) engine.upsertPolicy(model.policies.get(k)!);
      c.steps.forEach((step, i) => {
        if (i > 0 || step.actions.length) {
          model.apply(step.actions);
          for (const ns of model.changed.namespaces) engine.upsertNamespace(model.namespace(ns));
          for (const p of model.changed.pods) engine.upsertPod(model.pod(p));
          for (const k of model.changed.policies) {
            const np = model.policies.get(k);
            if (np) engine.upsertPolicy(np);
            else engine.deletePolicy(k.split('/')[0]!, k.split('/')[1]!);
          }
        }
        const full = translate(model.snapshot());
        expect(full.problems, 'translation problems').to.deep.equal([]);
        const walker = new RuleWalker(full.items);
        const incremental = new RuleWalker(engine.all());
        for (const probe of step.expected) {
          expect(mismatches(walker, probe), `step ${i} (full translation)`).to.deep.equal([]);
          expect(mismatches(incremental, probe), `step ${i} (incremental engine)`).to.deep.equal([]);
        }
      });
    });
  }
});
