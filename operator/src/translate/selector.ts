/**
 * Label selectors: validation, a canonical form (the identity of a set), matching and words.
 *
 * Semantics are those of metav1.LabelSelector: matchLabels and matchExpressions are ANDed; an
 * empty selector selects everything; `NotIn` matches objects without the key (Azure NPM got the
 * multi-value case wrong, #4662: every value must be absent, not any one); `DoesNotExist` matches
 * objects without the key.
 */
import type { LabelSelector } from './k8s.js';

export type Op = 'In' | 'NotIn' | 'Exists' | 'DoesNotExist';

export interface Requirement {
  key: string;
  op: Op;
  /** Sorted, unique. Empty for Exists / DoesNotExist. */
  values: string[];
}

export interface Selector {
  /** Sorted by key, then operator, then values; duplicates removed. */
  reqs: Requirement[];
  /** Canonical text: equal selectors (however written) give equal text. "" selects everything. */
  key: string;
}

export interface FieldError {
  field: string;
  message: string;
}

const OPS: readonly string[] = ['In', 'NotIn', 'Exists', 'DoesNotExist'];

/** Validates and canonicalises a selector; `field` is its path for error messages. */
export function compileSelector(sel: LabelSelector | undefined, field: string, errors: FieldError[]): Selector {
  const reqs: Requirement[] = [];
  for (const [key, value] of Object.entries(sel?.matchLabels ?? {})) {
    if (typeof value !== 'string') {
      errors.push({ field: `${field}.matchLabels.${key}`, message: 'value must be a string' });
      continue;
    }
    reqs.push({ key, op: 'In', values: [value] });
  }
  (sel?.matchExpressions ?? []).forEach((e, i) => {
    const f = `${field}.matchExpressions[${i}]`;
    if (!e || typeof e.key !== 'string' || e.key === '') {
      errors.push({ field: `${f}.key`, message: 'key is required' });
      return;
    }
    if (!OPS.includes(e.operator)) {
      errors.push({ field: `${f}.operator`, message: `"${String(e.operator)}" is not one of In, NotIn, Exists, DoesNotExist` });
      return;
    }
    const op = e.operator as Op;
    const values = e.values ?? [];
    if ((op === 'In' || op === 'NotIn') && values.length === 0) {
      errors.push({ field: `${f}.values`, message: `must be non-empty for operator ${op}` });
      return;
    }
    if ((op === 'Exists' || op === 'DoesNotExist') && values.length > 0) {
      errors.push({ field: `${f}.values`, message: `must be empty for operator ${op}` });
      return;
    }
    reqs.push({ key: e.key, op, values: [...new Set(values.map(String))].sort() });
  });
  const unique = new Map<string, Requirement>();
  for (const r of reqs) unique.set(requirementText(r), r);
  const sorted = [...unique.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return { reqs: sorted.map(([, r]) => r), key: sorted.map(([t]) => t).join(',') };
}

function requirementText(r: Requirement): string {
  switch (r.op) {
    case 'In':
      return r.values.length === 1 ? `${r.key}=${r.values[0]}` : `${r.key} in (${r.values.join(',')})`;
    case 'NotIn':
      return r.values.length === 1 ? `${r.key}!=${r.values[0]}` : `${r.key} notin (${r.values.join(',')})`;
    case 'Exists':
      return r.key;
    case 'DoesNotExist':
      return `!${r.key}`;
  }
}

export function matches(sel: Selector, labels: Readonly<Record<string, string>> | undefined): boolean {
  for (const r of sel.reqs) {
    const v = labels?.[r.key];
    switch (r.op) {
      case 'In':
        if (v === undefined || !r.values.includes(v)) return false;
        break;
      case 'NotIn':
        if (v !== undefined && r.values.includes(v)) return false;
        break;
      case 'Exists':
        if (v === undefined) return false;
        break;
      case 'DoesNotExist':
        if (v !== undefined) return false;
        break;
    }
  }
  return true;
}

export function isEmpty(sel: Selector): boolean {
  return sel.reqs.length === 0;
}

/** "app=web, tier notin (a,b)". */
export function describeSelector(sel: Selector): string {
  return sel.reqs.map(requirementText).join(', ');
}

/**
 * Index keys under which a selector can be found from a label set: a selector with a positive
 * requirement (In) can only match objects carrying one of its (key, value) pairs; with only an
 * Exists, objects carrying the key. Selectors with neither must be checked for every object.
 */
export function indexKeys(sel: Selector): string[] | undefined {
  let best: string[] | undefined;
  for (const r of sel.reqs) {
    if (r.op === 'In') {
      const keys = r.values.map((v) => `${r.key}=${v}`);
      if (!best || keys.length < best.length || best[0]?.indexOf('=') === -1) best = keys;
    } else if (r.op === 'Exists' && !best) {
      best = [r.key];
    }
  }
  return best;
}

/** The index keys an object with these labels can be found under (see indexKeys). */
export function labelKeys(labels: Readonly<Record<string, string>> | undefined): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(labels ?? {})) out.push(`${k}=${v}`, k);
  return out;
}
