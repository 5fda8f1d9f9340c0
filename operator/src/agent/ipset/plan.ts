/**
 * ipset plan: desired sets vs actual sets -> restore input for phase 1 (before iptables) and
 * phase 3 (after iptables stopped referencing what goes away). Pure.
 *
 * Phase 1, in this order, in ONE `ipset restore`:
 *   1. create + fill sets that do not exist yet (iptables does not reference them yet);
 *   2. rebuild sets whose header must change but can be swapped (maxelem too small, an option
 *      that changes semantics such as `timeout`, `netmask`, `forceadd`) under tempSetName(live):
 *      destroy a leftover temp, create, fill, `swap`, destroy the temp;
 *   3. member additions of every existing set (`add -exist`, a " nomatch" flag change included);
 *   4. member removals (`del -exist`).
 * `ipset restore` applies lines in order and stops at the first failing one, so a half-applied
 * restore leaves every set between old∩new and old∪new: additions-first means a guarded pod stays
 * isolated and a peer is never dropped before its replacement is in. A peer that leaves the
 * desired state may stay allowed until the removal lines run (the next retry); that is the price
 * of never over-denying mid-update. iptables (phase 2) is not written when phase 1 fails.
 * Phase 3 destroys owned sets no longer desired (including leftover temp sets).
 *
 * A set whose TYPE or FAMILY differs cannot be fixed here: the kernel refuses to `swap` two sets of
 * different types or families ("their type does not match") and to `rename` or `destroy` a set a
 * rule references. Such sets are listed in `unswappable` and get no line at all (a plan never holds
 * a line the kernel is known to refuse); the converger replaces them make-before-break through an
 * intermediate desired state (plan.ts viaTempNames, ADR 0005).
 */
import { tempSetName } from '../../api/names.js';
import type { SetType } from '../../api/types.js';
import type { ActualSet, ActualSets } from './parse.js';
import { compareMembers, createLine, deltaOf, isSorted, requiredMaxelem } from './render.js';

export interface DesiredSet {
  name: string;
  type: SetType;
  /** What the set holds, in words (metrics label, logs). */
  meaning: string;
  /**
   * Member in kernel print form by memberKey, in a stable (sorted) order. Read-only once built: the
   * converger keeps this very Map as its model of the kernel (plan.ts, appliedState).
   */
  members: ReadonlyMap<string, string>;
}

export interface IpsetPlan {
  /** Phase 1 restore lines. */
  apply: string[];
  /** Phase 3 restore lines. */
  destroy: string[];
  created: string[];
  rebuilt: string[];
  /** Sets whose kernel type or family differs from the desired one: no line written (see above). */
  unswappable: string[];
  added: number;
  removed: number;
}

/**
 * Header options that do not change what a set matches or keeps (per-element counters, comments,
 * skb info): a set of ours carrying them is left alone. Any other option (`timeout` makes members
 * expire, `netmask` widens every member, `forceadd` evicts members when full, or anything unknown)
 * makes the set different: it is rebuilt.
 */
const HARMLESS_OPTIONS = new Set(['counters', 'comment', 'skbinfo']);

export function semanticOptions(a: ActualSet): string[] {
  return a.options.filter((o) => !HARMLESS_OPTIONS.has(o));
}

/** Whether the kernel can `swap` a set of the desired type into `a`'s place (same type and family). */
export function swappable(a: ActualSet, type: SetType): boolean {
  return a.type === type && a.family === 'inet';
}

/** Whether `a` can stay as it is for a desired set of `type` holding `members` members (members aside). */
export function headerOk(a: ActualSet, type: SetType, members: number): boolean {
  return swappable(a, type) && a.maxelem >= requiredMaxelem(members) && semanticOptions(a).length === 0;
}

