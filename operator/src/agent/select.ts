/**
 * What one node programs: only the rulesets that guard at least one of its own pods (ingress is
 * enforced at the destination's node, egress at the source's — both are the guarded pod's node),
 * and only the sets those reference. Azure NPM programs every set of the cluster on every node;
 * here a node's kernel state follows its local pods, not the cluster's size. Pure.
 *
 * Make-before-break across watch streams: NpmRuleSets and NpmIPSets arrive on separate watches, so
 * a new version of a ruleset can be seen before a set it now references. Programming it then would
 * treat the set as empty (for a target set: unguarding pods). Such a ruleset is held back at the
 * version last applied until all its sets are complete (every shard seen).
 */
import type { AppliedRuleSet, NpmIPSet, NpmRuleSet } from '../api/types.js';

export interface Selection {
  /** Rulesets and set shards to program (input of buildDesired). */
  objects: (NpmRuleSet | NpmIPSet)[];
  applied: AppliedRuleSet[];
  /** "ns/name: why" for rulesets kept at an older version or not yet programmed. */
  heldBack: string[];
}

function key(rs: NpmRuleSet): string {
  return `${rs.metadata.namespace}/${rs.metadata.name}`;
}

export function selectLocal(
  rulesets: readonly NpmRuleSet[],
  ipsets: readonly NpmIPSet[],
  localIPs: ReadonlySet<string>,
  lastApplied: ReadonlyMap<string, NpmRuleSet>,
): Selection {
  const shards = new Map<string, NpmIPSet[]>();
  for (const s of ipsets) {
    const list = shards.get(s.spec.setName) ?? [];
    list.push(s);
    shards.set(s.spec.setName, list);
  }
  const complete = (set: string): boolean => {
    const list = shards.get(set);
    if (!list?.length) return false;
    const want = list[0]!.spec.shardCount;
    return list.length >= want && new Set(list.filter((s) => s.spec.shardCount === want).map((s) => s.spec.shard)).size === want;
  };
  const guardsLocal = (rs: NpmRuleSet): boolean =>
    rs.spec.chains.some((c) => (shards.get(c.targetSet) ?? []).some((s) => s.spec.members.some((m) => localIPs.has(m))));
  const ready = (rs: NpmRuleSet): string | undefined => {
    const missing = rs.spec.ipsets.filter((r) => r.kind !== 'IPBlock' && !complete(r.name)).map((r) => r.name);
    return missing.length ? `waiting for set${missing.length > 1 ? 's' : ''} ${missing.join(', ')}` : undefined;
  };

  const chosen: NpmRuleSet[] = [];
  const heldBack: string[] = [];
  for (const rs of [...rulesets].sort((a, b) => key(a).localeCompare(key(b)))) {
    const why = ready(rs);
    if (!why) {
      if (guardsLocal(rs)) chosen.push(rs);
      continue;
    }
    const prev = lastApplied.get(key(rs));
    if (prev && !ready(prev)) {
      chosen.push(prev);
      heldBack.push(`${key(rs)}: kept at generation ${prev.metadata.generation ?? '?'}, ${why}`);
    } else heldBack.push(`${key(rs)}: not programmed yet, ${why}`);
  }
  const used = new Set(chosen.flatMap((rs) => rs.spec.ipsets.map((r) => r.name)));
  const sets = ipsets.filter((s) => used.has(s.spec.setName));
  return {
    objects: [...sets, ...chosen],
    applied: chosen.map((rs) => ({ namespace: rs.metadata.namespace ?? '', name: rs.metadata.name, generation: rs.metadata.generation ?? 0, ...(rs.metadata.uid ? { uid: rs.metadata.uid } : {}) })),
    heldBack,
  };
}
