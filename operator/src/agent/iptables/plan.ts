/**
 * iptables plan: desired chains vs actual chains -> ONE `iptables-restore --noflush` transaction
 * that writes only what differs. Pure.
 *
 *  - A chain that is new or differs in any way (flushed, reordered, a rule changed, a foreign rule
 *    inserted) is declared (`:C - [0:0]`, which creates or flushes it inside the transaction) and
 *    rewritten whole: the commit is atomic, so the old rules hold until the new ones replace them.
 *  - Direction chains (render.ts PAIR_CHAINS) are (jump, check) pairs in any order, then a fixed
 *    tail (the DROP). They are equal when they hold the same pairs, each jump immediately followed
 *    by its own check, and the same tail. When the kernel's chain has that shape and only the set
 *    of pairs differs, it is patched in place: `-D C <jump>` + `-D C <check>` per pair that goes
 *    away (by spec: every rule of such a chain is distinct), then `-I C 1 <jump>` + `-I C 2 <check>`
 *    per pair that comes (the new pairs end up first, in desired order), the tail untouched: adding
 *    or removing one policy costs O(1) lines, in the same transaction as its own chain. Any other
 *    difference (shape broken, tail changed) rewrites the chain whole.
 *  - An owned chain no longer wanted is declared (flushed) and deleted (`-X`) after the chains that
 *    jumped to it were rewritten or patched, in the same transaction.
 *  - The FORWARD hook must be rule 1, exactly once: otherwise every copy is removed by its spec
 *    (never by number: another writer may have shifted the numbers) and one is inserted at 1.
 *  - Nothing differs -> no restore at all.
 */
import type { ActualChains, HookState } from './parse.js';
import { HOOK_RULE, PAIR_CHAINS } from './render.js';

export interface DesiredChains {
  /** Chain name -> rule specs, in the order they are declared (base chains first). */
  chains: ReadonlyMap<string, readonly string[]>;
  /** Whether the FORWARD hook should exist (false only when cleaning up). */
  hook: boolean;
}

export interface IptablesPlan {
  /** Restore input lines (`*filter` ... `COMMIT`), empty when there is nothing to write. */
  lines: string[];
  /** Chains rewritten whole. */
  changed: string[];
  /** Direction chains patched in place (pairs deleted / inserted). */
  patched: string[];
  deleted: string[];
  hookFixed: boolean;
}

/**
 * A pair chain's shape: jump -> its check, and the tail; undefined unless `rules` is pairs + one
 * tail rule with no rule text repeated (then `-D <chain> <spec>` deletes exactly the rule meant).
 */
interface Pairs {
  pairs: Map<string, string>;
  tail: string;
}

function pairsOf(rules: readonly string[]): Pairs | undefined {
  if (rules.length % 2 !== 1) return undefined;
  const pairs = new Map<string, string>();
  const seen = new Set<string>();
  for (const r of rules) {
    if (seen.has(r)) return undefined;
    seen.add(r);
  }
  for (let i = 0; i + 1 < rules.length; i += 2) pairs.set(rules[i] as string, rules[i + 1] as string);
  return { pairs, tail: rules[rules.length - 1] as string };
}

function sameSequence(a: readonly string[], b: readonly string[]): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function samePairs(a: Pairs, b: Pairs): boolean {
  if (a.tail !== b.tail || a.pairs.size !== b.pairs.size) return false;
  for (const [j, c] of a.pairs) if (b.pairs.get(j) !== c) return false;
  return true;
}

/**
 * Whether the kernel's rules of `chain` (`actual`) equal the desired ones: the same sequence, or,
 * for a direction chain, the same pairs in any order and the same tail.
 */
export function sameChain(chain: string, desired: readonly string[], actual: readonly string[] | undefined): boolean {
  if (actual === undefined) return false;
  if (sameSequence(desired, actual)) return true;
  if (!PAIR_CHAINS.has(chain) || desired.length !== actual.length) return false;
  const d = pairsOf(desired);
  const a = pairsOf(actual);
  return d !== undefined && a !== undefined && samePairs(d, a);
}

export function hookOk(hook: HookState): boolean {
  return hook.copies.length === 1 && hook.first === HOOK_RULE;
}

/**
 * The in-place patch of a direction chain, or undefined when it must be rewritten whole: shape
 * broken, tail changed, or the patch would not be shorter than the rewrite (declaration + rules).
 * Deleting whole pairs of distinct rules from a pair sequence leaves a pair sequence with the tail
 * last; inserting pairs at the top keeps it one.
 */
function patchLines(chain: string, desired: readonly string[], actual: readonly string[]): { del: string[]; ins: string[] } | undefined {
  const d = pairsOf(desired);
  const a = pairsOf(actual);
  if (!d || !a || d.tail !== a.tail) return undefined;
  const del: string[] = [];
  for (const [j, c] of a.pairs) if (d.pairs.get(j) !== c) del.push(`-D ${chain} ${j}`, `-D ${chain} ${c}`);
  const come = [...d.pairs].filter(([j, c]) => a.pairs.get(j) !== c);
  const ins: string[] = [];
  // Inserted at the top, the last first: they end up in desired order before the pairs kept.
  for (let i = come.length - 1; i >= 0; i--) {
    const [j, c] = come[i] as [string, string];
    ins.push(`-I ${chain} 1 ${j}`, `-I ${chain} 2 ${c}`);
  }
  if (del.length + ins.length > desired.length) return undefined;
  return { del, ins };
}

export function planIptables(desired: DesiredChains, actual: ActualChains): IptablesPlan {
  const changed: string[] = [];
  const patched: string[] = [];
  const del: string[] = [];
  const ins: string[] = [];
  for (const [c, want] of desired.chains) {
    const got = actual.chains.get(c);
    if (sameChain(c, want, got)) continue;
    const patch = got !== undefined && PAIR_CHAINS.has(c) ? patchLines(c, want, got) : undefined;
    if (patch) {
      patched.push(c);
      del.push(...patch.del);
      ins.push(...patch.ins);
    } else changed.push(c);
  }
  const deleted = [...actual.chains.keys()].filter((c) => !desired.chains.has(c)).sort();
  const hookFixed = desired.hook ? !hookOk(actual.hook) : actual.hook.copies.length > 0;
  if (changed.length === 0 && patched.length === 0 && deleted.length === 0 && !hookFixed) return { lines: [], changed, patched, deleted, hookFixed };
  const lines = ['*filter'];
  for (const c of [...changed, ...deleted]) lines.push(`:${c} - [0:0]`);
  if (hookFixed) for (const copy of actual.hook.copies) lines.push(`-D FORWARD ${copy}`);
  lines.push(...del);
  for (const c of changed) for (const r of desired.chains.get(c) ?? []) lines.push(`-A ${c} ${r}`);
  lines.push(...ins);
  if (hookFixed && desired.hook) lines.push(`-I FORWARD 1 ${HOOK_RULE}`);
  for (const c of deleted) lines.push(`-X ${c}`);
  lines.push('COMMIT');
  return { lines, changed, patched, deleted, hookFixed };
}
