import { expect } from 'chai';
import { Waiters } from '../../../operator/src/controller/operator.js';

describe('controller: keys waiting for an object (expected waits)', () => {
  it('wakes the keys waiting for an object once, and a key waits for one object at most', () => {
    const w = new Waiters();
    w.wait('NpmIPSet//s1', 'NpmRuleSet/a/p');
    w.wait('NpmIPSet//s1', 'NpmRuleSet/a/q');
    w.wait('NpmIPSet//s2', 'NpmRuleSet/a/r');
    // r moves on to the next shard it needs: s2 no longer wakes it.
    w.wait('NpmIPSet//s3', 'NpmRuleSet/a/r');
    expect(w.wake('NpmIPSet//s2')).to.deep.equal([]);
    expect(w.wake('NpmIPSet//s1')).to.deep.equal(['NpmRuleSet/a/p', 'NpmRuleSet/a/q']);
    expect(w.wake('NpmIPSet//s1')).to.deep.equal([]);
    expect(w.size).to.equal(1);
    // A key done waiting (it wrote, or failed) is forgotten: nothing accumulates.
    w.done('NpmRuleSet/a/r');
    expect(w.size).to.equal(0);
    expect(w.wake('NpmIPSet//s3')).to.deep.equal([]);
  });
});
