import { expect } from 'chai';
import type { NpmRuleSet, NpmRuleSetStatus, RuleWarning } from '../../../operator/src/api/types.js';
import { REASON, computeStatus, sameStatus } from '../../../operator/src/controller/status.js';

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

describe('controller status: warnings and the Resolved condition', () => {
  const rs: NpmRuleSet = {
    apiVersion: 'kubenpm.io/v1alpha1',
    kind: 'NpmRuleSet',
    metadata: { name: 'web', namespace: 'prod', generation: 2, uid: 'u1' },
    spec: { policy: { name: 'web', namespace: 'prod' }, policyTypes: ['Ingress'], summary: 's', ipsets: [], chains: [] },
  };
  const t0 = new Date('2026-12-01T10:00:00Z');
  const t1 = new Date('2026-12-01T10:05:00Z');
  const peer: RuleWarning = { rule: 'ingress[0].from[1]', reason: 'NoPeersSelected', message: 'selects no pod right now: pods with app=wbe in namespace prod' };
  const port: RuleWarning = { rule: 'ingress[0].ports[0]', reason: 'NamedPortNotDeclared', message: 'no pod this policy selects declares TCP port "http": it matches nothing' };
  const resolved = (s: NpmRuleSetStatus) => s.conditions!.find((c) => c.type === 'Resolved')!;

  it('no warning: Resolved True and no warnings field (an unchanged status stays byte-identical)', () => {
    const s = computeStatus(rs, [], new Map(), t0);
    expect(resolved(s)).to.include({ status: 'True', reason: REASON.Resolved, observedGeneration: 2 });
    expect(s).not.to.have.property('warnings');
    expect(sameStatus(s, computeStatus({ ...rs, status: s }, [], new Map(), t1))).to.equal(true);
  });

  it('warnings: listed in status.warnings and in the Resolved=False message, reason theirs when they share one', () => {
    const s = computeStatus(rs, [], new Map(), t0, new Map(), [peer]);
    expect(s.warnings).to.deep.equal([peer]);
    expect(resolved(s)).to.include({ status: 'False', reason: 'NoPeersSelected' });
    expect(resolved(s).message).to.equal('1 part of the policy allows nothing right now: ingress[0].from[1]: selects no pod right now: pods with app=wbe in namespace prod');
    const two = computeStatus({ ...rs, status: s }, [], new Map(), t1, new Map(), [peer, port]);
    expect(resolved(two)).to.include({ status: 'False', reason: REASON.SeveralWarnings, lastTransitionTime: '2026-12-01T10:00:00Z' });
    expect(resolved(two).message).to.contain('ingress[0].ports[0]: no pod this policy selects declares TCP port "http"');
    // Cleared: True again, the time of the flip, the list gone.
    const clear = computeStatus({ ...rs, status: two }, [], new Map(), t1, new Map(), []);
    expect(resolved(clear)).to.include({ status: 'True', lastTransitionTime: '2026-12-01T10:05:00Z' });
    // A merge patch leaves an absent key as stored: null removes the list, and is the same as the
    // status the server then holds.
    expect(clear.warnings).to.equal(null);
    const { warnings: _w, ...stored } = clear;
    expect(sameStatus(stored, clear)).to.equal(true);
    expect(sameStatus(two, clear)).to.equal(false);
    expect(computeStatus({ ...rs, status: stored }, [], new Map(), t1, new Map(), [])).not.to.have.property('warnings');
  });

  it('many warnings: the message names the first five, the list has them all', () => {
    const ws = Array.from({ length: 7 }, (_, i) => ({ ...peer, rule: `ingress[${i}].from[0]` }));
    const s = computeStatus(rs, [], new Map(), t0, new Map(), ws);
    expect(s.warnings).to.have.length(7);
    expect(resolved(s).message).to.match(/^7 parts of the policy .*ingress\[4\]\.from\[0\].*; and 2 more \(status\.warnings\)$/);
    expect(resolved(s).message).not.to.contain('ingress[5]');
  });
});
