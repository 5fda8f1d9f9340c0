// The canonical form of a selector names its kernel set (issue #9 item 11): it must be injective.
// Two different selectors sharing a set name share members: `{a: "b,c=d"}` and `{a: b, c: d}` once
// both became KNPM-S-<same>, and whichever came first decided who was in it.
import { expect } from 'chai';
import { podSelectorSetName } from '../../../operator/src/api/names.js';
import { scopeKey } from '../../../operator/src/translate/policy.js';
import { canonicalize, compileSelector, type FieldError, type Op, type Requirement } from '../../../operator/src/translate/selector.js';
import { rng } from '../../support/rng.js';

const OPS: Op[] = ['In', 'NotIn', 'Exists', 'DoesNotExist'];

/** Reference identity, built differently from the code under test: a set of encoded requirements. */
function reference(reqs: readonly Requirement[]): string {
  const set = new Set(reqs.map((r) => `${encodeURIComponent(r.key)}&${r.op}&${[...new Set(r.values)].map(encodeURIComponent).sort().join('&')}`));
  return [...set].sort().join('|');
}

function setName(reqs: readonly Requirement[]): string {
  return podSelectorSetName(scopeKey({ ns: 'prod' }), canonicalize(reqs).key);
}

describe('selector canonical form (set identity)', () => {
  it('the issue case: {a: "b,c=d"} and {a: b, c: d} get different set names', () => {
    const one = [{ key: 'a', op: 'In' as const, values: ['b,c=d'] }];
    const two = [{ key: 'a', op: 'In' as const, values: ['b'] }, { key: 'c', op: 'In' as const, values: ['d'] }];
    expect(canonicalize(one).key).to.not.equal(canonicalize(two).key);
    expect(setName(one)).to.not.equal(setName(two));
    // ... and `a in (b,c)` is not `a=b,c`, nor `a notin (b)` `a!=b`-with-a-comma.
    expect(canonicalize([{ key: 'a', op: 'In', values: ['b', 'c'] }]).key).to.not.equal(canonicalize([{ key: 'a', op: 'In', values: ['b,c'] }]).key);
    expect(canonicalize([{ key: 'a', op: 'Exists', values: [] }]).key).to.not.equal(canonicalize([{ key: '!a', op: 'DoesNotExist', values: [] }]).key);
  });

  it('property (seeded): distinct selectors -> distinct canonical forms and set names; equal selectors however written -> equal', () => {
    // Alphabet rich in the characters a text form would use as separators or escapes.
    const chars = ['a', 'b', 'c', ',', '=', '!', '(', ')', ' ', '"', '\\', '\u0000', '[', ']', 'in', 'notin', '/', '.', '-', '\n', 'é'];
    const r = rng(20260601);
    const word = (): string => Array.from({ length: 1 + r.int(4) }, () => r.pick(chars)).join('');
    const selector = (): Requirement[] =>
      Array.from({ length: r.int(4) }, () => {
        const op = r.pick(OPS);
        return { key: word(), op, values: op === 'In' || op === 'NotIn' ? Array.from({ length: 1 + r.int(3) }, word) : [] };
      });
    const byKey = new Map<string, string>();
    const byName = new Map<string, string>();
    let distinct = 0;
    for (let i = 0; i < 20000; i++) {
      const reqs = selector();
      const ref = reference(reqs);
      const key = canonicalize(reqs).key;
      // Written differently: requirements shuffled and repeated, values reversed and repeated.
      const rewritten = [...reqs, ...reqs.slice(0, 1)].reverse().map((q) => ({ ...q, values: [...q.values, ...q.values].reverse() }));
      expect(canonicalize(rewritten).key, 'same selector, written differently').to.equal(key);
      const seen = byKey.get(key);
      if (seen === undefined) {
        distinct++;
        byKey.set(key, ref);
      } else expect(seen, `two selectors share canonical form ${key}`).to.equal(ref);
      const name = setName(reqs);
      const seenName = byName.get(name);
      if (seenName === undefined) byName.set(name, ref);
      else expect(seenName, `two selectors share set ${name}`).to.equal(ref);
    }
    expect(distinct, 'the generator makes many different selectors').to.be.greaterThan(10000);
  });

  it('compileSelector: matchLabels and the equivalent matchExpressions are one set; valid keys with prefixes and dots work', () => {
    const errors: FieldError[] = [];
    const a = compileSelector({ matchLabels: { 'example.com/app': 'web', tier: '' } }, 's', errors);
    const b = compileSelector({ matchExpressions: [{ key: 'tier', operator: 'In', values: [''] }, { key: 'example.com/app', operator: 'In', values: ['web', 'web'] }] }, 's', errors);
    expect(errors).to.deep.equal([]);
    expect(a.key).to.equal(b.key);
    expect(compileSelector({}, 's', errors).key).to.equal(compileSelector(undefined, 's', errors).key);
  });
});
