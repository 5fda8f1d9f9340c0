/**
 * Node scoping of our objects (docs/adr/0011-node-scoped-watches.md): every NpmRuleSet carries the
 * label nodeLabelKey(n) (value "") for each node n that must program it (its concerned nodes: nodes
 * hosting a pod in one of its chains' target sets), and every shard of an NpmIPSet carries the
 * labels of the union of the concerned nodes of the rulesets that reference the set. Agents watch
 * only objects labelled for their node.
 *
 * SetUsers indexes which rulesets reference (and target) which sets, so that a pod event costs
 * O(rulesets using the sets it changed), not O(all rulesets). Pure.
 */
import { NODE_LABEL_PREFIX, nodeLabelKey } from '../api/names.js';
import type { NpmIPSet, NpmRuleSet } from '../api/types.js';
import { addTo, removeFrom } from '../translate/multimap.js';

/** `obj` with exactly the node labels of `nodes` (other labels kept). */
export function withNodeLabels<T extends NpmRuleSet | NpmIPSet>(obj: T, nodes: Iterable<string>): T {
  const labels: Record<string, string> = {};
  for (const [k, v] of Object.entries(obj.metadata.labels ?? {})) if (!k.startsWith(NODE_LABEL_PREFIX)) labels[k] = v;
  for (const n of nodes) labels[nodeLabelKey(n)] = '';
  return { ...obj, metadata: { ...obj.metadata, labels } };
}

/** The node label keys an object carries. */
export function nodeLabels(obj: { metadata: { labels?: Record<string, string> } } | undefined): Set<string> {
  return new Set(Object.keys(obj?.metadata.labels ?? {}).filter((k) => k.startsWith(NODE_LABEL_PREFIX)));
}

/** set kernel name -> rulesets ("ns/name") referencing it, and those targeting it (chain.targetSet). */
export class SetUsers {
  private readonly users = new Map<string, Set<string>>();
  private readonly targeting = new Map<string, Set<string>>();
  private readonly byRuleSet = new Map<string, { sets: string[]; targets: string[] }>();

  /** Record a ruleset as the engine now wants it (undefined: gone). */
  update(key: string, rs: NpmRuleSet | undefined): void {
    const before = this.byRuleSet.get(key);
    if (before) {
      for (const s of before.sets) removeFrom(this.users, s, key);
      for (const s of before.targets) removeFrom(this.targeting, s, key);
      this.byRuleSet.delete(key);
    }
    if (!rs) return;
    const sets = rs.spec.ipsets.filter((r) => r.kind !== 'IPBlock').map((r) => r.name);
    const targets = [...new Set(rs.spec.chains.map((c) => c.targetSet))];
    this.byRuleSet.set(key, { sets, targets });
    for (const s of sets) addTo(this.users, s, key);
    for (const s of targets) addTo(this.targeting, s, key);
  }

  usersOf(set: string): Iterable<string> {
    return this.users.get(set) ?? [];
  }
  targetingOf(set: string): Iterable<string> {
    return this.targeting.get(set) ?? [];
  }
}
