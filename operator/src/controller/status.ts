/**
 * NpmRuleSet status from what the operator knows: the translation (counts, problems) and the
 * per-node reports (NpmNode). Pure: `now` is passed in.
 *
 * Accepted:   True (Translated) or False (InvalidPolicy: the parts listed in spec.problems are
 *             enforced fail-closed).
 * Programmed: True when every node hosting a pod the policy selects reports the ruleset's current
 *             generation of this very object (uid); False names the nodes lagging or failing. n/N in status.nodesProgrammed.
 *             A node whose agent is not reporting (its liveness Lease expired: liveness.ts) vouches
 *             for nothing, whatever it reported before: False, AgentNotReporting, naming it.
 * Resolved:   True when every peer selects a pod and every named port is declared where traffic
 *             goes; False lists status.warnings (the engine's warnings(): a peer selecting no pod,
 *             a named port nobody declares, an IPv6 ipBlock). The reason is the warnings' reason
 *             when they share one, else SeveralWarnings. Pods move warnings, not the policy: the
 *             list is written only when it changes (reconciler.ts flips counts a changed list).
 */
import type { Condition, NpmNode, NpmRuleSet, NpmRuleSetStatus, RuleWarning } from '../api/types.js';
import { setCondition } from '../framework/conditions.js';

export const REASON = {
  Translated: 'Translated',
  InvalidPolicy: 'InvalidPolicy',
  Programmed: 'Programmed',
  NoSelectedPods: 'NoSelectedPods',
  Pending: 'Pending',
  NodeError: 'NodeError',
  AgentNotReporting: 'AgentNotReporting',
  Resolved: 'Resolved',
  /** Resolved=False with warnings of more than one reason (each warning names its own). */
  SeveralWarnings: 'SeveralWarnings',
} as const;

/** The condition message lists at most this many warnings (all are in status.warnings). */
const MAX_LISTED = 5;

export function computeStatus(
  rs: NpmRuleSet,
  concernedNodes: readonly string[],
  nodes: ReadonlyMap<string, NpmNode>,
  now: Date,
  /** Nodes whose agent is not reporting -> since when (ISO time of the last renewal). */
  notReporting: ReadonlyMap<string, string> = new Map(),
  /** The engine's warnings() for this policy, in rule order. */
  warnings: readonly RuleWarning[] = [],
): NpmRuleSetStatus {
  const generation = rs.metadata.generation ?? 1;
  const ns = rs.metadata.namespace ?? '';
  const name = rs.metadata.name;
  const uid = rs.metadata.uid;
  const problems = rs.spec.problems ?? [];
  let conds = setCondition(
    rs.status?.conditions?.slice(),
    problems.length
      ? { type: 'Accepted', status: 'False', observedGeneration: generation, reason: REASON.InvalidPolicy, message: `enforced fail-closed (invalid parts allow nothing): ${problems.join('; ')}` }
      : { type: 'Accepted', status: 'True', observedGeneration: generation, reason: REASON.Translated, message: rs.spec.summary },
    now,
  );
  const done: string[] = [];
  const lagging: string[] = [];
  const failing: string[] = [];
  const silent: string[] = [];
  const perNode: { node: string; generation?: number; error?: string }[] = [];
  for (const node of concernedNodes) {
    const st = nodes.get(node)?.status;
    // The uid as well: a policy deleted and re-created under its name starts again at generation 1,
    // and a node still enforcing the old object must not vouch for the new one. A report without a
    // uid (an agent older than this field) vouches for nothing: Pending until it is upgraded.
    const applied = st?.applied?.find((a) => a.namespace === ns && a.name === name && (uid === undefined || a.uid === uid));
    const entry: { node: string; generation?: number; error?: string } = { node };
    if (applied) entry.generation = applied.generation;
    if (st?.lastError) entry.error = st.lastError;
    perNode.push(entry);
    if (notReporting.has(node)) silent.push(node);
    else if (applied && applied.generation >= generation) done.push(node);
    else if (st?.lastError) failing.push(node);
    else lagging.push(node);
  }
  let programmed: Omit<Condition, 'lastTransitionTime'>;
  if (!concernedNodes.length) {
    programmed = { type: 'Programmed', status: 'True', observedGeneration: generation, reason: REASON.NoSelectedPods, message: 'no running pod is selected: nothing to program yet' };
  } else if (done.length === concernedNodes.length) {
    programmed = { type: 'Programmed', status: 'True', observedGeneration: generation, reason: REASON.Programmed, message: `programmed on ${done.length}/${concernedNodes.length} nodes` };
  } else {
    const parts = [];
    if (silent.length) parts.push(silent.map((n) => `the agent on node ${n} is not reporting (last seen ${notReporting.get(n)})`).join('; '));
    if (failing.length) parts.push(`failing on ${failing.join(', ')} (${failing.map((n) => nodes.get(n)?.status?.lastError).join('; ')})`);
    if (lagging.length) parts.push(`waiting for ${lagging.join(', ')}`);
    programmed = {
      type: 'Programmed',
      status: 'False',
      observedGeneration: generation,
      reason: silent.length ? REASON.AgentNotReporting : failing.length ? REASON.NodeError : REASON.Pending,
      message: `${done.length}/${concernedNodes.length} nodes at generation ${generation}: ${parts.join('; ')}`,
    };
  }
  conds = setCondition(conds, programmed, now);
  conds = setCondition(conds, resolved(warnings, generation), now);
  return {
    observedGeneration: generation,
    conditions: conds,
    // The status is written as a merge patch, where an absent key leaves the stored list in place:
    // null removes it (once; sameStatus reads null as absent).
    ...(warnings.length ? { warnings: warnings.map((w) => ({ rule: w.rule, reason: w.reason, message: w.message })) } : rs.status?.warnings ? { warnings: null } : {}),
    setCount: rs.spec.ipsets.length,
    ruleCount: rs.spec.chains.reduce((a, c) => a + c.rules.length, 0),
    nodesProgrammed: `${done.length}/${concernedNodes.length}`,
    nodes: perNode,
  };
}

