/**
 * What one node programs: only the rulesets that guard at least one of its own pods (ingress is
 * enforced at the destination's node, egress at the source's — both are the guarded pod's node),
 * and only the sets those reference. Azure NPM programs every set of the cluster on every node;
 * here a node's kernel state follows its local pods, not the cluster's size. Pure.
 *
 * Make-before-break across watch streams: NpmRuleSets and NpmIPSets arrive on separate watches, so
 * a new version of a ruleset can be seen before a set it now references. Programming it then would
 * treat the set as empty. Fail closed, by the role of the set:
 *  - a target set (whose pods a chain isolates) incomplete: the ruleset is held back at the version
 *    last applied until it is complete (every shard seen): an empty target set would guard nobody;
 *  - a peer or named-port set incomplete: only the allow rules that use it are left out (an allow
 *    dropped can only deny more); the chains still isolate their pods. Such a ruleset is not
 *    reported as applied (its status must not say Programmed) until the rule is in.
 * `agent --once` applies the same rules to a file (once.ts).
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

/** Per set name: are all its shards present (same shardCount, every shard index once)? */
export function shardCompleteness(ipsets: readonly NpmIPSet[]): (set: string) => boolean {
  const shards = new Map<string, NpmIPSet[]>();
  for (const s of ipsets) {
    const list = shards.get(s.spec.setName) ?? [];
    list.push(s);
    shards.set(s.spec.setName, list);
  }
  return (set: string): boolean => {
    const list = shards.get(set);
    if (!list?.length) return false;
    const want = list[0]!.spec.shardCount;
    return list.length >= want && new Set(list.filter((s) => s.spec.shardCount === want).map((s) => s.spec.shard)).size === want;
  };
}

/** Whether a set a ruleset uses has its members: IPBlock sets carry them inline. */
function hasMembers(rs: NpmRuleSet, set: string, complete: (set: string) => boolean): boolean {
  return rs.spec.ipsets.some((r) => r.name === set && r.kind === 'IPBlock') || complete(set);
}

/** Target sets of the ruleset's chains whose members are not all known. */
export function incompleteTargets(rs: NpmRuleSet, complete: (set: string) => boolean): string[] {
  return [...new Set(rs.spec.chains.map((c) => c.targetSet))].filter((t) => !hasMembers(rs, t, complete));
}

/**
 * The ruleset without the allow rules whose peer or named-port set is incomplete (fail closed), and
 * words for what was left out. The same object when nothing is (the daemon's caches compare by identity).
 */
export function withoutIncompleteRules(rs: NpmRuleSet, complete: (set: string) => boolean): { ruleset: NpmRuleSet; dropped: string[] } {
  const dropped: string[] = [];
  const usable = (set: string | undefined): boolean => set === undefined || hasMembers(rs, set, complete);
  const chains = rs.spec.chains.map((c) => {
    const rules = c.rules.filter((r) => usable(r.match.peerSet) && usable(r.match.namedPortSet));
    if (rules.length === c.rules.length) return c;
    for (const r of c.rules) {
      if (rules.includes(r)) continue;
      const sets = [r.match.peerSet, r.match.namedPortSet].filter((x): x is string => x !== undefined && !usable(x));
      dropped.push(`chain ${c.name} "${r.description}" (set ${sets.join(', ')} incomplete)`);
    }
    return { ...c, rules };
  });
  if (!dropped.length) return { ruleset: rs, dropped };
  const used = new Set(chains.flatMap((c) => [c.targetSet, ...c.rules.flatMap((r) => [r.match.peerSet, r.match.namedPortSet])]));
  return { ruleset: { ...rs, spec: { ...rs.spec, chains, ipsets: rs.spec.ipsets.filter((r) => used.has(r.name)) } }, dropped };
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
  const complete = shardCompleteness(ipsets);
  const guardsLocal = (rs: NpmRuleSet): boolean =>
    rs.spec.chains.some((c) => (shards.get(c.targetSet) ?? []).some((s) => s.spec.members.some((m) => localIPs.has(m))));

  const chosen: NpmRuleSet[] = [];
  /** Programmed without some allow rules: not reported as applied. */
  const partial = new Set<NpmRuleSet>();
  const heldBack: string[] = [];
  const choose = (rs: NpmRuleSet, what: string): void => {
    const t = withoutIncompleteRules(rs, complete);
    chosen.push(t.ruleset);
    if (t.dropped.length) {
      partial.add(t.ruleset);
      heldBack.push(`${key(rs)}: ${what} without ${t.dropped.length} allow rule(s) until their sets are complete (fail closed): ${t.dropped.join('; ')}`);
    }
  };
  for (const rs of [...rulesets].sort((a, b) => key(a).localeCompare(key(b)))) {
    const missing = incompleteTargets(rs, complete);
    if (!missing.length) {
      if (guardsLocal(rs)) choose(rs, `generation ${rs.metadata.generation ?? '?'} programmed`);
      continue;
    }
    const why = `waiting for target set${missing.length > 1 ? 's' : ''} ${missing.join(', ')}`;
    const prev = lastApplied.get(key(rs));
    if (prev && !incompleteTargets(prev, complete).length) {
      choose(prev, `generation ${prev.metadata.generation ?? '?'} kept`);
      heldBack.push(`${key(rs)}: kept at generation ${prev.metadata.generation ?? '?'}, ${why}`);
    } else heldBack.push(`${key(rs)}: not programmed yet, ${why}`);
  }
  const used = new Set(chosen.flatMap((rs) => rs.spec.ipsets.map((r) => r.name)));
  const sets = ipsets.filter((s) => used.has(s.spec.setName));
  return {
    objects: [...sets, ...chosen],
    applied: chosen.filter((rs) => !partial.has(rs)).map((rs) => ({ namespace: rs.metadata.namespace ?? '', name: rs.metadata.name, generation: rs.metadata.generation ?? 0, ...(rs.metadata.uid ? { uid: rs.metadata.uid } : {}) })),
    heldBack,
  };
}
