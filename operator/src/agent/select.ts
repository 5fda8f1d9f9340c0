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
 * Cost (issue #10): what a ruleset needs (its key, the sets it needs complete, its applied entry)
 * is memoized per ruleset object, and whether a shard holds a local address per shard object for
 * one content of the local addresses; the objects must not be mutated (the informers replace them).
 */
import type { AppliedRuleSet, NpmIPSet, NpmRuleSet } from '../api/types.js';

export interface Selection {
  /** Rulesets and set shards to program (input of buildDesired). */
  objects: (NpmRuleSet | NpmIPSet)[];
  /** The same array as the previous call's (same lastApplied Map) when its entries are unchanged. Read-only. */
  applied: AppliedRuleSet[];
  /** "ns/name: why" for rulesets kept at an older version or not yet programmed. */
  heldBack: string[];
}

/** What String.prototype.localeCompare uses without arguments, created once. */
const COLLATOR = new Intl.Collator();

function key(rs: NpmRuleSet): string {
  return `${rs.metadata.namespace}/${rs.metadata.name}`;
}

/** Per set name: are all its shards present (same shardCount, every shard index once)? Answers are memoized per call. */
export function shardCompleteness(ipsets: readonly NpmIPSet[]): (set: string) => boolean {
  const shards = new Map<string, NpmIPSet[]>();
  for (const s of ipsets) {
    const list = shards.get(s.spec.setName);
    if (list) list.push(s);
    else shards.set(s.spec.setName, [s]);
  }
  const known = new Map<string, boolean>();
  return (set: string): boolean => {
    let ok = known.get(set);
    if (ok !== undefined) return ok;
    const list = shards.get(set);
    if (!list?.length) ok = false;
    else {
      const want = list[0]!.spec.shardCount;
      ok = list.length >= want && new Set(list.filter((s) => s.spec.shardCount === want).map((s) => s.spec.shard)).size === want;
    }
    known.set(set, ok);
    return ok;
  };
}

/** Whether a set a ruleset uses has its members: IPBlock sets carry them inline. */
function hasMembers(rs: NpmRuleSet, set: string, complete: (set: string) => boolean): boolean {
  return rs.spec.ipsets.some((r) => r.name === set && r.kind === 'IPBlock') || complete(set);
}

/**
 * What a ruleset needs complete, from that object alone, memoized by identity (the informer keeps
 * an unchanged object as the same JS object): its key, the target sets and the peer/named-port sets
 * of its chains that are not IPBlock sets of its own, and its applied entry.
 */
interface Needs {
  key: string;
  targets: readonly string[];
  ruleSets: readonly string[];
  applied: AppliedRuleSet;
}

const NEEDS = new WeakMap<NpmRuleSet, Needs>();

function needsOf(rs: NpmRuleSet): Needs {
  let n = NEEDS.get(rs);
  if (n) return n;
  const inline = new Set(rs.spec.ipsets.filter((r) => r.kind === 'IPBlock').map((r) => r.name));
  const targets = new Set<string>();
  const ruleSets = new Set<string>();
  for (const c of rs.spec.chains) {
    if (!inline.has(c.targetSet)) targets.add(c.targetSet);
    for (const r of c.rules) for (const x of [r.match.peerSet, r.match.namedPortSet]) if (x !== undefined && !inline.has(x)) ruleSets.add(x);
  }
  const m = rs.metadata;
  n = { key: key(rs), targets: [...targets], ruleSets: [...ruleSets], applied: { namespace: m.namespace ?? '', name: m.name, generation: m.generation ?? 0, ...(m.uid ? { uid: m.uid } : {}) } };
  NEEDS.set(rs, n);
  return n;
}

/** Target sets of the ruleset's chains whose members are not all known. */
export function incompleteTargets(rs: NpmRuleSet, complete: (set: string) => boolean): string[] {
  // Nearly always none: found without allocating.
  if (needsOf(rs).targets.every(complete)) return [];
  return [...new Set(rs.spec.chains.map((c) => c.targetSet))].filter((t) => !hasMembers(rs, t, complete));
}

/**
 * The ruleset without the allow rules whose peer or named-port set is incomplete (fail closed), and
 * words for what was left out. The same object when nothing is (the daemon's caches compare by identity).
 */
export function withoutIncompleteRules(rs: NpmRuleSet, complete: (set: string) => boolean): { ruleset: NpmRuleSet; dropped: string[] } {
  const dropped: string[] = [];
  const usable = (set: string | undefined): boolean => set === undefined || hasMembers(rs, set, complete);
  // Nearly always every rule is usable: the same object, found without allocating.
  if (needsOf(rs).ruleSets.every(complete)) return { ruleset: rs, dropped };
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

/**
 * Whether a shard holds a local address, memoized per shard object for one content of the local
 * addresses: `local` is the Set object that stands for that content (localToken).
 */
const HOLDS_LOCAL = new WeakMap<NpmIPSet, { local: ReadonlySet<string>; holds: boolean }>();

/** The local addresses each caller (known by its lastApplied Map) passed last time. */
const LAST_LOCAL = new WeakMap<object, ReadonlySet<string>>();

/**
 * The Set standing for the content of `localIPs`: the caller's previous one when equal (a sync
 * without a local pod change reuses every shard's answer), else `localIPs` itself.
 */
function localToken(caller: object, localIPs: ReadonlySet<string>): ReadonlySet<string> {
  const prev = LAST_LOCAL.get(caller);
  if (prev && prev.size === localIPs.size) {
    let same = true;
    for (const ip of localIPs) if (!prev.has(ip)) {
      same = false;
      break;
    }
    if (same) return prev;
  }
  LAST_LOCAL.set(caller, localIPs);
  return localIPs;
}

/** Each caller's rulesets as last given and sorted (a sync without a ruleset change sorts nothing). */
const LAST_ORDER = new WeakMap<object, { input: readonly NpmRuleSet[]; sorted: readonly NpmRuleSet[] }>();

/** The rulesets in the order localeCompare gives their keys (the default collator), each key built once. */
function sortedByKey(caller: object, rulesets: readonly NpmRuleSet[]): readonly NpmRuleSet[] {
  const last = LAST_ORDER.get(caller);
  if (last && last.input.length === rulesets.length && last.input.every((rs, i) => rs === rulesets[i])) return last.sorted;
  const keyed = rulesets.map((rs) => ({ rs, k: needsOf(rs).key }));
  keyed.sort((a, b) => COLLATOR.compare(a.k, b.k));
  const sorted = keyed.map((x) => x.rs);
  LAST_ORDER.set(caller, { input: [...rulesets], sorted });
  return sorted;
}

/** Each caller's last applied list. */
const LAST_APPLIED = new WeakMap<object, readonly AppliedRuleSet[]>();

/**
 * The caller's previous applied list when `now` holds the same entries (memoized per ruleset
 * object, so an unchanged ruleset gives the same entry): a caller can tell "unchanged" by identity.
 */
function sameApplied(caller: object, now: AppliedRuleSet[]): AppliedRuleSet[] {
  const last = LAST_APPLIED.get(caller);
  if (last && last.length === now.length && last.every((a, i) => a === now[i])) return last as AppliedRuleSet[];
  LAST_APPLIED.set(caller, now);
  return now;
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
  const local = localToken(lastApplied, localIPs);
  const holdsLocal = (s: NpmIPSet): boolean => {
    const memo = HOLDS_LOCAL.get(s);
    if (memo?.local === local) return memo.holds;
    const holds = s.spec.members.some((m) => localIPs.has(m));
    HOLDS_LOCAL.set(s, { local, holds });
    return holds;
  };
  const guardsLocal = (rs: NpmRuleSet): boolean => rs.spec.chains.some((c) => (shards.get(c.targetSet) ?? []).some(holdsLocal));

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
  for (const rs of sortedByKey(lastApplied, rulesets)) {
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
  const used = new Set<string>();
  for (const rs of chosen) for (const r of rs.spec.ipsets) used.add(r.name);
  const sets = ipsets.filter((s) => used.has(s.spec.setName));
  return {
    objects: [...sets, ...chosen],
    applied: sameApplied(lastApplied, chosen.filter((rs) => !partial.has(rs)).map((rs) => needsOf(rs).applied)),
    heldBack,
  };
}
