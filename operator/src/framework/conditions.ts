/**
 * metav1.Condition helpers (API conventions): a list keyed by `type`, `lastTransitionTime` moves
 * only when `status` flips, `observedGeneration` records which spec the condition describes.
 * Pure: the caller passes the time.
 */

export type ConditionStatus = 'True' | 'False' | 'Unknown';

export interface Condition {
  type: string;
  status: ConditionStatus;
  observedGeneration?: number;
  /** RFC 3339, seconds precision (metav1.Time). */
  lastTransitionTime: string;
  /** CamelCase, machine-readable; export the values as constants. */
  reason: string;
  message: string;
}

/** metav1.Time is serialised with seconds precision: 2026-11-26T02:43:00Z. */
export function metaTime(d: Date): string {
  return d.toISOString().replace(/\.\d+Z$/, 'Z');
}

/**
 * Return a new list with `c` set: an existing condition of the same type keeps its
 * lastTransitionTime unless the status changes. The result is sorted by type (stable output, so
 * an unchanged status patch is byte-identical). The input is not modified.
 */
export function setCondition(conds: Condition[] | undefined, c: Omit<Condition, 'lastTransitionTime'>, now: Date): Condition[] {
  const prev = conds?.find((x) => x.type === c.type);
  const next: Condition = {
    type: c.type,
    status: c.status,
    ...(c.observedGeneration !== undefined ? { observedGeneration: c.observedGeneration } : {}),
    lastTransitionTime: prev && prev.status === c.status ? prev.lastTransitionTime : metaTime(now),
    reason: c.reason,
    message: c.message,
  };
  const rest = (conds ?? []).filter((x) => x.type !== c.type);
  return [...rest, next].sort((a, b) => (a.type < b.type ? -1 : a.type > b.type ? 1 : 0));
}

export function getCondition(conds: Condition[] | undefined, type: string): Condition | undefined {
  return conds?.find((x) => x.type === type);
}

/** True when the condition exists with status True (and, if given, describes `generation`). */
export function isTrue(conds: Condition[] | undefined, type: string, generation?: number): boolean {
  const c = getCondition(conds, type);
  return c?.status === 'True' && (generation === undefined || c.observedGeneration === generation);
}

/** Remove a condition type; returns a new list. */
export function removeCondition(conds: Condition[] | undefined, type: string): Condition[] {
  return (conds ?? []).filter((x) => x.type !== type);
}

/** Same conditions ignoring order (to skip no-op status writes). */
export function conditionsEqual(a: Condition[] | undefined, b: Condition[] | undefined): boolean {
  const key = (l: Condition[] | undefined): string =>
    JSON.stringify(
      [...(l ?? [])]
        .sort((x, y) => (x.type < y.type ? -1 : x.type > y.type ? 1 : 0))
        .map((c) => [c.type, c.status, c.observedGeneration ?? null, c.lastTransitionTime, c.reason, c.message]),
    );
  return key(a) === key(b);
}
