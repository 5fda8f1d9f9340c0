/**
 * Index maps from a key to a set of values (label -> pods, set -> rulesets), kept without empty
 * entries so that `has(k)` means "something is indexed under k". Pure.
 */
export function addTo<V>(m: Map<string, Set<V>>, k: string, v: V): void {
  let s = m.get(k);
  if (!s) m.set(k, (s = new Set()));
  s.add(v);
}

export function removeFrom<V>(m: Map<string, Set<V>>, k: string, v: V): void {
  const s = m.get(k);
  if (!s) return;
  s.delete(v);
  if (s.size === 0) m.delete(k);
}