function resolved(warnings: readonly RuleWarning[], generation: number): Omit<Condition, 'lastTransitionTime'> {
  if (!warnings.length) {
    return { type: 'Resolved', status: 'True', observedGeneration: generation, reason: REASON.Resolved, message: 'every peer selects a pod and every named port is declared' };
  }
  const reasons = new Set(warnings.map((w) => w.reason));
  const listed = warnings.slice(0, MAX_LISTED).map((w) => `${w.rule}: ${w.message}`);
  if (warnings.length > MAX_LISTED) listed.push(`and ${warnings.length - MAX_LISTED} more (status.warnings)`);
  return {
    type: 'Resolved',
    status: 'False',
    observedGeneration: generation,
    reason: reasons.size === 1 ? warnings[0]!.reason : REASON.SeveralWarnings,
    message: `${warnings.length > 1 ? `${warnings.length} parts of the policy allow` : '1 part of the policy allows'} nothing right now: ${listed.join('; ')}`,
  };
}

/**
 * Whether a status write would change anything (lastTransitionTime moves only on flips). Compared
 * structurally: the API server returns custom objects with sorted keys, so comparing serialisations
 * would see a change in every status we built in another key order, and write it again.
 */
export function sameStatus(a: NpmRuleSetStatus | undefined, b: NpmRuleSetStatus): boolean {
  return sameJson(withoutNull(a ?? {}), withoutNull(b));
}

/** warnings: null (remove the list, in a merge patch) is no list. */
function withoutNull(s: NpmRuleSetStatus): NpmRuleSetStatus {
  if (s.warnings !== null) return s;
  const { warnings: _w, ...rest } = s;
  return rest;
}

/**
 * Equality of two JSON values as the API server stores them: object key order is ignored, list
 * order is not, and a key holding `undefined` is the same as an absent key (JSON drops it).
 */
export function sameJson(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a)) {
    const bb = b as unknown[];
    return a.length === bb.length && a.every((x, i) => sameJson(x, bb[i]));
  }
  const ao = a as Record<string, unknown>;
  const bo = b as Record<string, unknown>;
  const ak = Object.keys(ao).filter((k) => ao[k] !== undefined);
  const bk = Object.keys(bo).filter((k) => bo[k] !== undefined);
  return ak.length === bk.length && ak.every((k) => Object.hasOwn(bo, k) && sameJson(ao[k], bo[k]));
}
