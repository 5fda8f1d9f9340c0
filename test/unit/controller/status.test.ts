import { expect } from 'chai';
import type { NpmRuleSetStatus } from '../../../operator/src/api/types.js';
import { sameStatus } from '../../../operator/src/controller/status.js';

/** The same value with every object's keys in reverse order (the API server returns sorted keys). */
function permuted<T>(v: T): T {
  if (Array.isArray(v)) return v.map(permuted) as T;
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).reverse().map(([k, x]) => [k, permuted(x)])) as T;
  return v;
}

const status: NpmRuleSetStatus = {
  observedGeneration: 3,
  conditions: [
    { type: 'Accepted', status: 'True', observedGeneration: 3, reason: 'Translated', message: 'm', lastTransitionTime: '2026-01-01T00:00:00Z' },
    { type: 'Programmed', status: 'False', observedGeneration: 3, reason: 'Pending', message: '0/1 nodes', lastTransitionTime: '2026-01-01T00:00:01Z' },
  ],
  setCount: 2,
  ruleCount: 4,
  nodesProgrammed: '0/1',
  nodes: [{ node: 'n1', generation: 2, error: 'x' }],
};

describe('controller status: sameStatus', () => {
  it('is structural: the same status with its keys in another order (as the API server returns it) is the same', () => {
    const fromServer = permuted(status);
    expect(JSON.stringify(fromServer)).not.to.equal(JSON.stringify(status)); // the test means something
    expect(sameStatus(fromServer, status)).to.equal(true);
    expect(sameStatus(status, fromServer)).to.equal(true);
  });

  it('sees a changed value, a missing or extra field, and list order (lists are ordered)', () => {
    expect(sameStatus(undefined, status)).to.equal(false);
    expect(sameStatus(permuted({ ...status, ruleCount: 5 }), status)).to.equal(false);
    const { nodes: _n, ...without } = status;
    expect(sameStatus(without, status)).to.equal(false);
    expect(sameStatus(status, without)).to.equal(false);
    expect(sameStatus({ ...status, conditions: [...status.conditions!].reverse() }, status)).to.equal(false);
    expect(sameStatus({ ...status, nodes: [{ node: 'n1', generation: 2 }] }, status)).to.equal(false);
  });

  it('an absent optional field equals one the server dropped (undefined is not written)', () => {
    expect(sameStatus({ ...status, nodes: [{ node: 'n1', generation: 2, error: 'x' }] }, { ...status, nodes: [{ node: 'n1', generation: 2, error: 'x', extra: undefined } as never] })).to.equal(true);
  });
});