function byName(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * Whether two member Maps hold the same entries in the same order, walked in lockstep: no hashing,
 * which is what makes an unchanged set cheap when the desired state was rebuilt from scratch (its
 * Maps are new, but in the same sorted order as the ones last applied). False on the first
 * difference (order included): the caller then diffs by key.
 */
function sameInOrder(d: ReadonlyMap<string, string>, a: ReadonlyMap<string, string>): boolean {
  if (d.size !== a.size) return false;
  const ak = a.keys();
  const av = a.values();
  for (const [k, m] of d) {
    if (ak.next().value !== k || av.next().value !== m) return false;
  }
  return true;
}

/**
 * Diff of two Maps both keyed in compareMembers order (markSorted): a merge walk, `===` while the
 * two agree, compareMembers only where they differ. Lines as the keyed diff writes them: additions
 * (and flag changes) in desired order, removals in ascending key order.
 */
function mergeDiff(name: string, d: ReadonlyMap<string, string>, a: ReadonlyMap<string, string>, adds: string[], dels: string[]): { added: number; removed: number } {
  const di = d.entries();
  const ai = a.entries();
  let dn = di.next();
  let an = ai.next();
  const gone: string[] = [];
  let added = 0;
  while (!dn.done || !an.done) {
    const c = dn.done ? 1 : an.done ? -1 : dn.value[0] === an.value[0] ? 0 : compareMembers(dn.value[0], an.value[0]);
    if (c === 0) {
      const [, m] = dn.value as [string, string];
      if (m !== (an.value as [string, string])[1]) {
        adds.push(`add -exist ${name} ${m}`);
        added++;
      }
      dn = di.next();
      an = ai.next();
    } else if (c < 0) {
      adds.push(`add -exist ${name} ${(dn.value as [string, string])[1]}`);
      added++;
      dn = di.next();
    } else {
      gone.push((an.value as [string, string])[0]);
      an = ai.next();
    }
  }
  gone.sort(byName);
  for (const k of gone) dels.push(`del -exist ${name} ${k}`);
  return { added, removed: gone.length };
}

/**
 * Cost: O(sets) when nothing changed and the desired member Maps are the ones last applied (same
 * object: skipped without looking inside); an equal set rebuilt in the same order costs one string
 * comparison per member (sameInOrder); a set that differs is diffed by a merge walk when both
 * Maps are known sorted (compareMembers only at the differences), else by key (one Map lookup per
 * desired member); nothing is sorted except the removed keys. tempSetName (a hash)
 * is computed only for sets that are rebuilt.
 */
export function planIpsets(desired: ReadonlyMap<string, DesiredSet>, actual: ActualSets): IpsetPlan {
  const builds: string[] = [];
  const adds: string[] = [];
  const dels: string[] = [];
  const plan: IpsetPlan = { apply: [], destroy: [], created: [], rebuilt: [], unswappable: [], added: 0, removed: 0 };
  /** Temp sets destroyed in phase 1 already (a leftover of a set rebuilt now). */
  const tempsDestroyed = new Set<string>();
  for (const name of [...desired.keys()].sort(byName)) {
    const d = desired.get(name) as DesiredSet;
    const a = actual.get(name);
    const need = requiredMaxelem(d.members.size);
    if (!a) {
      plan.created.push(name);
      builds.push(createLine(name, d.type, d.members.size));
      for (const m of d.members.values()) builds.push(`add ${name} ${m}`);
      plan.added += d.members.size;
    } else if (!swappable(a, d.type)) {
      plan.unswappable.push(name);
    } else if (a.maxelem < need || semanticOptions(a).length > 0) {
      const tmp = tempSetName(name);
      plan.rebuilt.push(name);
      if (actual.has(tmp)) {
        builds.push(`destroy ${tmp}`);
        tempsDestroyed.add(tmp);
      }
      builds.push(createLine(tmp, d.type, d.members.size));
      for (const m of d.members.values()) builds.push(`add ${tmp} ${m}`);
      builds.push(`swap ${tmp} ${name}`, `destroy ${tmp}`);
      plan.added += d.members.size;
    } else if (a.members !== d.members) {
      const delta = deltaOf(d.members);
      if (delta && delta.base === a.members) {
        for (const m of delta.adds) adds.push(`add -exist ${name} ${m}`);
        for (const k of delta.dels) dels.push(`del -exist ${name} ${k}`);
        plan.added += delta.adds.length;
        plan.removed += delta.dels.length;
        continue;
      }
      if (sameInOrder(d.members, a.members)) continue;
      if (isSorted(d.members) && isSorted(a.members)) {
        const r = mergeDiff(name, d.members, a.members, adds, dels);
        plan.added += r.added;
        plan.removed += r.removed;
        continue;
      }
      // Additions (a " nomatch" flag change included), counting the desired keys the set holds.
      let held = 0;
      for (const [k, m] of d.members) {
        const have = a.members.get(k);
        if (have !== undefined) held++;
        if (have !== m) {
          adds.push(`add -exist ${name} ${m}`);
          plan.added++;
        }
      }
      // Removals exist only when the set holds keys beyond the desired ones held.
      if (a.members.size > held) {
        const gone: string[] = [];
        for (const k of a.members.keys()) if (!d.members.has(k)) gone.push(k);
        gone.sort(byName);
        for (const k of gone) dels.push(`del -exist ${name} ${k}`);
        plan.removed += gone.length;
      }
    }
  }
  plan.apply = builds.concat(adds, dels);
  for (const name of [...actual.keys()].sort(byName)) {
    if (!desired.has(name) && !tempsDestroyed.has(name)) plan.destroy.push(`destroy ${name}`);
  }
  return plan;
}
