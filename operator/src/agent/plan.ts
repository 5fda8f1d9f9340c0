/**
 * The whole plan of one sync, pure: (desired, actual) -> the three restore inputs, in the order
 * they must run, plus what drifted when the actual state is compared with what we last wrote.
 *   phase 1 `ipset restore`:          creates, rebuilds (temp + swap), member additions, removals
 *   phase 2 `iptables-restore --noflush`: changed chains rewritten whole (direction chains patched
 *                                      pair by pair), stale chains removed, hook
 *   phase 3 `ipset restore`:          destroy sets nothing references any more
 */
import { HOOK_RULE } from './iptables/render.js';
import { hookOk, planIptables, sameChain, type IptablesPlan } from './iptables/plan.js';
import type { ActualChains } from './iptables/parse.js';
import type { ActualSet, ActualSets } from './ipset/parse.js';
import { headerOk, planIpsets, semanticOptions, swappable, type DesiredSet, type IpsetPlan } from './ipset/plan.js';
import { tempSetName } from '../api/names.js';
import { requiredMaxelem } from './ipset/render.js';
import type { DesiredState } from './model.js';

export interface ActualState {
  sets: ActualSets;
  iptables: ActualChains;
}

export interface Plan {
  ipset: IpsetPlan;
  iptables: IptablesPlan;
}

export function planSync(desired: DesiredState, actual: ActualState): Plan {
  return {
    ipset: planIpsets(desired.sets, actual.sets),
    iptables: planIptables({ chains: desired.chains, hook: desired.hook }, actual.iptables),
  };
}

/**
 * Desired sets whose kernel namesake has another type or family: `swap` cannot replace them (the
 * kernel refuses it between types), nor can `rename` or `destroy` while a rule references them.
 */
export function unswappableSets(desired: DesiredState, actual: ActualState): string[] {
  const out: string[] = [];
  for (const [name, d] of desired.sets) {
    const a = actual.sets.get(name);
    if (a !== undefined && !swappable(a, d.type)) out.push(name);
  }
  return out.sort();
}

const MATCH_SET = / --match-set (\S+)/g;

/**
 * `desired` with each set in `names` renamed to its tempSetName, in the sets and in every rule that
 * matches on it: the intermediate state of a make-before-break replacement (ADR 0005). Converging
 * to it creates and fills the temp set (phase 1), switches every rule to it in the one iptables
 * transaction (phase 2) and destroys the set it replaces, no longer desired (phase 3); converging
 * to `desired` afterwards does the same back to the real name. Protection holds at every instant:
 * the rules always match on a set that holds the desired members. Chains without such a rule keep
 * their rule arrays (identity), members are shared. Pure.
 */
export function viaTempNames(desired: DesiredState, names: readonly string[]): DesiredState {
  const rename = new Map(names.map((n) => [n, tempSetName(n) as string]));
  const sets = new Map<string, DesiredSet>();
  for (const [name, d] of desired.sets) {
    const to = rename.get(name);
    if (to === undefined) sets.set(name, d);
    else sets.set(to, { ...d, name: to });
  }
  const chains = new Map<string, readonly string[]>();
  for (const [c, rules] of desired.chains) {
    const hit = rules.some((r) => r.includes(' --match-set ') && [...r.matchAll(MATCH_SET)].some((m) => rename.has(m[1] as string)));
    chains.set(c, hit ? rules.map((r) => r.replace(MATCH_SET, (all, set: string) => (rename.has(set) ? ` --match-set ${rename.get(set)}` : all))) : rules);
  }
  return { ...desired, sets, chains };
}

export function planIsEmpty(p: Plan): boolean {
  return p.ipset.apply.length === 0 && p.ipset.destroy.length === 0 && p.iptables.lines.length === 0;
}

/** The restore inputs as text (what a dry run shows). */
export function planText(p: Plan): string {
  const parts: string[] = [];
  if (p.ipset.apply.length) parts.push(`# phase 1: ipset restore\n${p.ipset.apply.join('\n')}`);
  if (p.iptables.lines.length) parts.push(`# phase 2: iptables-restore --noflush\n${p.iptables.lines.join('\n')}`);
  if (p.ipset.destroy.length) parts.push(`# phase 3: ipset restore\n${p.ipset.destroy.join('\n')}`);
  return parts.join('\n');
}

/**
 * What the kernel holds after `plan` was applied successfully on top of `before`.
 *
 * Ownership: the result SHARES the desired state's member Maps and rule arrays (and reuses
 * `before`'s set entries that did not change) instead of copying them: O(sets + chains), not
 * O(members). Its outer Maps are fresh (a caller may add or remove entries), but no member Map or
 * rule array reachable from it may ever be mutated: they belong to the DesiredState (model.ts),
 * which is immutable once built. The next plan then finds an unchanged set by identity.
 */
