/** metav1.Condition helpers. */
import { expect } from 'chai';
import { conditionsEqual, getCondition, isTrue, metaTime, removeCondition, setCondition, type Condition } from '../../../operator/src/framework/conditions.js';

const t1 = new Date('2026-11-26T10:00:00.123Z');
const t2 = new Date('2026-11-26T11:00:00.456Z');

describe('framework conditions', () => {
  it('adds a condition with a seconds-precision lastTransitionTime', () => {
    const c = setCondition(undefined, { type: 'Accepted', status: 'True', observedGeneration: 3, reason: 'Valid', message: 'ok' }, t1);
    expect(c).to.deep.equal([{ type: 'Accepted', status: 'True', observedGeneration: 3, lastTransitionTime: '2026-11-26T10:00:00Z', reason: 'Valid', message: 'ok' }]);
    expect(metaTime(t2)).to.equal('2026-11-26T11:00:00Z');
  });

  it('keeps lastTransitionTime when the status does not flip, even if reason/message/generation change', () => {
    const a = setCondition(undefined, { type: 'Programmed', status: 'False', reason: 'Pending', message: '0/3 nodes' }, t1);
    const b = setCondition(a, { type: 'Programmed', status: 'False', observedGeneration: 2, reason: 'Pending', message: '2/3 nodes' }, t2);
    expect(getCondition(b, 'Programmed')).to.deep.equal({
      type: 'Programmed', status: 'False', observedGeneration: 2, lastTransitionTime: '2026-11-26T10:00:00Z', reason: 'Pending', message: '2/3 nodes',
    });
  });

  it('moves lastTransitionTime when the status flips', () => {
    const a = setCondition(undefined, { type: 'Programmed', status: 'False', reason: 'Pending', message: '' }, t1);
    const b = setCondition(a, { type: 'Programmed', status: 'True', reason: 'Programmed', message: '3/3 nodes' }, t2);
    expect(getCondition(b, 'Programmed')?.lastTransitionTime).to.equal('2026-11-26T11:00:00Z');
    const c = setCondition(b, { type: 'Programmed', status: 'Unknown', reason: 'NoNodes', message: '' }, t1);
    expect(getCondition(c, 'Programmed')?.lastTransitionTime).to.equal('2026-11-26T10:00:00Z');
  });

  it('keeps one entry per type, sorted by type, and does not modify its input', () => {
    const input: Condition[] = [
      { type: 'Programmed', status: 'True', lastTransitionTime: 'x', reason: 'R', message: '' },
      { type: 'Accepted', status: 'True', lastTransitionTime: 'y', reason: 'R', message: '' },
    ];
    const frozen = JSON.stringify(input);
    const out = setCondition(input, { type: 'Degraded', status: 'False', reason: 'AsExpected', message: '' }, t1);
    expect(out.map((c) => c.type)).to.deep.equal(['Accepted', 'Degraded', 'Programmed']);
    const again = setCondition(out, { type: 'Accepted', status: 'False', reason: 'Invalid', message: 'bad' }, t2);
    expect(again.map((c) => c.type)).to.deep.equal(['Accepted', 'Degraded', 'Programmed']);
    expect(again.filter((c) => c.type === 'Accepted')).to.have.length(1);
    expect(JSON.stringify(input)).to.equal(frozen);
  });

  it('getCondition / isTrue / removeCondition / conditionsEqual', () => {
    const c = setCondition(undefined, { type: 'Accepted', status: 'True', observedGeneration: 2, reason: 'Valid', message: '' }, t1);
    expect(getCondition(c, 'Nope')).to.equal(undefined);
    expect(getCondition(undefined, 'Accepted')).to.equal(undefined);
    expect(isTrue(c, 'Accepted')).to.equal(true);
    expect(isTrue(c, 'Accepted', 2)).to.equal(true);
    expect(isTrue(c, 'Accepted', 3)).to.equal(false);
    expect(removeCondition(c, 'Accepted')).to.deep.equal([]);
    const d = setCondition(c, { type: 'Accepted', status: 'True', observedGeneration: 2, reason: 'Valid', message: '' }, t2);
    expect(conditionsEqual(c, d)).to.equal(true);
    expect(conditionsEqual(c, setCondition(c, { type: 'Accepted', status: 'True', reason: 'Valid', message: 'x' }, t2))).to.equal(false);
  });
});
