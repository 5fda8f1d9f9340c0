/**
 * Label selectors: validation, a canonical form (the identity of a set), matching and words.
 *
 * Semantics are those of metav1.LabelSelector: matchLabels and matchExpressions are ANDed; an
 * empty selector selects everything; `NotIn` matches objects without the key (Azure NPM got the
 * multi-value case wrong, #4662: every value must be absent, not any one); `DoesNotExist` matches
 * objects without the key.
 */
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
  /**
   * Canonical text, hashed into the set's kernel name: equal selectors (however written) give
   * equal text, and different selectors different text. It is the JSON of the sorted requirements,
   * so no value can imitate a separator (`{a: "b,c=d"}` and `{a: b, c: d}` once shared a set).
   * "[]" selects everything.
   */
  key: string;
}

export interface FieldError {
  field: string;
  message: string;
}

const OPS: readonly string[] = ['In', 'NotIn', 'Exists', 'DoesNotExist'];

// The API server's label rules (k8s.io/apimachinery/pkg/util/validation): a key is a qualified
// name, [prefix/]name, the prefix a DNS-1123 subdomain of at most 253 characters, the name at most
// 63 alphanumerics, '-', '_' or '.', starting and ending alphanumeric; a value is empty or like a name.
const QUALIFIED_NAME = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** Why the API server would reject this label key, or undefined when it is valid. */
export function labelKeyError(key: string): string | undefined {
  const slash = key.indexOf('/');
  const prefix = slash < 0 ? undefined : key.slice(0, slash);
  const name = slash < 0 ? key : key.slice(slash + 1);
  if (prefix !== undefined && (prefix.length === 0 || prefix.length > 253 || !DNS1123_SUBDOMAIN.test(prefix))) {
    return `${JSON.stringify(key)} is not a valid label key: the prefix must be a DNS-1123 subdomain (lower case alphanumerics, '-', '.'; at most 253 characters)`;
  }
  if (name.length === 0 || name.length > 63 || !QUALIFIED_NAME.test(name)) {
    return `${JSON.stringify(key)} is not a valid label key: the name must be 1-63 alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric`;
  }
  return undefined;
}

/** Why the API server would reject this label value, or undefined when it is valid. */
export function labelValueError(value: string): string | undefined {
  if (value === '') return undefined;
  if (value.length > 63 || !QUALIFIED_NAME.test(value)) {
    return `${JSON.stringify(value)} is not a valid label value: at most 63 alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric`;
  }
  return undefined;
}

/** Validates a label map (metadata.labels) as the API server does. */
export function checkLabels(labels: unknown, field: string, errors: FieldError[]): void {
  if (labels === undefined || labels === null) return;
  if (!isPlainObject(labels)) {
    errors.push({ field, message: 'must be a map of label keys to string values' });
    return;
  }
  // Runs for every pod: no allocation unless there is an error.
  for (const k of Object.keys(labels)) {
    const v = labels[k];
    const err = typeof v !== 'string' ? 'value must be a string' : (labelKeyError(k) ?? labelValueError(v));
    if (err) errors.push({ field: `${field}.${k}`, message: err });
  }
}

