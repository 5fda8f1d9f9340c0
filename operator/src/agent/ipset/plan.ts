/**
 * ipset plan: desired sets vs actual sets -> restore input for phase 1 (before iptables) and
 * phase 3 (after iptables stopped referencing what goes away). Pure.
 *
 * Phase 1, in this order, in ONE `ipset restore`:
 *   1. create + fill sets that do not exist yet (iptables does not reference them yet);
 *   2. rebuild sets whose header must change (type, family, maxelem too small) under
 *      tempSetName(live): destroy a leftover temp, create, fill, `swap`, destroy the temp;
 *   3. member additions of every existing set (`add -exist`, a " nomatch" flag change included);
 *   4. member removals (`del -exist`).
 * `ipset restore` applies lines in order and stops at the first failing one, so a half-applied
 * restore leaves every set between old∩new and old∪new: additions-first means a guarded pod stays
 * isolated and a peer is never dropped before its replacement is in. A peer that leaves the
 * desired state may stay allowed until the removal lines run (the next retry); that is the price
 * of never over-denying mid-update. iptables (phase 2) is not written when phase 1 fails.
 * Phase 3 destroys owned sets no longer desired (including leftover temp sets).
 */
import { tempSetName } from '../../api/names.js';
import type { SetType } from '../../api/types.js';
import type { ActualSets } from './parse.js';
import { createLine, requiredMaxelem } from './render.js';

export interface DesiredSet {
  name: string;
  type: SetType;
  /** What the set holds, in words (metrics label, logs). */
  meaning: string;
  /** Member in kernel print form by memberKey, in a stable (sorted) order. */
  members: Map<string, string>;
}

export interface IpsetPlan {
  /** Phase 1 restore lines. */
  apply: string[];
  /** Phase 3 restore lines. */
  destroy: string[];
  created: string[];
  rebuilt: string[];
  added: number;
  removed: number;
}

function byName(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

export function planIpsets(desired: ReadonlyMap<string, DesiredSet>, actual: ActualSets): IpsetPlan {
  const builds: string[] = [];
  const adds: string[] = [];
  const dels: string[] = [];
  const plan: IpsetPlan = { apply: [], destroy: [], created: [], rebuilt: [], added: 0, removed: 0 };
  const desiredNames = [...desired.keys()].sort(byName);
  const temps = new Set(desiredNames.map((n) => tempSetName(n) as string));
  for (const name of desiredNames) {
    const d = desired.get(name) as DesiredSet;
    const a = actual.get(name);
    const need = requiredMaxelem(d.members.size);
    if (!a) {
      plan.created.push(name);
      builds.push(createLine(name, d.type, d.members.size));
      for (const m of d.members.values()) builds.push(`add ${name} ${m}`);
      plan.added += d.members.size;
    } else if (a.type !== d.type || a.family !== 'inet' || a.maxelem < need) {
      const tmp = tempSetName(name);
      plan.rebuilt.push(name);
      if (actual.has(tmp)) builds.push(`destroy ${tmp}`);
      builds.push(createLine(tmp, d.type, d.members.size));
      for (const m of d.members.values()) builds.push(`add ${tmp} ${m}`);
      builds.push(`swap ${tmp} ${name}`, `destroy ${tmp}`);
      plan.added += d.members.size;
    } else {
      for (const [k, m] of d.members) {
        if (a.members.get(k) !== m) {
          adds.push(`add -exist ${name} ${m}`);
          plan.added++;
        }
      }
      for (const k of [...a.members.keys()].sort(byName)) {
        if (!d.members.has(k)) {
          dels.push(`del -exist ${name} ${k}`);
          plan.removed++;
        }
      }
    }
  }
  plan.apply = [...builds, ...adds, ...dels];
  for (const name of [...actual.keys()].sort(byName)) {
    // A temp we are about to rebuild is destroyed in phase 1 already.
    if (!desired.has(name) && !(temps.has(name) && builds.includes(`destroy ${name}`))) plan.destroy.push(`destroy ${name}`);
  }
  return plan;
}