export function appliedState(desired: DesiredState, before: ActualState): ActualState {
  const sets: ActualSets = new Map();
  for (const d of desired.sets.values()) {
    const a = before.sets.get(d.name);
    const need = requiredMaxelem(d.members.size);
    const kept = a !== undefined && headerOk(a, d.type, d.members.size);
    if (kept && a.members === d.members) {
      sets.set(d.name, a);
      continue;
    }
    const s: ActualSet = { name: d.name, type: d.type, family: 'inet', hashsize: a?.hashsize ?? 0, maxelem: kept ? a.maxelem : need, options: kept ? a.options : [], members: d.members };
    sets.set(d.name, s);
  }
  const chains = new Map(desired.chains);
  const hook = desired.hook ? { copies: [HOOK_RULE], first: HOOK_RULE } : { copies: [], first: before.iptables.hook.first === HOOK_RULE ? '' : before.iptables.hook.first };
  return { sets, iptables: { chains, hook } };
}

export type DriftKind =
  | 'chain_missing'
  | 'chain_flushed'
  | 'chain_reordered'
  | 'chain_foreign_rule'
  | 'chain_modified'
  | 'chain_extra'
  | 'hook'
  | 'set_missing'
  | 'set_header'
  | 'set_members_missing'
  | 'set_members_extra'
  | 'set_extra';

export interface Drift {
  kind: DriftKind;
  name: string;
  detail: string;
}

function multiset(xs: readonly string[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const x of xs) m.set(x, (m.get(x) ?? 0) + 1);
  return m;
}

/**
 * How the kernel differs from what we last wrote (`expected`): each item is one repair. Chains
 * compare as the planner compares them (iptables/plan.ts sameChain): direction-chain pairs in
 * another order are not drift.
 */
export function detectDrift(expected: ActualState, kernel: ActualState): Drift[] {
  const out: Drift[] = [];
  for (const [c, want] of expected.iptables.chains) {
    const got = kernel.iptables.chains.get(c);
    if (!got) out.push({ kind: 'chain_missing', name: c, detail: 'chain deleted' });
    else if (got.length === 0 && want.length > 0) out.push({ kind: 'chain_flushed', name: c, detail: `chain flushed (${want.length} rules expected)` });
    else if (!sameChain(c, want, got)) {
      const w = multiset(want);
      const foreign = got.filter((r) => {
        const n = w.get(r) ?? 0;
        if (n === 0) return true;
        w.set(r, n - 1);
        return false;
      });
      const missing = [...w.values()].reduce((a, b) => a + b, 0);
      if (foreign.length === 0 && missing === 0) out.push({ kind: 'chain_reordered', name: c, detail: 'rules reordered' });
      else if (foreign.length > 0 && missing === 0) out.push({ kind: 'chain_foreign_rule', name: c, detail: `foreign rule(s): ${foreign.slice(0, 3).join(' | ')}` });
      else out.push({ kind: 'chain_modified', name: c, detail: `${missing} rule(s) missing, ${foreign.length} unexpected` });
    }
  }
  for (const c of kernel.iptables.chains.keys()) {
    if (!expected.iptables.chains.has(c)) out.push({ kind: 'chain_extra', name: c, detail: 'owned chain we did not write' });
  }
  const wantHook = expected.iptables.hook.copies.length > 0;
  if (wantHook && !hookOk(kernel.iptables.hook)) {
    const h = kernel.iptables.hook;
    out.push({ kind: 'hook', name: 'FORWARD', detail: h.copies.length === 0 ? 'hook missing' : h.copies.length > 1 ? `${h.copies.length} hook copies` : 'hook not rule 1 or altered' });
  }
  for (const [name, want] of expected.sets) {
    const got = kernel.sets.get(name);
    // The same entry (an iptables-only re-read trusts the sets): nothing to compare.
    if (got === want) continue;
    if (!got) {
      out.push({ kind: 'set_missing', name, detail: 'set destroyed' });
      continue;
    }
    if (got.type !== want.type || got.family !== want.family || got.maxelem < want.maxelem || semanticOptions(got).length > 0) {
      out.push({ kind: 'set_header', name, detail: `header ${got.type} ${got.family} maxelem ${got.maxelem}${got.options.length ? ` ${got.options.join(' ')}` : ''}` });
      continue;
    }
    let missing = 0;
    let extra = 0;
    for (const [k, m] of want.members) if (got.members.get(k) !== m) missing++;
    for (const k of got.members.keys()) if (!want.members.has(k)) extra++;
    if (missing) out.push({ kind: 'set_members_missing', name, detail: `${missing} member(s) missing or altered` });
    if (extra) out.push({ kind: 'set_members_extra', name, detail: `${extra} unexpected member(s)` });
  }
  for (const name of kernel.sets.keys()) {
    if (!expected.sets.has(name)) out.push({ kind: 'set_extra', name, detail: 'owned set we did not write' });
  }
  return out;
}
