/**
 * iptables plan: desired chains vs actual chains -> ONE `iptables-restore --noflush` transaction
 * that writes only what differs. Pure.
 *
 *  - A chain that is new or differs in any way (flushed, reordered, a rule changed, a foreign rule
 *    inserted) is declared (`:C - [0:0]`, which creates or flushes it inside the transaction) and
 *    rewritten whole: the commit is atomic, so the old rules hold until the new ones replace them.
 *  - An owned chain no longer wanted is declared (flushed) and deleted (`-X`) after the chains that
 *    jumped to it were rewritten, in the same transaction.
 *  - The FORWARD hook must be rule 1, exactly once: otherwise every copy is removed by its spec
 *    (never by number: another writer may have shifted the numbers) and one is inserted at 1.
 *  - Nothing differs -> no restore at all.
 */
import type { ActualChains, HookState } from './parse.js';
import { HOOK_RULE } from './render.js';

export interface DesiredChains {
  /** Chain name -> rule specs, in the order they are declared (base chains first). */
  chains: ReadonlyMap<string, readonly string[]>;
  /** Whether the FORWARD hook should exist (false only when cleaning up). */
  hook: boolean;
}

export interface IptablesPlan {
  /** Restore input lines (`*filter` ... `COMMIT`), empty when there is nothing to write. */
  lines: string[];
  changed: string[];
  deleted: string[];
  hookFixed: boolean;
}

function sameRules(a: readonly string[], b: readonly string[] | undefined): boolean {
  return b !== undefined && a.length === b.length && a.every((r, i) => r === b[i]);
}

export function hookOk(hook: HookState): boolean {
  return hook.copies.length === 1 && hook.first === HOOK_RULE;
}

export function planIptables(desired: DesiredChains, actual: ActualChains): IptablesPlan {
  const changed = [...desired.chains.keys()].filter((c) => !sameRules(desired.chains.get(c) ?? [], actual.chains.get(c)));
  const deleted = [...actual.chains.keys()].filter((c) => !desired.chains.has(c)).sort();
  const hookFixed = desired.hook ? !hookOk(actual.hook) : actual.hook.copies.length > 0;
  if (changed.length === 0 && deleted.length === 0 && !hookFixed) return { lines: [], changed, deleted, hookFixed };
  const lines = ['*filter'];
  for (const c of [...changed, ...deleted]) lines.push(`:${c} - [0:0]`);
  if (hookFixed) for (const copy of actual.hook.copies) lines.push(`-D FORWARD ${copy}`);
  for (const c of changed) for (const r of desired.chains.get(c) ?? []) lines.push(`-A ${c} ${r}`);
  if (hookFixed && desired.hook) lines.push(`-I FORWARD 1 ${HOOK_RULE}`);
  for (const c of deleted) lines.push(`-X ${c}`);
  lines.push('COMMIT');
  return { lines, changed, deleted, hookFixed };
}