function isPlainObject(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

function describeType(x: unknown): string {
  return Array.isArray(x) ? 'a list' : x === null ? 'null' : typeof x === 'object' ? 'an object' : `a ${typeof x} (${JSON.stringify(x)})`;
}

/**
 * Validates and canonicalises a selector; `field` is its path for error messages. Any shape the
 * API server would refuse is reported (never a TypeError): a selector that is not an object,
 * matchLabels that is not a map, matchExpressions that is not a list, values that are not a list
 * of strings, keys and values that break the label rules. Absent (undefined or null) selects all.
 */
export function compileSelector(sel: unknown, field: string, errors: FieldError[]): Selector {
  const reqs: Requirement[] = [];
  const before = errors.length;
  if (sel !== undefined && sel !== null && !isPlainObject(sel)) {
    errors.push({ field, message: `must be a label selector (an object with matchLabels and/or matchExpressions), not ${describeType(sel)}` });
    return { reqs: [], key: canonicalKey([]) };
  }
  const s = (sel ?? {}) as Record<string, unknown>;
  const labels = s.matchLabels;
  if (labels !== undefined && labels !== null && !isPlainObject(labels)) {
    errors.push({ field: `${field}.matchLabels`, message: `must be a map of label keys to values, not ${describeType(labels)}` });
  } else {
    for (const [key, value] of Object.entries(labels ?? {})) {
      const f = `${field}.matchLabels.${key}`;
      if (typeof value !== 'string') {
        errors.push({ field: f, message: 'value must be a string' });
        continue;
      }
      const err = labelKeyError(key) ?? labelValueError(value);
      if (err) {
        errors.push({ field: f, message: err });
        continue;
      }
      reqs.push({ key, op: 'In', values: [value] });
    }
  }
  const exprs = s.matchExpressions;
  if (exprs !== undefined && exprs !== null && !Array.isArray(exprs)) {
    errors.push({ field: `${field}.matchExpressions`, message: `must be a list of requirements, not ${describeType(exprs)}` });
  } else {
    ((exprs ?? []) as unknown[]).forEach((raw, i) => {
      const f = `${field}.matchExpressions[${i}]`;
      if (!isPlainObject(raw)) {
        errors.push({ field: f, message: `must be an object with key, operator and values, not ${describeType(raw)}` });
        return;
      }
      const e = raw;
      if (typeof e.key !== 'string' || e.key === '') {
        errors.push({ field: `${f}.key`, message: 'key is required' });
        return;
      }
      const keyErr = labelKeyError(e.key);
      if (keyErr) {
        errors.push({ field: `${f}.key`, message: keyErr });
        return;
      }
      if (typeof e.operator !== 'string' || !OPS.includes(e.operator)) {
        errors.push({ field: `${f}.operator`, message: `${JSON.stringify(e.operator) ?? 'undefined'} is not one of In, NotIn, Exists, DoesNotExist` });
        return;
      }
      const op = e.operator as Op;
      if (e.values !== undefined && e.values !== null && !Array.isArray(e.values)) {
        errors.push({ field: `${f}.values`, message: `must be a list of strings, not ${describeType(e.values)}` });
        return;
      }
      const values = (e.values ?? []) as unknown[];
      const bad = values.findIndex((v) => typeof v !== 'string' || labelValueError(v) !== undefined);
      if (bad >= 0) {
        const v = values[bad];
        errors.push({ field: `${f}.values[${bad}]`, message: typeof v === 'string' ? labelValueError(v)! : `must be a string, not ${describeType(v)}` });
        return;
      }
      if ((op === 'In' || op === 'NotIn') && values.length === 0) {
        errors.push({ field: `${f}.values`, message: `must be non-empty for operator ${op}` });
        return;
      }
      if ((op === 'Exists' || op === 'DoesNotExist') && values.length > 0) {
        errors.push({ field: `${f}.values`, message: `must be empty for operator ${op}` });
        return;
      }
      reqs.push({ key: e.key, op, values: values as string[] });
    });
  }
  if (errors.length > before) return { reqs: [], key: canonicalKey([]) };
  return canonicalize(reqs);
}

/**
 * The canonical selector of a list of requirements (already validated): values sorted and unique,
 * requirements unique and sorted, and the key that names it. Injective: two selectors that differ
 * as sets of (key, operator, set of values) get different keys, whatever characters they hold.
 */
export function canonicalize(reqs: readonly Requirement[]): Selector {
  const unique = new Map<string, Requirement>();
  for (const r of reqs) {
    const norm = { key: r.key, op: r.op, values: [...new Set(r.values)].sort() };
    unique.set(requirementKey(norm), norm);
  }
  const sorted = [...unique.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return { reqs: sorted.map(([, r]) => r), key: canonicalKey(sorted.map(([k]) => k)) };
}

/** One requirement as JSON: [key, operator, ...values]. JSON strings escape every separator. */
function requirementKey(r: Requirement): string {
  return JSON.stringify([r.key, r.op, ...r.values]);
}

function canonicalKey(sortedRequirementKeys: string[]): string {
  return `[${sortedRequirementKeys.join(',')}]`;
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
 * The requirement under which a selector is indexed: a selector with a positive requirement (In)
 * can only match objects carrying one of its (key, value) pairs (the In with the fewest values is
 * chosen); with only an Exists, objects carrying the key. Selectors with neither must be checked
 * for every object (undefined).
 */
export function indexRequirement(sel: Selector): { key: string; values?: readonly string[] } | undefined {
  let best: Requirement | undefined;
  for (const r of sel.reqs) {
    if (r.op === 'In') {
      if (!best || best.op !== 'In' || r.values.length < best.values.length) best = r;
    } else if (r.op === 'Exists' && !best) best = r;
  }
  if (!best) return undefined;
  return best.op === 'In' ? { key: best.key, values: best.values } : { key: best.key };
}
