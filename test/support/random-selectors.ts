/**
 * Random labels and label selectors over a small vocabulary (3 keys x 3 values, every operator),
 * for the seeded translation property tests: small enough that selectors often match, and every
 * operator and matchLabels/matchExpressions mix occurs.
 */
import type { LabelSelector } from '../../operator/src/translate/k8s.js';
import type { rng } from './rng.js';

type Rng = ReturnType<typeof rng>;

const KEYS = ['app', 'tier', 'env'];
const VALS = ['x', 'y', 'z'];
const OPS = ['In', 'NotIn', 'Exists', 'DoesNotExist'];

/** Each key present with probability `p`, with a random value. */
export function randomLabels(r: Rng, p: number): Record<string, string> {
  const l: Record<string, string> = {};
  for (const k of KEYS) if (r.next() < p) l[k] = r.pick(VALS);
  return l;
}

/** matchLabels with one pair (half the time) and one matchExpression (half the time). */
export function randomSelector(r: Rng): LabelSelector {
  const s: LabelSelector = {};
  if (r.next() < 0.5) s.matchLabels = { [r.pick(KEYS)]: r.pick(VALS) };
  if (r.next() < 0.5) {
    const op = r.pick(OPS);
    s.matchExpressions = [{ key: r.pick(KEYS), operator: op, ...(op === 'In' || op === 'NotIn' ? { values: [r.pick(VALS), r.pick(VALS)] } : {}) }];
  }
  return s;
}
