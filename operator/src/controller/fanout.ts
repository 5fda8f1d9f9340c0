/**
 * Which rulesets' status an NpmNode change can move (issue #10: not every policy on every report).
 *
 * A ruleset's status reads, of one node's NpmNode, only its `applied` entry for that ruleset and the
 * node's `lastError` (status.ts), and only for the nodes the ruleset concerns. So an NpmNode update
 * concerns:
 *  - the rulesets whose applied entry (generation, uid) changed, appeared or went;
 *  - when lastError or the node's readiness changed, or the node appeared or went: every ruleset the
 *    node concerns (its message names the node's error or its absence).
 * A ruleset that newly concerns a node is recomputed by the pod event that made it so.
 *
 * "The rulesets a node concerns" come from NodeIndex: what each ruleset's status last recorded in
 * status.nodes (the concerned nodes of the last computation), kept up to date from the ruleset cache.
 * Pure.
 */
import type { NpmNode, NpmRuleSet } from '../api/types.js';

const ready = (n: NpmNode | undefined): string | undefined => n?.status?.conditions?.find((c) => c.type === 'Ready')?.status;

function appliedOf(n: NpmNode | undefined): Map<string, string> {
  return new Map((n?.status?.applied ?? []).map((a) => [`${a.namespace}/${a.name}`, `${a.uid ?? ''}@${a.generation}`]));
}

/** Ruleset keys ("ns/name") whose status may change with this NpmNode change (`old`/`cur` undefined: added/deleted). */
export function rulesetsMovedByNode(old: NpmNode | undefined, cur: NpmNode | undefined, concerning: Iterable<string>): Set<string> {
  const out = new Set<string>();
  const before = appliedOf(old);
  const after = appliedOf(cur);
  for (const [k, v] of after) if (before.get(k) !== v) out.add(k);
  for (const k of before.keys()) if (!after.has(k)) out.add(k);
  const wholeNode = !old || !cur || (old.status?.lastError ?? '') !== (cur.status?.lastError ?? '') || ready(old) !== ready(cur);
  if (wholeNode) for (const k of concerning) out.add(k);
  return out;
}

/** node -> rulesets ("ns/name") whose last status lists the node (status.nodes). */
export class NodeIndex {
  private readonly byNode = new Map<string, Set<string>>();
  private readonly byRuleSet = new Map<string, string[]>();

  /** Record a ruleset as the cache now holds it (undefined: deleted). */
  update(key: string, rs: NpmRuleSet | undefined): void {
    for (const n of this.byRuleSet.get(key) ?? []) {
      const s = this.byNode.get(n);
      s?.delete(key);
      if (s && !s.size) this.byNode.delete(n);
    }
    this.byRuleSet.delete(key);
    const nodes = rs?.status?.nodes?.map((e) => e.node) ?? [];
    if (!nodes.length) return;
    this.byRuleSet.set(key, nodes);
    for (const n of nodes) {
      let s = this.byNode.get(n);
      if (!s) this.byNode.set(n, (s = new Set()));
      s.add(key);
    }
  }

  concerning(node: string): Iterable<string> {
    return this.byNode.get(node) ?? [];
  }
}
